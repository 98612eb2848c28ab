// The CUDA half of the op table (tests/ops/op_table.h): every case of every op on CUDA against the CPU, forward and
// backward (every input's gradient), in every dtype the case lists, large cases included; fresh memory is poisoned
// with NaN first, so an output or gradient a kernel leaves unwritten fails. One test per op:
// OpTable/Cuda.MatchesCpu/<op>; kernels without an autograd op (adamw, decode_gemv, grad_check, sampling, ssm_step):
// OpTable/CudaKernel.OwnChecks/<op>.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/ops/op_table.h"
#include "tests/test_util.h"

using namespace mt;
using namespace mt::test;

TEST(CudaOpTable, PoisonedFreshMemoryIsNaN) {
  MT_REQUIRE_CUDA();
  PoisonFreshMemory poison;
  for (DType dt : kAllFloat)
    for (double v : Tensor::empty({1031}, dt, Device::cuda()).to_vector()) ASSERT_TRUE(std::isnan(v)) << dtype_name(dt);
}

class Cuda : public ::testing::TestWithParam<std::string> {};

TEST_P(Cuda, MatchesCpu) {
  MT_REQUIRE_CUDA();
  PoisonFreshMemory poison;
  const OpEntry& e = op_entry(GetParam());
  for (const OpCase& c : e.cases(/*big=*/true))
    for (DType dt : c.dtypes) {
      const std::string what = e.name + " " + c.what + " " + dtype_name(dt);
      SCOPED_TRACE(what);
      const OpRun gpu = run_case(c, dt, Device::cuda());
      const OpRun cpu = run_case(c, dt, Device::cpu());
      expect_runs_match(gpu, cpu, c.tol ? c.tol(dt) : default_tol(dt), what);
    }
}

INSTANTIATE_TEST_SUITE_P(OpTable, Cuda,
                         ::testing::ValuesIn(op_names([](const OpEntry& e) { return !e.cases(false).empty(); })),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Kernels without an autograd op (the optimizer's, the decode kernels): their own CUDA-vs-CPU checks.
class CudaKernel : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaKernel, OwnChecks) {
  MT_REQUIRE_CUDA();
  PoisonFreshMemory poison;
  op_entry(GetParam()).cuda_check();
}

INSTANTIATE_TEST_SUITE_P(OpTable, CudaKernel,
                         ::testing::ValuesIn(op_names([](const OpEntry& e) { return bool(e.cuda_check); })),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
