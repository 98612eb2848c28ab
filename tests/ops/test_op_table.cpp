// The CPU half of the op table (tests/ops/op_table.h): that every op has an entry, a gradcheck in f64 of every case,
// and the CPU kernels in f32 / bf16 / f16 (f32 copies for the 16-bit types, autograd/ops/dispatch.h) against the
// f64 run on the same rounded inputs. One test per op: OpTable/Cpu.Gradcheck/<op>, OpTable/Cpu.DtypesMatchF64/<op>;
// kernels without an autograd op (adamw, decode_gemv, grad_check, sampling, ssm_step):
// OpTable/CpuKernel.OwnChecks/<op>.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>

#include "tests/ops/op_table.h"
#include "tests/test_util.h"

using namespace mt;
using namespace mt::test;

namespace {

// Stems of the headers in a source folder, less the ones named in `skip`.
std::set<std::string> header_stems(const std::string& dir, const std::set<std::string>& skip) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(source_path(dir))) {
    if (e.path().extension() != ".h") continue;
    const std::string stem = e.path().stem().string();
    if (!skip.count(stem)) out.insert(stem);
  }
  return out;
}

}  // namespace

// Every kernel (kernels/<op>.h) and every differentiable op (autograd/ops/<op>.h) has an entry, and every entry
// names one of them. Not ops: dispatch.h and op_util.h (the helpers every op uses).
TEST(OpTable, EveryKernelAndOpHasAnEntry) {
  const std::set<std::string> kernels = header_stems("kernels", {});
  const std::set<std::string> ops = header_stems("autograd/ops", {"dispatch", "op_util"});
  ASSERT_GE(kernels.size(), 10u) << "kernels/*.h not found under " << MT_SOURCE_DIR;
  std::set<std::string> names;
  for (const OpEntry& e : op_table()) {
    EXPECT_TRUE(names.insert(e.name).second) << "two entries named " << e.name;
    EXPECT_TRUE(kernels.count(e.name) || ops.count(e.name))
        << "entry " << e.name << " names neither kernels/" << e.name << ".h nor autograd/ops/" << e.name << ".h";
    const bool has_cases = !e.cases(false).empty();
    EXPECT_TRUE(has_cases || (e.cpu_check && e.cuda_check))
        << e.name << ": an entry without cases needs a CPU and a CUDA check of its own";
  }
  for (const std::string& k : kernels) EXPECT_TRUE(names.count(k)) << "kernels/" << k << ".h has no op table entry";
  for (const std::string& o : ops) EXPECT_TRUE(names.count(o)) << "autograd/ops/" << o << ".h has no op table entry";
  const std::vector<std::string> order = op_names([](const OpEntry&) { return true; });
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end())) << "keep the table in name order";
}

// Fresh memory is poisoned while asked (what lets the CUDA harness see an output a kernel does not write).
TEST(OpTable, PoisonedFreshMemoryIsNaN) {
  PoisonFreshMemory poison;
  for (DType dt : kAllFloat)
    for (double v : Tensor::empty({5}, dt).to_vector()) EXPECT_TRUE(std::isnan(v)) << dtype_name(dt);
}

class Cpu : public ::testing::TestWithParam<std::string> {};

TEST_P(Cpu, Gradcheck) {
  int checked = 0;
  for (const OpCase& c : op_entry(GetParam()).cases(false)) {
    if (!c.gradcheck) continue;
    SCOPED_TRACE(GetParam() + " " + c.what);
    // The defined inputs in f64 (integers unchanged); the op sees absent ones as undefined again.
    std::vector<Tensor> in;
    std::vector<int> slot;
    bool some_not_differentiated = false;
    for (const OpInput& i : c.inputs) {
      slot.push_back(i.value.defined() ? static_cast<int>(in.size()) : -1);
      if (!i.value.defined()) continue;
      Tensor t = is_floating(i.value.dtype()) ? i.value.to(DType::F64) : i.value;
      some_not_differentiated = some_not_differentiated || (is_floating(t.dtype()) && !i.grad);
      in.push_back(t);
    }
    if (some_not_differentiated)  // gradcheck checks only the marked inputs once any is marked
      for (size_t k = 0, j = 0; k < c.inputs.size(); ++k)
        if (c.inputs[k].value.defined()) {
          if (c.inputs[k].grad && is_floating(in[j].dtype())) set_requires_grad(in[j]);
          ++j;
        }
    const auto run = c.run;
    auto f = [run, slot](const std::vector<Tensor>& x) {
      std::vector<Tensor> all;
      for (int s : slot) all.push_back(s >= 0 ? x[s] : Tensor());
      return pack_all(run(all));
    };
    EXPECT_GRADCHECK(gradcheck(f, in, c.gc));
    ++checked;
  }
  EXPECT_GT(checked, 0) << "every op with cases gradchecks at least one";
}

TEST_P(Cpu, DtypesMatchF64) {
  PoisonFreshMemory poison;  // an output a CPU kernel does not write is NaN
  for (const OpCase& c : op_entry(GetParam()).cases(false)) {
    for (DType dt : c.dtypes) {
      if (dt == DType::F64) continue;
      const std::string what = GetParam() + " " + c.what + " " + dtype_name(dt);
      SCOPED_TRACE(what);
      const OpRun got = run_case(c, dt, Device::cpu());
      const OpRun ref = run_case(c, dt, Device::cpu(), /*f64_reference=*/true);
      expect_runs_match(got, ref, c.tol ? c.tol(dt) : default_tol(dt), what);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OpTable, Cpu,
                         ::testing::ValuesIn(op_names([](const OpEntry& e) { return !e.cases(false).empty(); })),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Kernels without an autograd op (the optimizer's, the decode kernels): their own checks.
class CpuKernel : public ::testing::TestWithParam<std::string> {};

TEST_P(CpuKernel, OwnChecks) { op_entry(GetParam()).cpu_check(); }

INSTANTIATE_TEST_SUITE_P(OpTable, CpuKernel,
                         ::testing::ValuesIn(op_names([](const OpEntry& e) { return bool(e.cpu_check); })),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
