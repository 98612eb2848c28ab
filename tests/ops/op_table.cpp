// The op table (tests/ops/op_table.h): one entry per op, in name order. Small shapes are gradchecked on the CPU;
// large ones (Cases::add_big) are compared on CUDA only. Awkward sizes: 1, primes, channel counts that are not
// multiples of the 32-channel / 16-byte blocks, sequence lengths that cross the scan's 16-step tiles and its chunks.
#include "tests/ops/op_table.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "autograd/ops/causal_conv1d.h"
#include "autograd/ops/cross_entropy.h"
#include "autograd/ops/dispatch.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/gemm.h"
#include "autograd/ops/linear_cross_entropy.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/pool.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/selective_scan_bidir.h"
#include "autograd/ops/shape_ops.h"
#include "core/device.h"
#include "core/ignore_index.h"
#include "kernels/adamw.h"
#include "kernels/grad_check.h"
#include "tests/test_util.h"

namespace mt::test {

namespace {

using Outs = std::vector<Tensor>;
using Ins = const std::vector<Tensor>&;

// Host inputs in f64 from a fixed seed.
Tensor randn(const Shape& s, uint64_t seed, double mean = 0.0, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, mean, std, DType::F64);
}
Tensor uniform(const Shape& s, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return Tensor::rand(s, g, lo, hi, DType::F64);
}
OpInput data(const Tensor& t) { return {t, Role::Data, true}; }
OpInput master(const Tensor& t) { return {t, Role::Master, true}; }
OpInput fixed(const Tensor& t) { return {t, Role::Data, false}; }  // integers, masks: not differentiated
OpInput none() { return {Tensor(), Role::Data, false}; }
OpInput opt(bool on, const OpInput& in) { return on ? in : none(); }

// The cases of one op. Large ones (CUDA sizes) are built only when asked (the CUDA harness), by a function, so the
// CPU harness neither allocates nor fills their inputs.
struct Cases {
  bool with_big;
  std::vector<OpCase> v;
  void add(OpCase c) { v.push_back(std::move(c)); }
  void add(std::string what, std::vector<OpInput> in, std::function<Outs(Ins)> run) {
    v.push_back(op_case(std::move(what), std::move(in), std::move(run)));
  }
  template <class F>
  void add_big(F make) {
    if (!with_big) return;
    OpCase c = make();
    c.gradcheck = false;
    v.push_back(std::move(c));
  }
};

// Tolerances that let bf16 / f16 values count as close to f32 ones (outputs stored in a half dtype whatever dt).
Tol half_tol(DType dt) { return dt == DType::F64 ? default_tol(dt) : default_tol(DType::BF16); }

// Targets in [0, C) with every 5th row ignored.
Tensor targets(int64_t N, int64_t C, uint64_t seed, DType dt = DType::I64) {
  Generator g(seed);
  std::vector<int64_t> t = Tensor::randint({N}, g, 0, C).to_vector_i64();
  for (int64_t i = 0; i < N; i += 5) t[i] = kIgnoreIndex;
  return Tensor::from_vector_i64(t, {N}, dt);
}

// ------------------------------------------------------------------------------------------------ adamw

// The AdamW update of kernels/adamw.h, element by element in double from the f32 inputs.
void adamw_reference(std::vector<float>& p, const std::vector<double>& g, std::vector<float>& m, std::vector<float>& v,
                     const kernels::AdamWParams& h, float wd) {
  for (size_t i = 0; i < p.size(); ++i) {
    const float gi = static_cast<float>(g[i]) * h.grad_scale;
    m[i] = h.beta1 * m[i] + (1.0f - h.beta1) * gi;
    v[i] = h.beta2 * v[i] + (1.0f - h.beta2) * gi * gi;
    const float mh = m[i] / h.bias_correction1, vh = v[i] / h.bias_correction2;
    p[i] = p[i] - h.lr * (mh / (std::sqrt(vh) + h.eps) + wd * p[i]);
  }
}

kernels::AdamWParams adamw_hyper() {
  kernels::AdamWParams h;
  h.lr = 1e-2f, h.beta1 = 0.9f, h.beta2 = 0.95f, h.eps = 1e-8f;
  h.bias_correction1 = 1.0f - 0.9f * 0.9f * 0.9f, h.bias_correction2 = 1.0f - 0.95f * 0.95f * 0.95f;
  h.grad_scale = 0.5f;
  return h;
}

// One tensor's buffers for an AdamW check: f32 master and moments, a gradient in gdt, an optional weight copy.
struct AdamWBufs {
  Tensor param, grad, m, v, copy;
};
AdamWBufs adamw_bufs(int64_t n, DType gdt, bool with_copy, DType cdt, uint64_t seed, Device dev) {
  AdamWBufs b;
  b.param = uniform({n}, seed, -1, 1).to(DType::F32).to(dev);
  b.grad = randn({n}, seed + 1).to(gdt).to(dev);
  b.m = uniform({n}, seed + 2, -0.1, 0.1).to(DType::F32).to(dev);
  b.v = uniform({n}, seed + 3, 0.0, 0.1).to(DType::F32).to(dev);
  if (with_copy) b.copy = Tensor::zeros({n}, cdt, dev);
  return b;
}
kernels::AdamWParams adamw_params(const AdamWBufs& b, DType cdt, float wd) {
  kernels::AdamWParams p = adamw_hyper();
  p.param = b.param.data<float>();
  p.grad = b.grad.data_ptr();
  p.grad_dtype = b.grad.dtype();
  p.exp_avg = b.m.data<float>();
  p.exp_avg_sq = b.v.data<float>();
  p.copy = b.copy.defined() ? b.copy.data_ptr() : nullptr;
  p.copy_dtype = cdt;
  p.n = b.param.numel();
  p.weight_decay = wd;
  return p;
}

std::vector<float> floats(const Tensor& t) {
  std::vector<float> r;
  for (double v : t.to_vector()) r.push_back(static_cast<float>(v));
  return r;
}

// adamw_cpu against the formula: f32 and f64 gradients (the CPU kernel's), with and without the bf16 / f16 copy.
void adamw_cpu_check() {
  for (DType gdt : {DType::F32, DType::F64})
    for (int copy = 0; copy < 3; ++copy)
      for (int64_t n : {1, 7, 1031}) {
        const DType cdt = copy == 2 ? DType::F16 : DType::BF16;
        SCOPED_TRACE(str("adamw_cpu n=", n, " grad ", dtype_name(gdt), copy ? str(" copy ", dtype_name(cdt)) : ""));
        AdamWBufs b = adamw_bufs(n, gdt, copy != 0, cdt, 10 + n, Device::cpu());
        std::vector<float> p = floats(b.param), m = floats(b.m), v = floats(b.v);
        adamw_reference(p, b.grad.to_vector(), m, v, adamw_hyper(), 0.1f);
        kernels::adamw_cpu(adamw_params(b, cdt, 0.1f));
        const std::vector<double> got = b.param.to_vector();
        for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], p[i], 1e-6 * (1 + std::fabs(p[i]))) << i;
        if (copy) {
          EXPECT_EQ(b.copy.to_vector(), b.param.to(cdt).to_vector());  // the new master, rounded once
        }
      }
}

// adamw_cuda and adamw_multi_cuda (gradients in every float dtype, with and without the weight copy): the two
// kernels agree bit for bit, match adamw_cpu on the same gradient values (f32 for the 16-bit ones, which the CPU
// kernel does not take) within f32 rounding (the GPU fuses multiply-adds), and write the copy as cast() of the new
// master.
void adamw_cuda_check() {
  for (DType gdt : kAllFloat)
    for (int copy = 0; copy < 3; ++copy) {
      const DType cdt = copy == 2 ? DType::F16 : DType::BF16;
      const std::vector<int64_t> sizes = {1, 7, 1031, 262147};
      std::vector<AdamWBufs> cpu, one, multi;
      std::vector<kernels::AdamWTensor> ts;
      for (size_t k = 0; k < sizes.size(); ++k) {
        const float wd = k % 2 ? 0.1f : 0.0f;
        cpu.push_back(adamw_bufs(sizes[k], gdt, copy != 0, cdt, 100 + k * 10, Device::cpu()));
        if (is_half(gdt)) cpu.back().grad = cpu.back().grad.to(DType::F32);
        one.push_back(adamw_bufs(sizes[k], gdt, copy != 0, cdt, 100 + k * 10, Device::cuda()));
        multi.push_back(adamw_bufs(sizes[k], gdt, copy != 0, cdt, 100 + k * 10, Device::cuda()));
        kernels::adamw_cpu(adamw_params(cpu.back(), cdt, wd));
        ops::run_cuda("adamw", MT_CUDA_KERNEL(adamw_cuda), adamw_params(one.back(), cdt, wd));
        const AdamWBufs& b = multi.back();
        ts.push_back({b.param.data<float>(), b.grad.data_ptr(), gdt, b.m.data<float>(), b.v.data<float>(),
                      b.copy.defined() ? b.copy.data_ptr() : nullptr, cdt, sizes[k], wd});
      }
      ops::run_cuda("adamw", MT_CUDA_KERNEL(adamw_multi_cuda), adamw_hyper(), ts);
      for (size_t k = 0; k < sizes.size(); ++k) {
        SCOPED_TRACE(str("adamw n=", sizes[k], " grad ", dtype_name(gdt), copy ? str(" copy ", dtype_name(cdt)) : ""));
        EXPECT_EQ(multi[k].param.to_vector(), one[k].param.to_vector());
        EXPECT_EQ(multi[k].m.to_vector(), one[k].m.to_vector());
        EXPECT_EQ(multi[k].v.to_vector(), one[k].v.to_vector());
        EXPECT_LE(tolerance_ratio(one[k].param.to_vector(), cpu[k].param.to_vector(), 1e-6, 1e-5), 1.0);
        EXPECT_LE(tolerance_ratio(one[k].v.to_vector(), cpu[k].v.to_vector(), 1e-9, 1e-5), 1.0);
        if (copy) {
          EXPECT_EQ(one[k].copy.to_vector(), one[k].param.to(cdt).to_vector());
          EXPECT_EQ(multi[k].copy.to_vector(), multi[k].param.to(cdt).to_vector());
        }
      }
    }
}

std::vector<OpCase> no_cases(bool) { return {}; }

// Document starts [B, L] i32 for the conv and the scan (reset): two in a row, one at a CUDA tile boundary (16), one on
// the last step, one at t = 0 on odd rows (the initial state dropped) and, on long rows, about one per 300 steps at
// seeded positions, so chunks with and without a reset occur.
Tensor doc_resets(int64_t B, int64_t L, uint64_t seed) {
  std::vector<double> r(static_cast<size_t>(B * L), 0.0);
  const std::vector<double> u = uniform({B, L}, seed, 0.0, 1.0).to_vector();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t : {L / 3, L / 3 + 1, int64_t{16}, L - 1})
      if (t > 0 && t < L) r[b * L + t] = 1.0;
    if (b % 2 == 1) r[b * L] = 1.0;
    if (L > 64)
      for (int64_t t = 0; t < L; ++t)
        if (u[b * L + t] < 1.0 / 300) r[b * L + t] = 1.0;
  }
  return Tensor::from_vector(r, {B, L}, DType::I32);
}

// ------------------------------------------------------------------------------------------------ causal_conv1d

struct ConvFlags {
  bool bias, init, silu, w_f32;
  int64_t K = 4;
  bool reset = false;
  bool reverse = false;  // the conv of the flipped sequence (no initial or final state)
};

OpCase conv_case(int64_t B, int64_t L, int64_t D, int64_t K, const ConvFlags& f, uint64_t seed) {
  const auto w = [&](const Tensor& t) { return f.w_f32 ? master(t) : data(t); };
  OpCase c;
  c.what = str("B=", B, " L=", L, " D=", D, " K=", K, " bias=", f.bias, " init=", f.init, " silu=", f.silu,
               " w_f32=", f.w_f32, " reset=", f.reset, f.reverse ? " reverse" : "");
  c.inputs = {data(randn({B, L, D}, seed)), w(randn({D, K}, seed + 1, 0, 0.5)), opt(f.bias, w(randn({D}, seed + 2))),
              opt(f.init, data(randn({B, K - 1, D}, seed + 3))), opt(f.reset, fixed(doc_resets(B, L, seed + 4)))};
  const bool silu = f.silu, reverse = f.reverse;
  c.run = [silu, reverse](Ins v) -> Outs {
    const CausalConv1dOut o = causal_conv1d(v[0], v[1], v[2], v[3], silu, v[4], reverse);
    if (reverse) return {o.y};
    return {o.y, o.final_state};
  };
  return c;
}

std::vector<OpCase> causal_conv1d_cases(bool big) {
  Cases cs{big, {}};
  uint64_t seed = 100;
  // Every flag combination at three lengths and kernel widths. K = 1 with an initial_state: a [B, 0, D] state,
  // gradchecked only (no kernel reads it).
  for (int64_t L : {1, 2, 9})
    for (int64_t K : {1, 3, 4})
      for (int bits = 0; bits < 16; ++bits) {
        const ConvFlags f{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0};
        OpCase c = conv_case(2, L, 3, K, f, seed += 10);
        if (f.init && K == 1) c.dtypes.clear();
        cs.add(c);
      }
  // Document resets: with and without an initial state, at lengths around the kernel width.
  for (int64_t L : {1, 2, 5, 9})
    for (int64_t K : {2, 4})
      for (int bits = 0; bits < 4; ++bits)
        cs.add(conv_case(2, L, 3, K, {(bits & 1) != 0, (bits & 2) != 0, true, false, K, true}, seed += 10));
  // Channel counts around the CUDA kernels' blocks, lengths across their time tiles.
  const ConvFlags options[] = {{true, true, true, false, 4},       {false, false, false, false, 4},
                               {true, false, true, true, 4},       {false, true, false, true, 3},
                               {true, false, true, false, 1},      {true, true, true, false, 4, true},
                               {false, true, false, true, 3, true}};
  for (int64_t D : {1, 7, 1536})
    for (int64_t L : {1, 7, 2049})
      for (const ConvFlags& f : options)
        cs.add_big([&, s = seed += 10] {
          OpCase c = conv_case(2, L, D, f.K, f, s);
          if (D * L > 20000) c.dtypes = {DType::F32, DType::BF16};
          return c;
        });
  // The reverse conv: every flag but the state, with and without resets, then the CUDA kernels' shapes (K = 4
  // streams, K = 3 takes the general kernels).
  for (int64_t L : {1, 2, 9})
    for (int64_t K : {1, 2, 4})
      for (int bits = 0; bits < 16; ++bits) {
        ConvFlags f{(bits & 1) != 0, false, (bits & 2) != 0, (bits & 4) != 0, K, (bits & 8) != 0};
        f.reverse = true;
        cs.add(conv_case(2, L, 3, K, f, seed += 10));
      }
  for (int64_t D : {7, 1536})
    for (int64_t L : {7, 2049})
      for (int64_t K : {3, 4})
        for (bool reset : {false, true})
          cs.add_big([&, s = seed += 10] {
            ConvFlags f{true, false, true, false, K, reset};
            f.reverse = true;
            OpCase c = conv_case(2, L, D, K, f, s);
            if (D * L > 20000) c.dtypes = {DType::F32, DType::BF16};
            return c;
          });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ cross_entropy

std::vector<OpCase> cross_entropy_cases(bool big) {
  Cases cs{big, {}};
  auto ls = [](int64_t dim) { return [dim](Ins v) -> Outs { return {log_softmax(v[0], dim)}; }; };
  auto ce = [](Ins v) -> Outs { return {cross_entropy(v[0], v[1])}; };
  const Tensor all_ignored = Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3});
  cs.add("log_softmax [3, 5] dim -1", {data(randn({3, 5}, 1, 0, 3))}, ls(-1));
  cs.add("log_softmax [7, 5] dim 0", {data(randn({7, 5}, 2))}, ls(0));
  cs.add("log_softmax [2, 9, 3] dim 1", {data(randn({2, 9, 3}, 3))}, ls(1));
  cs.add("log_softmax [5, 1]", {data(randn({5, 1}, 4))}, ls(-1));
  cs.add("log_softmax [2, 64] (16-byte loads)", {data(randn({2, 64}, 5))}, ls(-1));
  cs.add("log_softmax of a transpose", {data(randn({4, 3}, 14))},
         [](Ins v) -> Outs { return {log_softmax(transpose(v[0], 0, 1), -1)}; });
  cs.add_big([&] { return op_case("log_softmax [13, 257]", {data(randn({13, 257}, 6, 0, 3))}, ls(-1)); });
  cs.add_big([&] { return op_case("log_softmax [3, 50280]", {data(randn({3, 50280}, 7, 0, 2))}, ls(-1)); });
  cs.add("cross_entropy N=13 C=7 i32", {data(randn({13, 7}, 8)), fixed(targets(13, 7, 9, DType::I32))}, ce);
  cs.add("cross_entropy N=4 C=1",
         {data(randn({4, 1}, 10)), fixed(Tensor::from_vector_i64({0, 0, kIgnoreIndex, 0}, {4}))}, ce);
  cs.add("cross_entropy every row ignored", {data(randn({3, 11}, 11)), fixed(all_ignored)}, ce);
  cs.add("cross_entropy of transposed logits",
         {data(randn({4, 3}, 15)), fixed(Tensor::from_vector_i64({2, 0, 3}, {3}))},
         [](Ins v) -> Outs { return {cross_entropy(transpose(v[0], 0, 1), v[1])}; });
  cs.add_big([&] {
    return op_case("cross_entropy N=37 C=50280", {data(randn({37, 50280}, 12, 0, 2)), fixed(targets(37, 50280, 13))},
                   ce);
  });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ elementwise

using Binary = Tensor (*)(const Tensor&, const Tensor&);
using Unary = Tensor (*)(const Tensor&);

// Reductions of a broadcast gradient sum many terms: a looser f32 tolerance.
Tol reduction_tol(DType dt) { return dt == DType::F32 ? Tol{1e-4, 1e-5, 0} : default_tol(dt); }

std::vector<OpCase> elementwise_cases(bool big) {
  Cases cs{big, {}};
  const std::pair<const char*, Binary> binary[] = {{"add", add}, {"sub", sub}, {"mul", mul}, {"div", div}};
  // Broadcasting from the left, the right, both sides, scalars ([]); b kept away from 0 for div.
  const std::pair<Shape, Shape> shapes[] = {
      {{1}, {1}},    {{7}, {7}}, {{3, 4}, {3, 4}}, {{3, 1, 5}, {4, 5}},    {{4, 5}, {3, 1, 5}},    {{2, 3}, {}},
      {{}, {2, 3}},  {{}, {}},   {{1, 5}, {4, 1}}, {{4, 1, 1}, {1, 3, 2}}, {{2, 1, 3}, {2, 4, 3}}, {{1}, {3, 1}},
      {{257}, {257}}};
  const std::pair<Shape, Shape> big_shapes[] = {
      {{1000003}, {1000003}}, {{257, 7}, {7}}, {{}, {1000003}}, {{1000003}, {}}, {{13, 1}, {1, 257}}};
  uint64_t seed = 1000;
  for (const auto& op : binary) {
    const Binary f = op.second;
    auto one = [&, f](const Shape& a, const Shape& b, uint64_t sd) {
      OpCase c = op_case(str(op.first, " ", shape_str(a), " ", shape_str(b)),
                         {data(randn(a, sd)), data(uniform(b, sd + 1, 0.5, 2.0))},
                         [f](Ins v) -> Outs { return {f(v[0], v[1])}; });
      c.tol = reduction_tol;  // the gradient of a broadcast input sums many terms
      return c;
    };
    for (const auto& sh : shapes) cs.add(one(sh.first, sh.second, seed += 2));
    for (const auto& sh : big_shapes) cs.add_big([&, sd = seed += 2] { return one(sh.first, sh.second, sd); });
  }
  // Transposed (non-contiguous) operands.
  cs.add("mul transposed", {data(randn({4, 6}, 1100)), data(randn({6, 4}, 1101))},
         [](Ins v) -> Outs { return {mul(transpose(v[0], 0, 1), v[1])}; });
  cs.add("add transposed", {data(randn({6, 4}, 1102)), data(randn({4, 6}, 1103))},
         [](Ins v) -> Outs { return {add(v[0], transpose(v[1], 0, 1))}; });
  cs.add("exp transposed", {data(randn({4, 6}, 1104))}, [](Ins v) -> Outs { return {exp(transpose(v[0], 0, 1))}; });
  struct UnaryCase {
    const char* name;
    Unary f;
    double lo, hi;
  };
  const UnaryCase unary[] = {
      {"exp", exp, -4, 4},     {"log", log, 0.05, 8},           {"sigmoid", sigmoid, -8, 8},
      {"silu", silu, -8, 8},   {"softplus", softplus, -30, 30}, {"tanh", tanh, -4, 4},
      {"sqrt", sqrt, 0.05, 8}, {"square", square, -4, 4},       {"neg", neg, -4, 4},
  };
  for (const UnaryCase& u : unary) {
    const Unary f = u.f;
    cs.add(str(u.name, " []"), {data(uniform({}, seed += 1, u.lo, u.hi))}, [f](Ins v) -> Outs { return {f(v[0])}; });
    cs.add(str(u.name, " [2, 3, 5]"), {data(uniform({2, 3, 5}, seed += 1, u.lo, u.hi))},
           [f](Ins v) -> Outs { return {f(v[0])}; });
  }
  for (const UnaryCase& u : unary)
    for (int64_t n : {1, 7, 257, 1000003}) {
      const Unary f = u.f;
      auto make = [&, f, n, sd = seed += 1] {
        return op_case(str(u.name, " n=", n), {data(uniform({n}, sd, u.lo, u.hi))},
                       [f](Ins v) -> Outs { return {f(v[0])}; });
      };
      if (n > 300)
        cs.add_big(make);
      else
        cs.add(make());
    }
  cs.add("add_scalar", {data(randn({257}, 1200))}, [](Ins v) -> Outs { return {add_scalar(v[0], 1.5)}; });
  cs.add("mul_scalar", {data(randn({257}, 1201))}, [](Ins v) -> Outs { return {mul_scalar(v[0], -0.75)}; });
  cs.add("mul_scalar(add_scalar) [3, 4]", {data(randn({3, 4}, 1202))},
         [](Ins v) -> Outs { return {mul_scalar(add_scalar(v[0], 1.0), 1.0)}; });
  // Dropout: the mask is a function of (seed, offset, index), the same on every device and in every call.
  for (int64_t n : {1, 7, 257, 1000003}) {
    auto make = [n] {
      return op_case(str("dropout p=0.3 n=", n), {data(uniform({n}, 1300 + n, 0.5, 1.5))}, [](Ins v) -> Outs {
        Generator g(99);
        return {dropout(v[0], 0.3, true, g)};
      });
    };
    if (n > 300)
      cs.add_big(make);
    else
      cs.add(make());
  }
  // cast: the result is rounded to the target dtype, so only the cast to f64 (exact) is gradchecked.
  for (DType to : {DType::BF16, DType::F16, DType::F32, DType::F64}) {
    OpCase c = op_case(str("cast to ", dtype_name(to)), {data(randn({257}, 1400))},
                       [to](Ins v) -> Outs { return {cast(v[0], to)}; });
    c.tol = is_half(to) ? &half_tol : &default_tol;
    c.gradcheck = to == DType::F64;
    cs.add(c);
    cs.add_big([&] {
      OpCase b = op_case(str("cast [1000003] to ", dtype_name(to)), {data(randn({1000003}, 1401))},
                         [to](Ins v) -> Outs { return {cast(v[0], to)}; });
      b.tol = c.tol;
      return b;
    });
  }
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ embedding

std::vector<OpCase> embedding_cases(bool big) {
  Cases cs{big, {}};
  auto f = [](Ins v) -> Outs { return {embedding(v[0], v[1])}; };
  cs.add("V=11 d=3 ids [2, 5] with repeats",
         {data(randn({11, 3}, 1)), fixed(Tensor::from_vector_i64({3, 0, 3, 10, 3, 7, 0, 1, 3, 9}, {2, 5}))}, f);
  cs.add("V=1 d=1", {data(randn({1, 1}, 2)), fixed(Tensor::from_vector_i64({0, 0}, {2}))}, f);
  cs.add("V=5 d=2 ids i32", {data(randn({5, 2}, 3)), fixed(Tensor::from_vector_i64({4, 1, 4}, {3}, DType::I32))}, f);
  for (DType id : {DType::I64, DType::I32})
    cs.add_big([&] {
      Generator g(3);
      const Tensor ids = Tensor::randint({7, 37}, g, 0, 50, id);  // many repeats across 259 ids
      return op_case(str("V=50 d=13 ids [7, 37] ", dtype_name(id)), {data(randn({50, 13}, 4)), fixed(ids)}, f);
    });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ gemm

std::vector<OpCase> gemm_cases(bool big) {
  Cases cs{big, {}};
  auto mm = [](Ins v) -> Outs { return {matmul(v[0], v[1])}; };
  auto mm_t = [](Ins v) -> Outs { return {matmul(transpose(v[0], -1, -2), v[1])}; };
  auto lin = [](Ins v) -> Outs { return {linear(v[0], v[1], v[2])}; };
  cs.add("matmul 1x1x1", {data(randn({1, 1}, 1)), data(randn({1, 1}, 2))}, mm);
  cs.add("matmul [3, 5] @ [5, 2]", {data(randn({3, 5}, 3)), data(randn({5, 2}, 4))}, mm);
  cs.add("matmul batched [2, 3, 4] @ [2, 4, 2]", {data(randn({2, 3, 4}, 5)), data(randn({2, 4, 2}, 6))}, mm);
  cs.add("matmul [2, 3, 4] @ [4, 3]", {data(randn({2, 3, 4}, 7)), data(randn({4, 3}, 8))}, mm);
  cs.add("matmul transposed a", {data(randn({2, 5, 3}, 9)), data(randn({2, 5, 2}, 10))}, mm_t);
  cs.add("linear [2, 3, 4] with bias", {data(randn({2, 3, 4}, 11)), data(randn({5, 4}, 12)), data(randn({5}, 13))},
         lin);
  cs.add("linear [3, 4] no bias", {data(randn({3, 4}, 14)), data(randn({2, 4}, 15)), none()}, lin);
  cs.add("linear 1x1", {data(randn({1, 1}, 16)), data(randn({1, 1}, 17)), data(randn({1}, 18))}, lin);
  cs.add("matmul two batch dims", {data(randn({2, 2, 3, 4}, 40)), data(randn({2, 2, 4, 3}, 41))}, mm);
  cs.add("matmul transposed and permuted", {data(randn({2, 4, 3}, 42)), data(randn({2, 5, 4}, 43))}, [](Ins v) -> Outs {
    return {matmul(transpose(v[0], -1, -2), permute(v[1], {0, 2, 1}))};
  });
  cs.add("linear 1-D x", {data(randn({4}, 44)), data(randn({3, 4}, 45)), data(randn({3}, 46))}, lin);
  cs.add("linear of a transposed x", {data(randn({3, 2, 4}, 47)), data(randn({5, 4}, 48)), data(randn({5}, 49))},
         [](Ins v) -> Outs { return {linear(transpose(v[0], 0, 1), v[1], v[2])}; });
  auto lin_split = [](std::vector<int64_t> sizes) {
    return [sizes](Ins v) -> Outs { return linear_split(v[0], v[1], v[2], sizes); };
  };
  cs.add("linear_split [2, 3, 4] into 2 + 3, bias",
         {data(randn({2, 3, 4}, 60)), data(randn({5, 4}, 61)), data(randn({5}, 62))}, lin_split({2, 3}));
  cs.add("linear_split [3, 4] into 1 + 1 + 3, no bias", {data(randn({3, 4}, 63)), data(randn({5, 4}, 64)), none()},
         lin_split({1, 1, 3}));
  cs.add("linear_split 1-D x into 2 + 1", {data(randn({4}, 65)), data(randn({3, 4}, 66)), data(randn({3}, 67))},
         lin_split({2, 1}));
  cs.add("linear_split one part", {data(randn({2, 4}, 68)), data(randn({3, 4}, 69)), data(randn({3}, 70))},
         lin_split({3}));
  cs.add_big([&] {
    return op_case("matmul [37, 129] @ [129, 65]", {data(randn({37, 129}, 20)), data(randn({129, 65}, 21))}, mm);
  });
  cs.add_big([&] {
    return op_case("matmul [3, 7, 13] @ [3, 13, 5]", {data(randn({3, 7, 13}, 22)), data(randn({3, 13, 5}, 23))}, mm);
  });
  cs.add_big([&] {
    return op_case("matmul [2, 3, 37, 16] @ [16, 257]", {data(randn({2, 3, 37, 16}, 24)), data(randn({16, 257}, 25))},
                   mm);
  });
  cs.add_big([&] {
    return op_case("matmul transposed a [4, 13, 7]", {data(randn({4, 13, 7}, 26)), data(randn({4, 13, 5}, 27))}, mm_t);
  });
  cs.add_big([&] {
    return op_case("linear [2, 37, 257] with bias",
                   {data(randn({2, 37, 257}, 28)), data(randn({129, 257}, 29)), data(randn({129}, 30))}, lin);
  });
  // Odd in_features: rows not 16-byte aligned for the 16-bit types.
  cs.add_big([&] {
    return op_case("linear [5, 7, 13] odd sizes",
                   {data(randn({5, 7, 13}, 31)), data(randn({11, 13}, 32)), data(randn({11}, 33))}, lin);
  });
  cs.add_big([&] {
    return op_case("linear_split [2, 37, 257] into 64 + 65, bias",
                   {data(randn({2, 37, 257}, 71)), data(randn({129, 257}, 72)), data(randn({129}, 73))},
                   lin_split({64, 65}));
  });
  cs.add_big([&] {
    return op_case("linear_split [5, 7, 13] into 5 + 6 odd sizes",
                   {data(randn({5, 7, 13}, 74)), data(randn({11, 13}, 75)), data(randn({11}, 76))}, lin_split({5, 6}));
  });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ grad_check

// Buffers of every dtype and awkward sizes, optionally with a bad value, and their CPU results.
struct GradBufs {
  std::vector<Tensor> keep;
  std::vector<kernels::GradBuffer> bufs;
};
GradBufs grad_bufs(Device dev, int variant) {
  GradBufs r;
  const int64_t sizes[] = {1, 7, 4099, 1000003};
  int k = 0;
  for (DType dt : kAllFloat)
    for (int64_t n : sizes) {
      Tensor t = randn({n}, 500 + k).to(dt);
      // variant 1: an inf in every third buffer at its last element, a NaN in every fifth at its first.
      if (variant == 1 && k % 3 == 0) t.as_strided({1}, {1}, n - 1).fill_(INFINITY);
      if (variant == 1 && k % 5 == 0) t.as_strided({1}, {1}, 0).fill_(NAN);
      t = t.to(dev);
      r.bufs.push_back({t.data_ptr(), dt, n});
      r.keep.push_back(t);
      ++k;
    }
  return r;
}

void grad_check_cpu_check() {
  for (int variant : {0, 1}) {
    const GradBufs g = grad_bufs(Device::cpu(), variant);
    for (size_t i = 0; i < g.bufs.size(); ++i) {
      SCOPED_TRACE(str("buffer ", i, " ", g.keep[i].describe(), " variant ", variant));
      bool finite = true;
      double ss = 0.0;
      for (double v : g.keep[i].to_vector()) {
        finite = finite && std::isfinite(v);
        ss += v * v;
      }
      EXPECT_EQ(kernels::grad_all_finite_cpu(g.bufs[i]), finite);
      const double got = kernels::grad_sum_squares_cpu(g.bufs[i]);
      if (std::isnan(ss)) {
        EXPECT_TRUE(std::isnan(got)) << got;
      } else if (std::isinf(ss)) {
        EXPECT_EQ(got, ss);
      } else {
        EXPECT_NEAR(got, ss, 1e-9 * ss) << "sum of squares";
      }
    }
  }
}

void grad_check_cuda_check() {
  for (int variant : {0, 1}) {
    const GradBufs c = grad_bufs(Device::cpu(), variant), g = grad_bufs(Device::cuda(), variant);
    const std::vector<uint8_t> flags = ops::run_cuda("grad_check", MT_CUDA_KERNEL(grad_nonfinite_flags_cuda), g.bufs);
    const std::vector<double> sums = ops::run_cuda("grad_check", MT_CUDA_KERNEL(grad_sum_squares_cuda), g.bufs);
    ASSERT_EQ(flags.size(), c.bufs.size());
    ASSERT_EQ(sums.size(), c.bufs.size());
    for (size_t i = 0; i < c.bufs.size(); ++i) {
      SCOPED_TRACE(str("buffer ", i, " ", c.keep[i].describe(), " variant ", variant));
      EXPECT_EQ(flags[i] != 0, !kernels::grad_all_finite_cpu(c.bufs[i]));
      const double ref = kernels::grad_sum_squares_cpu(c.bufs[i]);
      if (std::isnan(ref)) {
        EXPECT_TRUE(std::isnan(sums[i])) << sums[i];
      } else if (std::isinf(ref)) {
        EXPECT_EQ(sums[i], ref);
      } else {
        EXPECT_NEAR(sums[i], ref, 1e-10 * ref) << "sum of squares (double accumulation, another order)";
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ linear_cross_entropy

std::vector<OpCase> linear_cross_entropy_cases(bool big) {
  Cases cs{big, {}};
  auto f = [](int64_t chunk) {
    return [chunk](Ins v) -> Outs { return {linear_cross_entropy(v[0], v[1], v[2], kIgnoreIndex, chunk)}; };
  };
  for (int64_t chunk : {0, 1, 3})
    cs.add(str("N=7 H=3 V=5 chunk=", chunk),
           {data(randn({7, 3}, 1)), data(randn({5, 3}, 2, 0, 0.5)), fixed(targets(7, 5, 3))}, f(chunk));
  cs.add("N=4 H=3 V=1",
         {data(randn({4, 3}, 4)), data(randn({1, 3}, 5)), fixed(Tensor::from_vector_i64({0, 0, kIgnoreIndex, 0}, {4}))},
         f(0));
  cs.add("N=3 every row ignored, i32",
         {data(randn({3, 4}, 6)), data(randn({11, 4}, 7)),
          fixed(Tensor::from_vector_i64({kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, {3}, DType::I32))},
         f(0));
  cs.add("N=3 H=1 V=7 i32",
         {data(randn({3, 1}, 20)), data(randn({7, 1}, 21)), fixed(Tensor::from_vector_i64({6, 6, 2}, {3}, DType::I32))},
         f(0));
  cs.add("transposed h and weight",
         {data(randn({3, 4}, 22)), data(randn({3, 5}, 23)), fixed(Tensor::from_vector_i64({4, 0, 1, 3}, {4}))},
         [](Ins v) -> Outs {
           return {linear_cross_entropy(transpose(v[0], 0, 1), transpose(v[1], 0, 1), v[2], kIgnoreIndex, 2)};
         });
  // The GPT-NeoX vocabulary (16-byte row loads), several chunks with a ragged last one; odd sizes, i32 targets.
  for (int64_t chunk : {0, 8})
    cs.add_big([&] {
      return op_case(str("N=37 H=64 V=50280 chunk=", chunk),
                     {data(randn({37, 64}, 8)), data(randn({50280, 64}, 9, 0, 0.2)), fixed(targets(37, 50280, 10))},
                     f(chunk));
    });
  cs.add_big([&] {
    return op_case("N=13 H=5 V=7 chunk=1 i32",
                   {data(randn({13, 5}, 11)), data(randn({7, 5}, 12)), fixed(targets(13, 7, 13, DType::I32))}, f(1));
  });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ norm

struct NormFlags {
  bool rms, fused, residual, bias, other_out;  // other_out (fused): y in another dtype than x (f32 <-> bf16)
};

OpCase norm_case(const Shape& shape, const NormFlags& f, uint64_t seed) {
  const int64_t H = shape.back();
  OpCase c;
  c.what = str(shape_str(shape), " rms=", f.rms, " fused=", f.fused, " residual=", f.residual, " bias=", f.bias,
               " other_out=", f.other_out);
  c.inputs = {data(randn(shape, seed, 0.5, 1.0)), opt(f.residual, master(randn(shape, seed + 1))),
              master(uniform({H}, seed + 2, 0.5, 1.5)), opt(f.bias, master(randn({H}, seed + 3)))};
  c.run = [f](Ins v) -> Outs {
    const DType xd = v[0].dtype();
    const DType out = f.other_out && xd != DType::F64 ? (xd == DType::F32 ? DType::BF16 : DType::F32) : xd;
    if (f.fused) {
      const NormOut o = f.rms ? rms_norm_residual(v[0], v[1], v[2], 1e-5, out)
                              : layer_norm_residual(v[0], v[1], v[2], v[3], 1e-5, out);
      return {o.y, o.residual};
    }
    return {f.rms ? rms_norm(v[0], v[2], 1e-5) : layer_norm(v[0], v[2], v[3], 1e-5)};
  };
  // A norm over one feature has dx = 0 in exact arithmetic: its rounded value is noise of the upstream gradient's
  // size, so an absolute allowance. y in bf16 (other_out with f32 x) is judged as bf16.
  c.tol = [H, f](DType dt) {
    Tol t = f.other_out && dt == DType::F32 ? default_tol(DType::BF16) : default_tol(dt);
    if (H == 1) t.abs = is_half(dt) || (f.other_out && dt == DType::F32) ? 3e-2 : dt == DType::F64 ? 1e-10 : 1e-4;
    return t;
  };
  return c;
}

std::vector<OpCase> norm_cases(bool big) {
  const NormFlags options[] = {
      {true, false, false, false, false}, {false, false, false, true, false}, {false, false, false, false, false},
      {true, true, false, false, false},  {true, true, true, false, true},    {false, true, true, true, false},
      {false, true, false, true, true},   {false, true, true, false, false},
  };
  Cases cs{big, {}};
  uint64_t seed = 200;
  for (const Shape& shape : {Shape{1, 1}, Shape{3, 7}, Shape{2, 3, 5}})
    for (const NormFlags& f : options) cs.add(norm_case(shape, f, seed += 10));
  // H = 768, 1536 and 2560 are multiples of 128: the CUDA row kernels (both register sizes) serve them; the backward
  // sums dweight in the row kernel for 768 and 1536, in the column-tiled kernel for 2560.
  for (int64_t H : {1, 7, 768, 1536, 2560})
    for (const Shape& lead : {Shape{7}, Shape{2, 1025}})
      for (const NormFlags& f : options)
        cs.add_big([&, sd = seed += 10] {
          Shape shape = lead;
          shape.push_back(H);
          OpCase c = norm_case(shape, f, sd);
          if (shape_numel(shape) > 20000) c.dtypes = {DType::F32, DType::BF16};
          return c;
        });
  // 5,100 rows: more than the 512 blocks x 8 warps of the CUDA backward that sums dweight as it goes, so its warps
  // take several rows each.
  for (const NormFlags& f : options)
    cs.add_big([&, sd = seed += 10] {
      OpCase c = norm_case(Shape{3, 1700, 768}, f, sd);
      c.dtypes = {DType::F32, DType::BF16};
      return c;
    });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ pool

// Mask [B, L] (B >= 3): row 0 padded in the middle, row 1 fully padded (pools to 0, no gradient), the last row padded
// at the end.
Tensor pool_mask(int64_t B, int64_t L) {
  std::vector<int64_t> m(static_cast<size_t>(B * L), 1);
  for (int64_t t = 0; t < L; ++t) m[L + t] = 0;
  m[L / 2] = 0;
  for (int64_t t = std::max<int64_t>(0, L - 2); t < L; ++t) m[(B - 1) * L + t] = 0;
  return Tensor::from_vector_i64(m, {B, L});
}

std::vector<OpCase> pool_cases(bool big) {
  Cases cs{big, {}};
  const std::pair<const char*, kernels::PoolMode> modes[] = {
      {"mean", kernels::PoolMode::Mean}, {"max", kernels::PoolMode::Max}, {"last", kernels::PoolMode::Last}};
  uint64_t seed = 700;
  for (const auto& md : modes) {
    const kernels::PoolMode mode = md.second;
    auto pool = [mode](Ins v) -> Outs { return {masked_pool(v[0], v[1], mode)}; };
    cs.add(str(md.first, " [1, 1, 1]"), {data(randn({1, 1, 1}, seed += 1)), none()}, pool);
    cs.add(str(md.first, " [3, 7, 5]"), {data(randn({3, 7, 5}, seed += 1)), none()}, pool);
    cs.add(str(md.first, " masked [3, 7, 5]"), {data(randn({3, 7, 5}, seed += 1)), fixed(pool_mask(3, 7))}, pool);
    cs.add(str(md.first, " float mask [4, 2, 3]"),
           {data(randn({4, 2, 3}, seed += 1)), fixed(pool_mask(4, 2).to(DType::F32))}, pool);
    cs.add_big([&, sd = seed += 1] {
      return op_case(str(md.first, " masked [4, 2049, 131]"),
                     {data(randn({4, 2049, 131}, sd)), fixed(pool_mask(4, 2049))}, pool);
    });
  }
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ reduce

std::vector<OpCase> reduce_cases(bool big) {
  Cases cs{big, {}};
  const std::vector<std::vector<int64_t>> dim_sets = {{}, {0}, {1}, {2}, {-1}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2}};
  auto red = [](bool is_mean, std::vector<int64_t> dims, bool keepdim) {
    return [=](Ins v) -> Outs { return {is_mean ? mean(v[0], dims, keepdim) : sum(v[0], dims, keepdim)}; };
  };
  auto one = [&](const Shape& shape, const std::vector<int64_t>& dims, bool keepdim, bool is_mean, uint64_t sd) {
    OpCase c =
        op_case(str(is_mean ? "mean " : "sum ", shape_str(shape), " over ", shape_str(dims), keepdim ? " keepdim" : ""),
                {data(uniform(shape, sd, 0.5, 1.5))}, red(is_mean, dims, keepdim));
    c.tol = reduction_tol;
    return c;
  };
  uint64_t seed = 800;
  for (const auto& dims : dim_sets)
    for (bool keepdim : {false, true})
      for (bool is_mean : {false, true}) {
        cs.add(one({3, 5, 4}, dims, keepdim, is_mean, seed += 1));
        cs.add_big([&, sd = seed += 1] { return one({3, 257, 5}, dims, keepdim, is_mean, sd); });
      }
  cs.add(one({3, 5, 4}, {2, 0}, false, false, seed += 1));  // dims in any order
  cs.add(one({1, 6, 1}, {0, 1}, false, true, seed += 1));   // size-1 dims
  cs.add(one({1, 6, 1}, {2}, true, false, seed += 1));
  cs.add(one({}, {}, false, false, seed += 1));  // a scalar
  cs.add("mean(square(a - b)) broadcast", {data(randn({3, 1, 5}, 870)), data(randn({4, 5}, 871))},
         [](Ins v) -> Outs { return {mean(square(sub(v[0], v[1])), {1})}; });
  // Long rows (split in blocks), long columns with few outputs, many short rows, a middle-dim reduction.
  const std::pair<Shape, std::vector<int64_t>> longs[] = {
      {{1000003}, {}},   {{3, 100003}, {1}},   {{100003, 3}, {0}},
      {{70001, 7}, {1}}, {{5, 40009, 3}, {1}}, {{2, 3, 65537}, {0, 2}},
  };
  for (const auto& l : longs)
    for (bool is_mean : {false, true})
      cs.add_big([&, sd = seed += 1] {
        OpCase c = one(l.first, l.second, false, is_mean, sd);
        // A sum of 65k+ values near 1 is past f16's largest value (65504) on every device: not compared in f16.
        if (!is_mean) c.dtypes = {DType::F32, DType::BF16, DType::F64};
        return c;
      });
  // sum_to_shape is the backward of broadcasting (not recorded): compared, not gradchecked.
  for (const Shape& s : {Shape{5}, Shape{3, 1}, Shape{4, 1, 1}, Shape{}, Shape{1, 3, 5}}) {
    OpCase c = op_case(str("sum_to_shape [4, 3, 5] -> ", shape_str(s)), {fixed(uniform({4, 3, 5}, 860, 0.5, 1.5))},
                       [s](Ins v) -> Outs { return {sum_to_shape(v[0], s)}; });
    c.tol = reduction_tol;
    c.gradcheck = false;
    cs.add(c);
  }
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ selective_scan

struct ScanFlags {
  bool z, D_skip, bias, softplus, init, mask;
  bool reset = false;
  bool reverse = false;  // the scan of the flipped sequence, read in place
  // > 0: Bm and Cm are views into one [B, L, bc_view + 2N] input (x_proj's output after [dt | B | C]), read in place
  // on CUDA.
  int64_t bc_view = 0;
  std::string str() const {
    return mt::str("z=", z, " D=", D_skip, " bias=", bias, " softplus=", softplus, " init=", init, " mask=", mask,
                   " reset=", reset, reverse ? " reverse" : "",
                   bc_view > 0 ? mt::str(" B, C views after ", bc_view) : "");
  }
};

// Mask [B, L] with pads in the middle and at the end, and a fully padded first step of the last row.
Tensor scan_mask(int64_t B, int64_t L, DType dt) {
  std::vector<double> m(static_cast<size_t>(B * L), 1.0);
  for (int64_t b = 0; b < B; ++b) {
    if (L > 2) m[b * L + L / 2] = 0.0;
    m[b * L + L - 1] = b == B - 1 ? 0.0 : m[b * L + L - 1];
    if (b == B - 1) m[b * L] = 0.0;
  }
  return Tensor::from_vector(m, {B, L}, dt);
}

// A = -exp(A_log) with A_log = log(1..N) jittered per channel (S4D-real).
Tensor scan_A(int64_t D, int64_t N, uint64_t seed) {
  std::vector<double> a(static_cast<size_t>(D * N));
  const std::vector<double> jitter = uniform({D, N}, seed, 0.8, 1.2).to_vector();
  for (int64_t d = 0; d < D; ++d)
    for (int64_t n = 0; n < N; ++n) a[d * N + n] = -static_cast<double>(n + 1) * jitter[d * N + n];
  return Tensor::from_vector(a, {D, N}, DType::F64);
}

// Bm and Cm as the op receives them: v3 and v4 as given, or (bc_view > 0) views after bc_view columns of v3.
std::pair<Tensor, Tensor> scan_bc(const Tensor& v3, const Tensor& v4, int64_t bc_view, int64_t N) {
  if (bc_view == 0) return {v3, v4};
  const std::vector<Tensor> parts = split(v3, -1, {bc_view, N, N}, /*views=*/true);
  return {parts[1], parts[2]};
}

Tol scan_tol(DType dt) {
  return dt == DType::F64 ? Tol{1e-10, 1e-12, 0} : is_half(dt) ? Tol{3e-2, 5e-3, 0} : Tol{1e-3, 1e-4, 0};
}

OpCase scan_case(int64_t B, int64_t L, int64_t D, int64_t N, const ScanFlags& f, uint64_t seed,
                 DType mask_dtype = DType::I32) {
  // d' around 0.01 .. 0.5.
  OpCase c;
  c.what = str("B=", B, " L=", L, " D=", D, " N=", N, " ", f.str());
  c.inputs = {data(randn({B, L, D}, seed + 1)),
              data(f.softplus ? randn({B, L, D}, seed + 2, -2.5, 1.0) : uniform({B, L, D}, seed + 2, 0.01, 0.3)),
              master(scan_A(D, N, seed)),
              data(randn({B, L, f.bc_view > 0 ? f.bc_view + 2 * N : N}, seed + 3)),
              opt(f.bc_view == 0, data(randn({B, L, N}, seed + 4))),
              opt(f.D_skip, master(randn({D}, seed + 5, 1.0, 0.5))),
              opt(f.z, data(randn({B, L, D}, seed + 6))),
              opt(f.bias, master(uniform({D}, seed + 7, -0.5, 0.5))),
              opt(f.init, master(randn({B, D, N}, seed + 8, 0.0, 0.5))),
              opt(f.mask, fixed(scan_mask(B, L, mask_dtype))),
              opt(f.reset, fixed(doc_resets(B, L, seed + 9)))};
  const bool softplus = f.softplus, reverse = f.reverse;
  const int64_t bc_view = f.bc_view;
  c.run = [softplus, reverse, bc_view, N](Ins v) -> Outs {
    const auto [Bm, Cm] = scan_bc(v[3], v[4], bc_view, N);
    const SelectiveScanOut o =
        selective_scan(v[0], v[1], v[2], Bm, Cm, v[5], v[6], v[7], softplus, v[8], v[9], v[10], reverse);
    return {o.y, o.last_state};
  };
  c.tol = scan_tol;
  return c;
}

std::vector<OpCase> selective_scan_cases(bool big) {
  Cases cs{big, {}};
  uint64_t seed = 3000;
  // Every flag combination on a tiny problem, then lengths across the CUDA tiles (16 steps) and a float mask.
  for (int bits = 0; bits < 64; ++bits) {
    const ScanFlags f{(bits & 1) != 0, (bits & 2) != 0,  (bits & 4) != 0,
                      (bits & 8) != 0, (bits & 16) != 0, (bits & 32) != 0};
    cs.add(scan_case(2, 3, 2, 3, f, seed += 10));
  }
  const ScanFlags on{true, true, true, true, true, true}, off{false, false, false, false, false, false};
  for (int64_t L : {1, 17, 33})
    for (const ScanFlags& f : {on, off}) cs.add(scan_case(1, L, 3, 2, f, seed += 10));
  for (int64_t L : {1, 7})
    for (const ScanFlags& f : {on, off}) cs.add(scan_case(2, L, 3, 1, f, seed += 10));  // one state
  cs.add(scan_case(2, 13, 3, 4, on, seed += 10, DType::F32));
  // Document resets, with the initial state, the mask and z on and off (a reset on a masked step included).
  for (int bits = 0; bits < 8; ++bits)
    for (int64_t L : {1, 5, 18}) {
      const bool z = (bits & 1) != 0, init = (bits & 2) != 0, mask = (bits & 4) != 0;
      cs.add(scan_case(2, L, 3, 2, {z, true, true, true, init, mask, true}, seed += 10));
    }
  const ScanFlags on_reset{true, true, true, true, true, true, true};
  // A large case (CUDA only), compared in f32 and bf16.
  auto add_big_f32_bf16 = [&](int64_t B, int64_t L, int64_t D, int64_t N, const ScanFlags& f, uint64_t sd) {
    cs.add_big([=] {
      OpCase c = scan_case(B, L, D, N, f, sd);
      c.dtypes = {DType::F32, DType::BF16};
      return c;
    });
  };
  // CUDA: N at and inside the template bounds (1, 5, 16, 17, 33, 64), D = 131 not a multiple of 32, L across tiles
  // and (B * D small) chunks; B = 8, D = 1024 runs as one chunk of many tiles.
  for (int64_t L : {1, 7, 2047, 2048, 2049, 4097})
    for (int64_t N : {1, 16, 64})
      for (const ScanFlags& f : {on, off}) add_big_f32_bf16(2, L, 131, N, f, seed += 10);
  add_big_f32_bf16(8, 300, 1024, 16, on, 3900);
  cs.add_big([&] { return scan_case(3, 257, 37, 5, on, 3910); });
  cs.add_big([&] { return scan_case(1, 130, 13, 33, on, 3920); });
  cs.add_big([&] { return scan_case(2, 300, 20, 17, off, 3930); });
  cs.add_big([&] { return scan_case(2, 70, 5, 64, off, 3940); });
  // Resets across tiles and chunks (B = 1 and 2 at long L run in several chunks).
  for (int64_t L : {7, 2049, 4097})
    for (int64_t N : {16, 64}) add_big_f32_bf16(L > 4000 ? 1 : 2, L, 131, N, on_reset, seed += 10);
  add_big_f32_bf16(8, 300, 1024, 16, on_reset, 3950);
  cs.add_big([&] { return scan_case(3, 257, 37, 5, on_reset, 3960); });
  // The reverse scan: every flag on a tiny problem with resets on, then across tiles, chunks (B = 1 at long L), N
  // bounds and D = 131, with the mask and resets.
  for (int bits = 0; bits < 64; bits += 3) {
    ScanFlags f{
        (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0, (bits & 16) != 0, (bits & 32) != 0, true};
    f.reverse = true;
    cs.add(scan_case(2, 5, 2, 3, f, seed += 10));
  }
  ScanFlags rev_on = on_reset, rev_off = off;
  rev_on.reverse = rev_off.reverse = true;
  for (int64_t L : {1, 17, 33})
    for (const ScanFlags& f : {rev_on, rev_off}) cs.add(scan_case(1, L, 3, 2, f, seed += 10));
  for (int64_t L : {7, 2049, 4097})
    for (int64_t N : {16, 64})
      for (const ScanFlags& f : {rev_on, rev_off}) add_big_f32_bf16(L > 4000 ? 1 : 2, L, 131, N, f, seed += 10);
  add_big_f32_bf16(8, 300, 1024, 16, rev_on, 3970);
  cs.add_big([&] { return scan_case(3, 257, 37, 5, rev_on, 3980); });
  // B and C read in place from one wider tensor: offsets and row strides that serve the 16-byte copies (8 in front,
  // N = 16 or 64) and ones that do not (3 in front), forward and reverse.
  for (int64_t pad : {3, 8}) {
    ScanFlags f = on_reset, fr = rev_on, fo = off;
    f.bc_view = fr.bc_view = fo.bc_view = pad;
    cs.add(scan_case(2, 5, 3, 4, f, seed += 10));
    cs.add(scan_case(1, 17, 2, 2, fr, seed += 10));
    for (int64_t N : {16, 64})
      for (const ScanFlags& g : {f, fr, fo}) add_big_f32_bf16(2, 2049, 131, N, g, seed += 10);
  }
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ selective_scan_bidir

// Both directions' inputs (u, delta, A, B (or the wide tensor B and C are views of), C, D_skip, delta_bias each),
// then the shared z, mask and resets; f.init and f.reverse are not used.
OpCase bidir_case(int64_t B, int64_t L, int64_t D, int64_t N, const ScanFlags& f, uint64_t seed) {
  OpCase c;
  c.what = str("B=", B, " L=", L, " D=", D, " N=", N, " ", f.str());
  for (uint64_t dir = 0; dir < 2; ++dir) {
    const uint64_t sd = seed + 20 * dir;
    for (OpInput in :
         {data(randn({B, L, D}, sd + 1)),
          data(f.softplus ? randn({B, L, D}, sd + 2, -2.5, 1.0) : uniform({B, L, D}, sd + 2, 0.01, 0.3)),
          master(scan_A(D, N, sd)), data(randn({B, L, f.bc_view > 0 ? f.bc_view + 2 * N : N}, sd + 3)),
          opt(f.bc_view == 0, data(randn({B, L, N}, sd + 4))), opt(f.D_skip, master(randn({D}, sd + 5, 1.0, 0.5))),
          opt(f.bias, master(uniform({D}, sd + 7, -0.5, 0.5)))})
      c.inputs.push_back(in);
  }
  c.inputs.push_back(opt(f.z, data(randn({B, L, D}, seed + 50))));
  c.inputs.push_back(opt(f.mask, fixed(scan_mask(B, L, DType::I32))));
  c.inputs.push_back(opt(f.reset, fixed(doc_resets(B, L, seed + 51))));
  const bool softplus = f.softplus;
  const int64_t bc_view = f.bc_view;
  c.run = [softplus, bc_view, N](Ins v) -> Outs {
    auto dir = [&](size_t o) {
      const auto [Bm, Cm] = scan_bc(v[o + 3], v[o + 4], bc_view, N);
      return ScanDirection{v[o], v[o + 1], v[o + 2], Bm, Cm, v[o + 5], v[o + 6]};
    };
    const SelectiveScanBidirOut o = selective_scan_bidir(dir(0), dir(7), v[14], softplus, v[15], v[16]);
    return {o.y_fwd, o.y_rev};
  };
  c.tol = scan_tol;
  return c;
}

std::vector<OpCase> selective_scan_bidir_cases(bool big) {
  Cases cs{big, {}};
  uint64_t seed = 5000;
  // Flag combinations on a tiny problem (resets on in half of them), then lengths across the CUDA tiles.
  for (int bits = 0; bits < 64; bits += 3) {
    ScanFlags f{(bits & 1) != 0, (bits & 2) != 0,  (bits & 4) != 0, (bits & 8) != 0,
                false,           (bits & 16) != 0, (bits & 32) != 0};
    cs.add(bidir_case(2, 5, 2, 3, f, seed += 100));
  }
  const ScanFlags on{true, true, true, true, false, true, true}, off{false, false, false, false, false, false};
  for (int64_t L : {1, 17, 33})
    for (const ScanFlags& f : {on, off}) cs.add(bidir_case(1, L, 3, 2, f, seed += 100));
  ScanFlags view = on;
  view.bc_view = 3;
  cs.add(bidir_case(2, 6, 3, 4, view, seed += 100));
  // CUDA: several chunks (B = 1 and 2 at long L), N = 16 and 64, D = 131, one chunk of many tiles at B = 8, and B, C
  // as views that do (8 in front) and do not (3) serve the 16-byte copies; with and without masks and resets.
  auto add_big = [&](int64_t B, int64_t L, int64_t D, int64_t N, const ScanFlags& f, uint64_t sd) {
    cs.add_big([=] {
      OpCase c = bidir_case(B, L, D, N, f, sd);
      c.dtypes = {DType::F32, DType::BF16};
      return c;
    });
  };
  for (int64_t L : {7, 2049, 4097})
    for (int64_t N : {16, 64})
      for (const ScanFlags& f : {on, off}) add_big(L > 4000 ? 1 : 2, L, 131, N, f, seed += 100);
  add_big(8, 300, 1024, 16, on, seed += 100);
  for (int64_t pad : {3, 8}) {
    ScanFlags f = on;
    f.bc_view = pad;
    add_big(2, 2049, 131, 16, f, seed += 100);
  }
  cs.add_big([&] { return bidir_case(3, 257, 37, 5, on, 5990); });
  return cs.v;
}

// ------------------------------------------------------------------------------------------------ shape_ops

std::vector<OpCase> shape_ops_cases(bool big) {
  Cases cs{big, {}};
  cs.add("reshape of a transpose", {data(randn({7, 3, 3}, 1))}, [](Ins v) -> Outs {
    return {reshape(transpose(v[0], 0, 2), {-1, 7})};
  });
  cs.add("permute", {data(randn({2, 3, 5}, 2))}, [](Ins v) -> Outs { return {permute(v[0], {2, 0, 1})}; });
  cs.add("slice with a step", {data(randn({3, 17}, 3))}, [](Ins v) -> Outs { return {slice(v[0], 1, -13, 17, 3)}; });
  cs.add("concat", {data(randn({3, 1, 4}, 4)), data(randn({3, 5, 4}, 5)), data(randn({3, 2, 4}, 6))},
         [](Ins v) -> Outs {
           return {concat({v[0], v[1], v[2]}, 1)};
         });
  cs.add("split of the last dim, an empty part", {data(randn({3, 2, 9}, 11))}, [](Ins v) -> Outs {
    return split(v[0], -1, {4, 0, 2, 3});
  });
  cs.add("split of a strided view", {data(randn({6, 5}, 12))}, [](Ins v) -> Outs {
    return split(transpose(v[0], 0, 1), 1, {1, 5});
  });
  cs.add("flip", {data(randn({5, 3, 2}, 7))}, [](Ins v) -> Outs { return {flip(v[0], 1)}; });
  cs.add("squeeze / unsqueeze / contiguous", {data(randn({5, 3}, 8))},
         [](Ins v) -> Outs { return {squeeze(unsqueeze(contiguous(transpose(v[0], 0, 1)), 1), 1)}; });
  const std::pair<const char*, Tensor (*)(const Tensor&)> views[] = {
      {"reshape",
       [](const Tensor& x) {
         return reshape(x, {4, -1});
       }},
      {"transpose", [](const Tensor& x) { return transpose(x, 0, 1); }},
      {"unsqueeze", [](const Tensor& x) { return unsqueeze(x, 1); }},
      {"squeeze", [](const Tensor& x) { return squeeze(unsqueeze(x, 1), 1); }},
      {"slice 1:7:2", [](const Tensor& x) { return slice(x, 1, 1, 7, 2); }},
      {"slice of a slice", [](const Tensor& x) { return slice(slice(x, 1, 1, 7), 1, 0, 3, 2); }},
      {"slice -2:-1 of dim 0", [](const Tensor& x) { return slice(x, 0, -2, -1, 2); }},
      {"flip of a permute",
       [](const Tensor& x) {
         return flip(permute(unsqueeze(x, 2), {1, 0, 2}), -1);
       }},
      {"concat with itself",
       [](const Tensor& x) {
         return concat({x, flip(x, 0)}, 0);
       }},
  };
  for (const auto& vw : views) {
    const auto f = vw.second;
    cs.add(vw.first, {data(randn({2, 8}, 20))}, [f](Ins v) -> Outs { return {f(v[0])}; });
  }
  cs.add_big([] {
    return op_case("slice [5, 257]", {data(randn({5, 257}, 9))},
                   [](Ins v) -> Outs { return {slice(v[0], 1, -200, 257, 3)}; });
  });
  cs.add_big([] {
    return op_case("permute [2, 3, 257]", {data(randn({2, 3, 257}, 10))}, [](Ins v) -> Outs {
      return {permute(v[0], {2, 0, 1})};
    });
  });
  // Pure data movement: exact, but for gradients that add up in a 16-bit dtype (an input used twice).
  for (OpCase& c : cs.v) c.tol = [](DType dt) { return is_half(dt) ? Tol{8e-3, 0, 0} : Tol{0, 0, 0}; };
  return cs.v;
}

}  // namespace

const std::vector<OpEntry>& op_table() {
  static const std::vector<OpEntry> table = {
      {"adamw", no_cases, adamw_cpu_check, adamw_cuda_check},
      {"causal_conv1d", causal_conv1d_cases, nullptr, nullptr},
      {"cross_entropy", cross_entropy_cases, nullptr, nullptr},
      {"decode_gemv", no_cases, decode_gemv_cpu_check, decode_gemv_cuda_check},
      {"elementwise", elementwise_cases, nullptr, nullptr},
      {"embedding", embedding_cases, nullptr, nullptr},
      {"gemm", gemm_cases, nullptr, nullptr},
      {"grad_check", no_cases, grad_check_cpu_check, grad_check_cuda_check},
      {"linear_cross_entropy", linear_cross_entropy_cases, nullptr, nullptr},
      {"norm", norm_cases, nullptr, nullptr},
      {"pool", pool_cases, nullptr, nullptr},
      {"reduce", reduce_cases, nullptr, nullptr},
      {"sampling", no_cases, sampling_cpu_check, sampling_cuda_check},
      {"selective_scan", selective_scan_cases, nullptr, nullptr},
      {"selective_scan_bidir", selective_scan_bidir_cases, nullptr, nullptr},
      {"shape_ops", shape_ops_cases, nullptr, nullptr},
      {"ssm_step", no_cases, ssm_step_cpu_check, ssm_step_cuda_check},
  };
  return table;
}

}  // namespace mt::test
