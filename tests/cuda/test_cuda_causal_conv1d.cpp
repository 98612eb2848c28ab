// causal_conv1d on CUDA: the backward is deterministic, and streaming one step at a time equals one run. CUDA vs
// the CPU: the op table (tests/cuda/test_cuda_op_table.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops/causal_conv1d.h"
#include "tests/pack_outputs.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::pack_outputs;

namespace {

Tensor leaf(const Tensor& host, Device dev) {
  Tensor t = host.to(dev).clone();  // a fresh leaf per run
  set_requires_grad(t);
  return t;
}

Tensor cpu(const Tensor& t) { return t.defined() ? t.to(Device::cpu()) : Tensor(); }

// ---------------------------------------------------------------- conv

struct ConvOpts {
  int64_t K;
  bool bias, init, silu, w_f32;
};

struct ConvRun {
  Tensor y, fin, dx, dw, db, dinit;
};

ConvRun run_conv(const std::vector<Tensor>& host, const ConvOpts& o, const Tensor& seed, Device dev) {
  Tensor x = leaf(host[0], dev), w = leaf(host[1], dev);
  Tensor b = o.bias ? leaf(host[2], dev) : Tensor();
  Tensor init = o.init ? leaf(host[3], dev) : Tensor();
  CausalConv1dOut out = causal_conv1d(x, w, b, init, o.silu);
  Tensor packed = pack_outputs(out.y, out.final_state, DType::F32);
  backward(packed, seed.to(dev));
  return {cpu(out.y),
          cpu(out.final_state),
          cpu(grad(x)),
          cpu(grad(w)),
          o.bias ? cpu(grad(b)) : Tensor(),
          o.init ? cpu(grad(init)) : Tensor()};
}

}  // namespace

TEST(CudaCausalConv1d, BackwardIsDeterministic) {
  MT_REQUIRE_CUDA();
  Generator gen(7);
  const ConvOpts o{4, true, true, true, true};
  std::vector<Tensor> host = {
      Tensor::randn({3, 3001, 96}, gen, 0, 1, DType::BF16), Tensor::randn({96, 4}, gen, 0, 0.5, DType::F32),
      Tensor::randn({96}, gen, 0, 1, DType::F32), Tensor::randn({3, 3, 96}, gen, 0, 1, DType::BF16)};
  Tensor seed = Tensor::rand({3 * 3001 * 96 + 3 * 3 * 96}, gen, -1, 1, DType::F32);
  const ConvRun a = run_conv(host, o, seed, Device::cuda());
  const ConvRun b = run_conv(host, o, seed, Device::cuda());
  EXPECT_EQ(a.dw.to_vector(), b.dw.to_vector());
  EXPECT_EQ(a.db.to_vector(), b.db.to_vector());
}

TEST(CudaCausalConv1d, StreamingOnGpu) {
  MT_REQUIRE_CUDA();
  Generator gen(9);
  const int64_t B = 2, L = 9, D = 37, K = 4;
  Tensor x = Tensor::randn({B, L, D}, gen, 0, 1, DType::F32, Device::cuda());
  Tensor w = Tensor::randn({D, K}, gen, 0, 1, DType::F32, Device::cuda());
  Tensor b = Tensor::randn({D}, gen, 0, 1, DType::F32, Device::cuda());
  auto full = causal_conv1d(x, w, b, Tensor(), true);
  Tensor state;
  std::vector<double> steps;
  for (int64_t t = 0; t < L; ++t) {
    auto s = causal_conv1d(x.as_strided({B, 1, D}, {L * D, D, 1}, t * D).contiguous(), w, b, state, true);
    state = s.final_state;
    std::vector<double> v = s.y.to_vector();
    steps.insert(steps.end(), v.begin(), v.end());
  }
  const std::vector<double> fv = full.y.to_vector();
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t d = 0; d < D; ++d)
        EXPECT_NEAR(steps[(t * B + bb) * D + d], fv[(bb * L + t) * D + d], 1e-5) << bb << " " << t << " " << d;
  EXPECT_EQ(state.to_vector(), full.final_state.to_vector());
}
