// embedding on CUDA: a bad id is found on the device and named, and the deterministic backward equals the CPU's
// (CUDA vs the CPU otherwise: the op table).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/embedding.h"
#include "core/determinism.h"
#include "tests/test_util.h"

using namespace mt;

TEST(CudaEmbedding, BadIdIsADataErrorNamingIt) {
  MT_REQUIRE_CUDA();
  Tensor w = Tensor::zeros({10, 4}, DType::BF16, Device::cuda());
  Tensor ids = Tensor::from_vector_i64({1, 2, 3, 4, 5, 10}, {2, 3}, DType::I64, Device::cuda());
  try {
    embedding(w, ids);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("id 10"), std::string::npos) << m;
    EXPECT_NE(m.find("[1, 2]"), std::string::npos) << m;
    EXPECT_NE(m.find("[0, 10)"), std::string::npos) << m;
  }
}

// run.deterministic's backward (sorted, no atomics) sums each row in the CPU kernel's order from the CPU's
// accumulator: equal to the CPU bit for bit in every float dtype, for ids with many repeats, in both id dtypes.
TEST(CudaEmbedding, DeterministicBackwardEqualsTheCpuBitForBit) {
  MT_REQUIRE_CUDA();
  const int64_t V = 37, D = 80, n = 3000;
  std::vector<int64_t> idv(n);
  uint64_t x = 12345;
  for (int64_t i = 0; i < n; ++i) {  // skewed: id 0 takes about a third of the positions
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    idv[static_cast<size_t>(i)] =
        (x >> 33) % 3 == 0 ? 0 : static_cast<int64_t>((x >> 40) % (V - 2));  // V-1, V-2 unused
  }
  const DeterministicKernelsGuard on(true);
  for (DType idt : {DType::I64, DType::I32}) {
    for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " ids " + dtype_name(idt));
      const Tensor w0 = test::randn64({V, D}, 1).to(dt);
      const Tensor up = test::randn64({n, D}, 2).to(dt);
      auto grad_on = [&](Device dev) {
        Tensor w = w0.to(dev).detach();
        set_requires_grad(w);
        const Tensor ids = Tensor::from_vector_i64(idv, {n}, idt, dev);
        backward(embedding(w, ids), up.to(dev));
        return grad(w).to(Device::cpu()).to(DType::F64).to_vector();
      };
      const std::vector<double> cpu = grad_on(Device::cpu()), gpu = grad_on(Device::cuda()),
                                again = grad_on(Device::cuda());
      ASSERT_EQ(cpu.size(), gpu.size());
      int64_t differ = 0;
      for (size_t e = 0; e < cpu.size(); ++e) differ += cpu[e] != gpu[e] || gpu[e] != again[e];
      EXPECT_EQ(differ, 0) << "elements that differ from the CPU or between two CUDA runs";
    }
  }
}
