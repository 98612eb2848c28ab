// CUDA vs CPU for causal_conv1d and the norms: forward and backward (through both outputs), awkward sizes
// (D / H = 1, 7, 768, 1536; L = 1, 7, 2049), f32 and bf16 activations, every option on and off.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/norm.h"
#include "tests/pack_outputs.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::pack_outputs;

namespace {

// |a - b| <= tol * (|b| + rms(b)) elementwise (rms-scaled absolute part: sums of many terms cancel), no NaN.
// floor: an extra absolute allowance (tol * floor), for outputs that are sums which cancel to ~0 (a norm over one
// feature has dx == 0 exactly in real arithmetic; its f32 value is rounding noise of the upstream gradient's size).
void expect_match(const Tensor& actual, const Tensor& expected, double tol, const std::string& what,
                  double floor = 0.0) {
  ASSERT_TRUE(actual.defined() && expected.defined()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const std::vector<double> a = actual.to_vector(), b = expected.to_vector();
  double ss = 0;
  for (double v : b) ss += v * v;
  const double rms = b.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(b.size()));
  const double ratio = mt::test::tolerance_ratio(a, b, tol * std::max(rms, floor) + 1e-30, tol);
  EXPECT_LE(ratio, 1.0) << what << ": tolerance ratio " << ratio << " (tol " << tol << ", rms " << rms << ")";
}

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

TEST(CudaConvNorm, Conv1dMatchesCpu) {
  MT_REQUIRE_CUDA();
  const std::vector<ConvOpts> options = {
      {4, true, true, true, false},  {4, false, false, false, false}, {4, true, false, true, true},
      {3, false, true, false, true}, {1, true, false, true, false},
  };
  Generator gen(101);
  const int64_t B = 2;
  for (int64_t D : {1, 7, 1536})
    for (int64_t L : {1, 7, 2049})
      for (DType dt : {DType::F32, DType::BF16})
        for (const ConvOpts& o : options) {
          const DType wdt = o.w_f32 ? DType::F32 : dt;
          std::vector<Tensor> host = {Tensor::randn({B, L, D}, gen, 0, 1, dt),
                                      Tensor::randn({D, o.K}, gen, 0, 0.5, wdt), Tensor::randn({D}, gen, 0, 1, wdt),
                                      Tensor::randn({B, o.K - 1, D}, gen, 0, 1, dt)};
          Tensor seed = Tensor::rand({B * L * D + B * (o.K - 1) * D}, gen, -1, 1, DType::F32);
          const ConvRun c = run_conv(host, o, seed, Device::cpu());
          const ConvRun g = run_conv(host, o, seed, Device::cuda());
          const std::string what = str("D=", D, " L=", L, " ", dtype_name(dt), " K=", o.K, " bias=", o.bias,
                                       " init=", o.init, " silu=", o.silu, " w=", dtype_name(wdt));
          // bf16 storage: one rounding of a value computed in f32 on both sides (a 1-ulp flip is 0.4-0.8%).
          // f32: elementwise 1e-5, reductions over B*L terms 1e-4 (summation order differs).
          const bool half = dt == DType::BF16, half_w = wdt == DType::BF16;
          const double ew = half ? 3e-2 : 1e-5, eg = half ? 3e-2 : 1e-4, red = half_w ? 3e-2 : 1e-4;
          expect_match(g.y, c.y, ew, what + " y");
          expect_match(g.fin, c.fin, 0.0, what + " final_state");
          expect_match(g.dx, c.dx, eg, what + " dx");
          expect_match(g.dw, c.dw, red, what + " dweight");
          EXPECT_EQ(g.dw.dtype(), wdt) << what;
          if (o.bias) expect_match(g.db, c.db, red, what + " dbias");
          if (o.init) expect_match(g.dinit, c.dinit, eg, what + " d_initial_state");
        }
}

TEST(CudaConvNorm, Conv1dBackwardIsDeterministic) {
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

TEST(CudaConvNorm, Conv1dStreamingOnGpu) {
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

// ---------------------------------------------------------------- norms

namespace {

struct NormOpts {
  bool rms, fused, residual, bias;
  bool other_out;  // fused only: out_dtype differs from x's (f32 <-> bf16)
};

struct NormRun {
  Tensor y, res, dx, dres, dw, db;
};

NormRun run_norm(const std::vector<Tensor>& host, const NormOpts& o, const Tensor& seed, Device dev) {
  Tensor x = leaf(host[0], dev), w = leaf(host[2], dev);
  Tensor r = o.residual ? leaf(host[1], dev) : Tensor();
  Tensor b = o.bias ? leaf(host[3], dev) : Tensor();
  const DType out_dtype = o.other_out ? (x.dtype() == DType::F32 ? DType::BF16 : DType::F32) : x.dtype();
  NormRun run;
  if (o.fused) {
    NormOut out =
        o.rms ? rms_norm_residual(x, r, w, 1e-5, out_dtype) : layer_norm_residual(x, r, w, b, 1e-5, out_dtype);
    Tensor packed = pack_outputs(out.y, out.residual, DType::F32);
    backward(packed, seed.to(dev));
    run.y = cpu(out.y), run.res = cpu(out.residual);
  } else {
    Tensor y = o.rms ? rms_norm(x, w, 1e-5) : layer_norm(x, w, b, 1e-5);
    backward(y, seed.as_strided(y.shape(), contiguous_strides(y.shape()), 0).to(y.dtype()).to(dev));
    run.y = cpu(y);
  }
  run.dx = cpu(grad(x)), run.dw = cpu(grad(w));
  if (o.residual) run.dres = cpu(grad(r));
  if (o.bias) run.db = cpu(grad(b));
  return run;
}

}  // namespace

TEST(CudaConvNorm, NormsMatchCpu) {
  MT_REQUIRE_CUDA();
  const std::vector<NormOpts> options = {
      {true, false, false, false, false}, {false, false, false, true, false}, {false, false, false, false, false},
      {true, true, false, false, false},  {true, true, true, false, true},    {false, true, true, true, false},
      {false, true, false, true, true},   {false, true, true, false, false},
  };
  const std::vector<Shape> leads = {{1}, {7}, {2, 1025}};
  Generator gen(202);
  for (int64_t H : {1, 7, 768, 1536})
    for (const Shape& lead : leads)
      for (DType dt : {DType::F32, DType::BF16})
        for (const NormOpts& o : options) {
          Shape shape = lead;
          shape.push_back(H);
          const int64_t n = shape_numel(shape);
          std::vector<Tensor> host = {
              Tensor::randn(shape, gen, 0.5, 1, dt), Tensor::randn(shape, gen, 0, 1, DType::F32),
              Tensor::rand({H}, gen, 0.5, 1.5, DType::F32), Tensor::randn({H}, gen, 0, 1, DType::F32)};
          Tensor seed = Tensor::rand({o.fused ? 2 * n : n}, gen, -1, 1, DType::F32);
          const NormRun c = run_norm(host, o, seed, Device::cpu());
          const NormRun g = run_norm(host, o, seed, Device::cuda());
          const std::string what =
              str("H=", H, " rows=", n / H, " ", dtype_name(dt), " rms=", o.rms, " fused=", o.fused,
                  " residual=", o.residual, " bias=", o.bias, " other_out=", o.other_out);
          // Backward reads only f32 state (r, statistics, weight) and the same upstream gradient on both sides, so
          // everything but bf16 outputs (y, dx for bf16 x) matches to f32 summation-order precision.
          const double ty = g.y.dtype() == DType::BF16 ? 3e-2 : 1e-4, tdx = dt == DType::BF16 ? 3e-2 : 1e-4;
          expect_match(g.y, c.y, ty, what + " y");
          if (o.fused) {
            EXPECT_EQ(g.res.dtype(), DType::F32) << what;
            expect_match(g.res, c.res, 0.0, what + " residual_out");
          }
          std::vector<double> sv = seed.to_vector();
          double seed_ss = 0;
          for (double v : sv) seed_ss += v * v;
          // dx of a norm is O(|dy| * |w| / std(x)); bound the noise by the upstream gradient's rms.
          expect_match(g.dx, c.dx, tdx, what + " dx", std::sqrt(seed_ss / sv.size()));
          if (o.residual) expect_match(g.dres, c.dres, 1e-4, what + " dresidual");
          expect_match(g.dw, c.dw, 1e-4, what + " dweight");
          if (o.bias) expect_match(g.db, c.db, 1e-4, what + " dbias");
        }
}
