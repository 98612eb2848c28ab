// Selective scan on the CPU: values against a naive triple loop, gradcheck in f64 for every flag, chunked
// training with the state carried between calls, masking, dtypes, error messages, and the reverse scan against the
// forward scan of the flipped sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include <omp.h>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "autograd/ops/selective_scan.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/selective_scan.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::seed_loss;

namespace {

struct Flags {
  bool z = false, D_skip = false, bias = false, softplus = false, init = false, mask = false;
  std::string str() const {
    return std::string("z=") + (z ? "1" : "0") + " D=" + (D_skip ? "1" : "0") + " bias=" + (bias ? "1" : "0") +
           " softplus=" + (softplus ? "1" : "0") + " init=" + (init ? "1" : "0") + " mask=" + (mask ? "1" : "0");
  }
};

Flags all_flags(bool on) { return Flags{on, on, on, on, on, on}; }

// Inputs of one call; optional ones are undefined when the flag is off.
struct ScanData {
  Tensor u, delta, A, Bm, Cm, D_skip, z, delta_bias, init, mask;
  bool softplus = false;
};

// Mask [B, L] with pads in the middle and at the end (L >= 3), or b = 1 fully padded for L == 1.
Tensor make_mask(int64_t B, int64_t L, DType dt) {
  std::vector<double> m(static_cast<size_t>(B * L), 1.0);
  auto set0 = [&](int64_t b, int64_t t) {
    if (b < B && t >= 0 && t < L) m[b * L + t] = 0.0;
  };
  if (L == 1) {
    set0(1, 0);
  } else {
    if (L > 2) set0(0, L / 2);
    set0(0, L - 1);
    set0(1, 1);
    set0(1, L - 1);
    if (L > 3) set0(1, L - 2);
  }
  return Tensor::from_vector(m, {B, L}, dt);
}

ScanData make_data(int64_t B, int64_t L, int64_t D, int64_t N, const Flags& f, uint64_t seed, DType dt = DType::F64) {
  Generator gen(seed);
  const DType wdt = dt == DType::F64 ? DType::F64 : DType::F32;
  ScanData s;
  s.softplus = f.softplus;
  s.u = Tensor::randn({B, L, D}, gen, 0.0, 1.0, dt);
  s.delta = f.softplus ? Tensor::randn({B, L, D}, gen, -1.0, 0.5, dt) : Tensor::rand({B, L, D}, gen, 0.05, 0.5, dt);
  s.A = Tensor::rand({D, N}, gen, -2.0, -0.3, wdt);
  s.Bm = Tensor::randn({B, L, N}, gen, 0.0, 1.0, dt);
  s.Cm = Tensor::randn({B, L, N}, gen, 0.0, 1.0, dt);
  if (f.D_skip) s.D_skip = Tensor::randn({D}, gen, 0.0, 1.0, wdt);
  if (f.z) s.z = Tensor::randn({B, L, D}, gen, 0.0, 1.0, dt);
  if (f.bias) s.delta_bias = Tensor::rand({D}, gen, 0.0, 0.3, wdt);
  if (f.init) s.init = Tensor::randn({B, D, N}, gen, 0.0, 0.5, wdt);
  if (f.mask) s.mask = make_mask(B, L, DType::I64);
  return s;
}

SelectiveScanOut run(const ScanData& s) {
  return selective_scan(s.u, s.delta, s.A, s.Bm, s.Cm, s.D_skip, s.z, s.delta_bias, s.softplus, s.init, s.mask);
}

// Direct triple loop over (b, d), t, n in double, written independently of the kernel.
void naive_scan(const ScanData& s, std::vector<double>& y, std::vector<double>& last) {
  const int64_t B = s.u.size(0), L = s.u.size(1), D = s.u.size(2), N = s.Bm.size(2);
  auto vec = [](const Tensor& t) { return t.defined() ? t.to_vector() : std::vector<double>(); };
  const auto u = vec(s.u), delta = vec(s.delta), A = vec(s.A), Bm = vec(s.Bm), Cm = vec(s.Cm), Dk = vec(s.D_skip),
             z = vec(s.z), bias = vec(s.delta_bias), init = vec(s.init), mask = vec(s.mask);
  y.assign(static_cast<size_t>(B * L * D), 0.0);
  last.assign(static_cast<size_t>(B * D * N), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t d = 0; d < D; ++d) {
      std::vector<double> h(N, 0.0);
      if (!init.empty())
        for (int64_t n = 0; n < N; ++n) h[n] = init[(b * D + d) * N + n];
      for (int64_t t = 0; t < L; ++t) {
        if (!mask.empty() && mask[b * L + t] == 0.0) continue;  // y stays 0, state unchanged
        const int64_t i = (b * L + t) * D + d;
        double dt = delta[i] + (bias.empty() ? 0.0 : bias[d]);
        if (s.softplus) dt = dt > 20 ? dt : std::log(1.0 + std::exp(dt));
        double out = Dk.empty() ? 0.0 : Dk[d] * u[i];
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(dt * A[d * N + n]) * h[n] + dt * Bm[(b * L + t) * N + n] * u[i];
          out += Cm[(b * L + t) * N + n] * h[n];
        }
        if (!z.empty()) out *= z[i] / (1.0 + std::exp(-z[i]));
        y[i] = out;
      }
      for (int64_t n = 0; n < N; ++n) last[(b * D + d) * N + n] = h[n];
    }
  }
}

// Test-only differentiable op: the flattened concatenation of CPU tensors (one gradcheck over several outputs).
Tensor pack(const std::vector<Tensor>& ts) {
  std::vector<double> vals;
  std::vector<Shape> shapes;
  std::vector<DType> dts;
  for (const Tensor& t : ts) {
    const auto v = t.to_vector();
    vals.insert(vals.end(), v.begin(), v.end());
    shapes.push_back(t.shape());
    dts.push_back(t.dtype());
  }
  Tensor out = Tensor::from_vector(vals, {static_cast<int64_t>(vals.size())}, DType::F64);
  if (any_requires_grad(ts)) {
    auto node = make_lambda_node("test_pack", [shapes, dts](const std::vector<Tensor>& g) {
      const auto gv = g[0].to_vector();
      std::vector<Tensor> r;
      size_t off = 0;
      for (size_t i = 0; i < shapes.size(); ++i) {
        const size_t n = static_cast<size_t>(shape_numel(shapes[i]));
        r.push_back(
            Tensor::from_vector(std::vector<double>(gv.begin() + off, gv.begin() + off + n), shapes[i], dts[i]));
        off += n;
      }
      return r;
    });
    record_node(node, ts, {out});
  }
  return out;
}

// which: 0 = y and last_state together, 1 = y only, 2 = last_state only.
GradcheckResult gradcheck_scan(const ScanData& s, int which = 0) {
  std::vector<Tensor> inputs;
  std::vector<int> slot(9, -1);
  const Tensor* all[9] = {&s.u, &s.delta, &s.A, &s.Bm, &s.Cm, &s.D_skip, &s.z, &s.delta_bias, &s.init};
  for (int k = 0; k < 9; ++k) {
    if (!all[k]->defined()) continue;
    slot[k] = static_cast<int>(inputs.size());
    inputs.push_back(*all[k]);
  }
  const Tensor mask = s.mask;
  const bool softplus = s.softplus;
  auto f = [slot, mask, softplus, which](const std::vector<Tensor>& in) {
    auto get = [&](int k) { return slot[k] >= 0 ? in[slot[k]] : Tensor(); };
    SelectiveScanOut o =
        selective_scan(get(0), get(1), get(2), get(3), get(4), get(5), get(6), get(7), softplus, get(8), mask);
    if (which == 1) return o.y;
    if (which == 2) return o.last_state;
    return pack({o.y, o.last_state});
  };
  return gradcheck(f, inputs);
}

// Copy of timesteps [t0, t1) of a [B, L, ...] tensor (dim 1), as a fresh tensor.
Tensor time_slice(const Tensor& t, int64_t t0, int64_t t1) {
  Shape shape = t.shape();
  shape[1] = t1 - t0;
  return t.as_strided(shape, t.strides(), t.offset() + t0 * t.stride(1)).clone();
}

std::vector<double> time_slice_v(const Tensor& t, int64_t t0, int64_t t1) { return time_slice(t, t0, t1).to_vector(); }

void expect_vec_near(const std::vector<double>& a, const std::vector<double>& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], tol * (1.0 + std::fabs(b[i]))) << what << " [" << i << "]";
}

}  // namespace

TEST(SelectiveScan, ForwardMatchesNaiveLoopForAllFlags) {
  for (int bits = 0; bits < 64; ++bits) {
    Flags f{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0, (bits & 16) != 0, (bits & 32) != 0};
    SCOPED_TRACE(f.str());
    ScanData s = make_data(2, 7, 3, 3, f, 100 + bits);
    SelectiveScanOut o = run(s);
    ASSERT_EQ(o.y.shape(), (Shape{2, 7, 3}));
    ASSERT_EQ(o.last_state.shape(), (Shape{2, 3, 3}));
    EXPECT_EQ(o.y.dtype(), DType::F64);
    EXPECT_EQ(o.last_state.dtype(), DType::F64);
    std::vector<double> y, last;
    naive_scan(s, y, last);
    expect_vec_near(o.y.to_vector(), y, 1e-12, "y");
    expect_vec_near(o.last_state.to_vector(), last, 1e-12, "last_state");
  }
}

TEST(SelectiveScan, ForwardF32MatchesNaiveLoop) {
  ScanData s = make_data(2, 33, 5, 16, all_flags(true), 7, DType::F32);
  SelectiveScanOut o = run(s);
  EXPECT_EQ(o.y.dtype(), DType::F32);
  EXPECT_EQ(o.last_state.dtype(), DType::F32);
  std::vector<double> y, last;
  naive_scan(s, y, last);
  expect_vec_near(o.y.to_vector(), y, 1e-4, "y");
  expect_vec_near(o.last_state.to_vector(), last, 1e-4, "last_state");
}

TEST(SelectiveScan, SoftplusAboveThresholdIsIdentity) {
  // delta + bias > 20: softplus is the identity there (PyTorch / mamba threshold), so the two runs agree.
  Flags f = all_flags(false);
  ScanData s = make_data(2, 5, 3, 2, f, 3);
  Generator gen(5);
  s.delta = Tensor::rand({2, 5, 3}, gen, 20.5, 22.0, DType::F64);
  s.A = Tensor::rand({3, 2}, gen, -0.02, -0.01, DType::F64);
  SelectiveScanOut plain = run(s);
  s.softplus = true;
  SelectiveScanOut sp = run(s);
  expect_vec_near(sp.y.to_vector(), plain.y.to_vector(), 1e-14, "y");
  EXPECT_GRADCHECK(gradcheck_scan(s));
}

TEST(SelectiveScan, GradcheckOneOutputOnly) {
  // Only y, or only last_state, receives a gradient: the other output's gradient is zero-filled by the tape.
  for (bool on : {false, true}) {
    ScanData s = make_data(2, 7, 3, 3, all_flags(on), 77);
    EXPECT_GRADCHECK(gradcheck_scan(s, 1));
    EXPECT_GRADCHECK(gradcheck_scan(s, 2));
  }
}

TEST(SelectiveScan, ChunkedWithCarriedStateEqualsOneCall) {
  for (bool with_mask : {false, true}) {
    SCOPED_TRACE(with_mask ? "mask" : "no mask");
    const int64_t B = 2, L = 10, D = 3, N = 3, L1 = 6;
    Flags f = all_flags(true);
    f.mask = with_mask;
    ScanData s = make_data(B, L, D, N, f, 4242);
    if (with_mask) {  // pads in both chunks, including the last step of the first chunk
      std::vector<double> m(B * L, 1.0);
      m[0 * L + 2] = 0;
      m[0 * L + 5] = 0;
      m[0 * L + 9] = 0;
      m[1 * L + 6] = 0;
      m[1 * L + 7] = 0;
      s.mask = Tensor::from_vector(m, {B, L}, DType::I32);
    }
    Generator gen(5);
    Tensor Wy = Tensor::randn({B, L, D}, gen, 0.0, 1.0, DType::F64);
    Tensor Ws = Tensor::randn({B, D, N}, gen, 0.0, 1.0, DType::F64);

    // One call over L = 10.
    ScanData full = s;
    for (Tensor* t :
         {&full.u, &full.delta, &full.A, &full.Bm, &full.Cm, &full.D_skip, &full.z, &full.delta_bias, &full.init}) {
      *t = t->clone();
      set_requires_grad(*t);
    }
    SelectiveScanOut of = run(full);
    backward(seed_loss({of.y, of.last_state}, {Wy, Ws}));

    // Two calls, L = 6 then L = 4, the second starting from the first's last_state. A, D_skip, delta_bias and
    // the initial state are shared leaves (their gradients accumulate over both calls).
    ScanData c1 = s, c2 = s;
    for (Tensor* t : {&s.A, &s.D_skip, &s.delta_bias, &s.init}) {
      *t = t->clone();
      set_requires_grad(*t);
    }
    c1.A = c2.A = s.A;
    c1.D_skip = c2.D_skip = s.D_skip;
    c1.delta_bias = c2.delta_bias = s.delta_bias;
    c1.init = s.init;
    for (auto pr : {std::make_pair(&c1, std::make_pair(int64_t(0), L1)), std::make_pair(&c2, std::make_pair(L1, L))}) {
      ScanData& c = *pr.first;
      const int64_t a = pr.second.first, e = pr.second.second;
      for (Tensor* t : {&c.u, &c.delta, &c.Bm, &c.Cm, &c.z}) {
        *t = time_slice(*t, a, e);
        set_requires_grad(*t);
      }
      if (c.mask.defined()) c.mask = time_slice(c.mask, a, e);
    }
    SelectiveScanOut o1 = run(c1);
    c2.init = o1.last_state;  // carried state (non-leaf: its gradient flows back into the first call)
    SelectiveScanOut o2 = run(c2);
    backward(seed_loss({o1.y, o2.y, o2.last_state}, {time_slice(Wy, 0, L1), time_slice(Wy, L1, L), Ws}));

    const double tol = 1e-12;
    expect_vec_near(o1.y.to_vector(), time_slice_v(of.y, 0, L1), tol, "y chunk 1");
    expect_vec_near(o2.y.to_vector(), time_slice_v(of.y, L1, L), tol, "y chunk 2");
    expect_vec_near(o2.last_state.to_vector(), of.last_state.to_vector(), tol, "last_state");
    const Tensor ScanData::*per_step[] = {&ScanData::u, &ScanData::delta, &ScanData::Bm, &ScanData::Cm, &ScanData::z};
    const char* names[] = {"du", "ddelta", "dBm", "dCm", "dz"};
    for (int k = 0; k < 5; ++k) {
      expect_vec_near(grad(c1.*per_step[k]).to_vector(), time_slice_v(grad(full.*per_step[k]), 0, L1), tol,
                      std::string(names[k]) + " chunk 1");
      expect_vec_near(grad(c2.*per_step[k]).to_vector(), time_slice_v(grad(full.*per_step[k]), L1, L), tol,
                      std::string(names[k]) + " chunk 2");
    }
    expect_vec_near(grad(s.A).to_vector(), grad(full.A).to_vector(), tol, "dA");
    expect_vec_near(grad(s.D_skip).to_vector(), grad(full.D_skip).to_vector(), tol, "dD_skip");
    expect_vec_near(grad(s.delta_bias).to_vector(), grad(full.delta_bias).to_vector(), tol, "ddelta_bias");
    expect_vec_near(grad(s.init).to_vector(), grad(full.init).to_vector(), tol, "dinitial_state");
  }
}

TEST(SelectiveScan, MaskedPositionsLeaveStateUnchanged) {
  const int64_t B = 2, L = 9, D = 3, N = 4;
  ScanData s = make_data(B, L, D, N, all_flags(true), 31);
  // b = 0: pads in the middle; b = 1: pads in the middle and at the end.
  std::vector<double> m = {1, 1, 0, 0, 1, 1, 0, 1, 1,  //
                           1, 0, 1, 1, 0, 1, 1, 0, 0};
  s.mask = Tensor::from_vector(m, {B, L}, DType::F32);
  for (Tensor* t : {&s.u, &s.delta, &s.Bm, &s.Cm, &s.z}) set_requires_grad(*t);
  SelectiveScanOut o = run(s);
  Generator gen(8);
  backward(seed_loss({o.y, o.last_state}, {Tensor::randn({B, L, D}, gen, 0.0, 1.0, DType::F64),
                                           Tensor::randn({B, D, N}, gen, 0.0, 1.0, DType::F64)}));
  const auto y = o.y.to_vector(), last = o.last_state.to_vector();
  const auto du = grad(s.u).to_vector(), ddelta = grad(s.delta).to_vector(), dz = grad(s.z).to_vector(),
             dB = grad(s.Bm).to_vector(), dC = grad(s.Cm).to_vector();
  for (int64_t b = 0; b < B; ++b) {
    // The same sequence with the padded steps removed, as its own B = 1 call.
    std::vector<int64_t> real;
    for (int64_t t = 0; t < L; ++t)
      if (m[b * L + t] != 0) real.push_back(t);
    const int64_t Lr = static_cast<int64_t>(real.size());
    auto compact = [&](const Tensor& t, int64_t width) {
      const auto v = t.to_vector();
      std::vector<double> r;
      for (int64_t t2 : real)
        for (int64_t k = 0; k < width; ++k) r.push_back(v[(b * L + t2) * width + k]);
      return Tensor::from_vector(r, {1, Lr, width}, DType::F64);
    };
    ScanData c = s;
    c.u = compact(s.u, D);
    c.delta = compact(s.delta, D);
    c.z = compact(s.z, D);
    c.Bm = compact(s.Bm, N);
    c.Cm = compact(s.Cm, N);
    const auto init_v = s.init.to_vector();
    c.init = Tensor::from_vector(std::vector<double>(init_v.begin() + b * D * N, init_v.begin() + (b + 1) * D * N),
                                 {1, D, N}, DType::F64);
    c.mask = Tensor();
    SelectiveScanOut oc;
    {
      NoGradGuard ng;
      oc = run(c);
    }
    const auto yc = oc.y.to_vector(), lc = oc.last_state.to_vector();
    for (int64_t n = 0; n < D * N; ++n) EXPECT_NEAR(last[b * D * N + n], lc[n], 1e-12) << "b " << b;
    int64_t r = 0;
    for (int64_t t = 0; t < L; ++t) {
      const bool is_real = m[b * L + t] != 0;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t i = (b * L + t) * D + d;
        if (is_real) {
          EXPECT_NEAR(y[i], yc[r * D + d], 1e-12) << "b " << b << " t " << t;
        } else {
          EXPECT_EQ(y[i], 0.0);
          EXPECT_EQ(du[i], 0.0);
          EXPECT_EQ(ddelta[i], 0.0);
          EXPECT_EQ(dz[i], 0.0);
        }
      }
      for (int64_t n = 0; n < N && !is_real; ++n) {
        EXPECT_EQ(dB[(b * L + t) * N + n], 0.0);
        EXPECT_EQ(dC[(b * L + t) * N + n], 0.0);
      }
      if (is_real) ++r;
    }
  }
  // An all-ones mask is the same as no mask.
  ScanData ones = make_data(B, L, D, N, all_flags(true), 31);
  ones.mask = Tensor();
  SelectiveScanOut a = run(ones);
  ones.mask = Tensor::ones({B, L}, DType::I64);
  SelectiveScanOut bb = run(ones);
  EXPECT_EQ(a.y.to_vector(), bb.y.to_vector());
  EXPECT_EQ(a.last_state.to_vector(), bb.last_state.to_vector());
}

TEST(SelectiveScan, HalfInputsComputeInF32) {
  for (DType dt : {DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    ScanData s = make_data(2, 11, 4, 5, all_flags(true), 12, dt);
    ScanData s32 = s;
    for (Tensor* t : {&s32.u, &s32.delta, &s32.Bm, &s32.Cm, &s32.z}) *t = t->to(DType::F32);
    for (Tensor* t : {&s.u, &s.delta, &s.A, &s.Bm, &s.Cm, &s.D_skip, &s.z, &s.delta_bias, &s.init})
      set_requires_grad(*t);
    SelectiveScanOut o = run(s);
    SelectiveScanOut o32 = run(s32);
    EXPECT_EQ(o.y.dtype(), dt);
    EXPECT_EQ(o.last_state.dtype(), DType::F32);
    // Same f32 computation on the same (rounded) inputs: the outputs are the f32 results rounded once.
    EXPECT_EQ(o.y.to_vector(), o32.y.to(dt).to_vector());
    EXPECT_EQ(o.last_state.to_vector(), o32.last_state.to_vector());
    Generator gen(3);
    backward(seed_loss({o.y, o.last_state}, {Tensor::randn({2, 11, 4}, gen, 0.0, 1.0, dt),
                                             Tensor::randn({2, 4, 5}, gen, 0.0, 1.0, DType::F32)}));
    for (Tensor* t : {&s.u, &s.delta, &s.Bm, &s.Cm, &s.z}) EXPECT_EQ(grad(*t).dtype(), dt);
    for (Tensor* t : {&s.A, &s.D_skip, &s.delta_bias, &s.init}) EXPECT_EQ(grad(*t).dtype(), DType::F32);
    for (Tensor* t : {&s.u, &s.delta, &s.A, &s.Bm, &s.Cm, &s.D_skip, &s.z, &s.delta_bias, &s.init})
      for (double v : grad(*t).to_vector()) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(SelectiveScan, NoGradRecordsNothing) {
  ScanData s = make_data(1, 4, 2, 2, all_flags(true), 1);
  SelectiveScanOut o = run(s);
  EXPECT_FALSE(requires_grad(o.y));
  EXPECT_FALSE(requires_grad(o.last_state));
  set_requires_grad(s.u);
  {
    NoGradGuard ng;
    SelectiveScanOut o2 = run(s);
    EXPECT_FALSE(requires_grad(o2.y));
  }
  SelectiveScanOut o3 = run(s);
  EXPECT_TRUE(requires_grad(o3.y));
  EXPECT_TRUE(requires_grad(o3.last_state));
  EXPECT_FALSE(o3.y.same(s.u));
  current_tape().clear();
}

TEST(SelectiveScan, BadInputsNameTheArgument) {
  ScanData s = make_data(2, 5, 3, 4, all_flags(true), 2);
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Shape);
      const std::string msg = e.what();
      EXPECT_NE(msg.find("selective_scan"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  Generator gen(1);
  expect_error(
      [&] {
        ScanData t = s;
        t.u = Tensor::randn({2, 5}, gen, 0, 1, DType::F64);
        run(t);
      },
      "u must be");
  expect_error(
      [&] {
        ScanData t = s;
        t.delta = Tensor::randn({2, 5, 4}, gen, 0, 1, DType::F64);
        run(t);
      },
      "delta");
  expect_error(
      [&] {
        ScanData t = s;
        t.Bm = Tensor::randn({2, 6, 4}, gen, 0, 1, DType::F64);
        run(t);
      },
      "Bm");
  expect_error(
      [&] {
        ScanData t = s;
        t.Cm = Tensor::randn({2, 5, 3}, gen, 0, 1, DType::F64);
        run(t);
      },
      "Cm");
  expect_error(
      [&] {
        ScanData t = s;
        t.z = Tensor::randn({2, 5, 2}, gen, 0, 1, DType::F64);
        run(t);
      },
      "z must");
  expect_error(
      [&] {
        ScanData t = s;
        t.A = Tensor::randn({3, 5}, gen, 0, 1, DType::F64);
        run(t);
      },
      "A must");
  expect_error(
      [&] {
        ScanData t = s;
        t.A = t.A.to(DType::F32);
        run(t);
      },
      "A must be f64");
  expect_error(
      [&] {
        ScanData t = s;
        t.D_skip = Tensor::randn({4}, gen, 0, 1, DType::F64);
        run(t);
      },
      "D_skip");
  expect_error(
      [&] {
        ScanData t = s;
        t.delta_bias = t.delta_bias.to(DType::F32);
        run(t);
      },
      "delta_bias");
  expect_error(
      [&] {
        ScanData t = s;
        t.init = Tensor::randn({2, 4, 3}, gen, 0, 1, DType::F64);
        run(t);
      },
      "initial_state");
  expect_error(
      [&] {
        ScanData t = s;
        t.mask = Tensor::ones({2, 4}, DType::I32);
        run(t);
      },
      "mask");
  expect_error(
      [&] {
        ScanData t = s;
        t.Bm = t.Bm.to(DType::F32);
        run(t);
      },
      "share device and dtype");
  expect_error(
      [&] {
        ScanData t = s;
        t.u = Tensor::ones({2, 5, 3}, DType::I32);
        run(t);
      },
      "float");
  // bf16 activations need f32 (not f64) weights.
  ScanData h = make_data(2, 5, 3, 4, all_flags(true), 2, DType::BF16);
  expect_error(
      [&] {
        ScanData t = h;
        t.A = t.A.to(DType::F64);
        run(t);
      },
      "A must be f32");
}

TEST(SelectiveScan, LargerProblemThreadedDirectionalDerivative) {
  // Large enough for the OpenMP paths: forward against the naive loop, backward against a central difference
  // along a random direction of all nine inputs, and the result independent of the thread count.
  const int64_t B = 3, L = 200, D = 20, N = 16;
  ScanData s = make_data(B, L, D, N, all_flags(true), 555);
  s.mask = make_mask(B, L, DType::I64);
  std::vector<double> y_ref, last_ref;
  naive_scan(s, y_ref, last_ref);
  Generator gen(556);
  Tensor Wy = Tensor::randn({B, L, D}, gen, 0.0, 1.0, DType::F64);
  Tensor Ws = Tensor::randn({B, D, N}, gen, 0.0, 1.0, DType::F64);
  auto loss_of = [&](const SelectiveScanOut& o) {
    double acc = 0;
    const auto y = o.y.to_vector(), l = o.last_state.to_vector(), wy = Wy.to_vector(), ws = Ws.to_vector();
    for (size_t i = 0; i < y.size(); ++i) acc += wy[i] * y[i];
    for (size_t i = 0; i < l.size(); ++i) acc += ws[i] * l[i];
    return acc;
  };
  auto grads_with_threads = [&](int threads, std::vector<std::vector<double>>& out) {
    const int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    ScanData x = s;
    Tensor* all[9] = {&x.u, &x.delta, &x.A, &x.Bm, &x.Cm, &x.D_skip, &x.z, &x.delta_bias, &x.init};
    for (Tensor* t : all) {
      *t = t->clone();
      set_requires_grad(*t);
    }
    SelectiveScanOut o = run(x);
    expect_vec_near(o.y.to_vector(), y_ref, 1e-12, "y");
    expect_vec_near(o.last_state.to_vector(), last_ref, 1e-12, "last_state");
    backward(seed_loss({o.y, o.last_state}, {Wy, Ws}));
    out.clear();
    for (Tensor* t : all) out.push_back(grad(*t).to_vector());
    omp_set_num_threads(prev);
  };
  std::vector<std::vector<double>> g_many, g_one;
  grads_with_threads(std::max(2, omp_get_max_threads()), g_many);
  grads_with_threads(1, g_one);
  for (size_t k = 0; k < g_one.size(); ++k) EXPECT_EQ(g_many[k], g_one[k]) << "input " << k;

  // Central difference along V.
  ScanData plus = s, minus = s;
  Tensor* p_all[9] = {&plus.u,      &plus.delta, &plus.A,          &plus.Bm,  &plus.Cm,
                      &plus.D_skip, &plus.z,     &plus.delta_bias, &plus.init};
  Tensor* m_all[9] = {&minus.u,      &minus.delta, &minus.A,          &minus.Bm,  &minus.Cm,
                      &minus.D_skip, &minus.z,     &minus.delta_bias, &minus.init};
  const double eps = 1e-6;
  double analytic = 0;
  for (int k = 0; k < 9; ++k) {
    Tensor v = Tensor::randn(p_all[k]->shape(), gen, 0.0, 1.0, DType::F64);
    const auto vv = v.to_vector(), xv = p_all[k]->to_vector();
    std::vector<double> xp(xv.size()), xm(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      xp[i] = xv[i] + eps * vv[i];
      xm[i] = xv[i] - eps * vv[i];
      analytic += g_many[k][i] * vv[i];
    }
    *p_all[k] = Tensor::from_vector(xp, p_all[k]->shape(), DType::F64);
    *m_all[k] = Tensor::from_vector(xm, m_all[k]->shape(), DType::F64);
  }
  const double numeric = (loss_of(run(plus)) - loss_of(run(minus))) / (2 * eps);
  EXPECT_NEAR(analytic, numeric, 1e-6 * (1.0 + std::fabs(numeric)))
      << "analytic " << analytic << " numeric " << numeric;
}

// The reverse scan (kernels/selective_scan.h, SelectiveScanParams::reverse) of a sequence equals the forward scan of
// the sequence flipped in time, flipped back: y, last_state and every gradient, bit for bit (the same operations in
// the same order), with a mask, document resets (reversed as the flipped sequence sees them), z, D, the bias,
// softplus and an initial state.
template <typename T>
void check_reverse_scan(DType dt) {
  const int64_t B = 3, L = 13, D = 5, N = 4;
  std::mt19937_64 gen(77);
  auto rnd = [&](int64_t n, double lo, double hi) {
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<T> v(static_cast<size_t>(n));
    for (T& x : v) x = static_cast<T>(dist(gen));
    return v;
  };
  const auto u = rnd(B * L * D, -1, 1), delta = rnd(B * L * D, -1.5, 0.5), z = rnd(B * L * D, -1, 1),
             Bm = rnd(B * L * N, -1, 1), Cm = rnd(B * L * N, -1, 1), A = rnd(D * N, -2, -0.3), Dk = rnd(D, -1, 1),
             bias = rnd(D, 0, 0.3), init = rnd(B * D * N, -0.5, 0.5), dy = rnd(B * L * D, -1, 1),
             dlast = rnd(B * D * N, -1, 1);
  std::vector<T> mask(static_cast<size_t>(B * L), T(1));
  std::vector<int32_t> reset(static_cast<size_t>(B * L), 0);
  mask[0 * L + 4] = 0, mask[1 * L + 0] = 0, mask[2 * L + L - 1] = 0;
  reset[0 * L + 6] = 1, reset[1 * L + 0] = 1, reset[1 * L + 9] = 1, reset[2 * L + 3] = 1, reset[2 * L + 4] = 1;
  // Flip along t of a [B, L, X] array; resets as the flipped sequence sees them: rev[L - t] = reset[t] for t >= 1.
  auto flip = [&](const auto& v) {
    auto out = v;
    const int64_t X = static_cast<int64_t>(v.size()) / (B * L);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t x = 0; x < X; ++x) out[(b * L + L - 1 - t) * X + x] = v[(b * L + t) * X + x];
    return out;
  };
  std::vector<int32_t> reset_rev(reset.size(), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 1; t < L; ++t) reset_rev[b * L + L - t] = reset[b * L + t];

  struct Out {
    std::vector<T> y, last, du, ddelta, dz, dA, dBm, dCm, dD, dbias, dinit;
  };
  auto call = [&](bool reverse, const std::vector<T>& uu, const std::vector<T>& de, const std::vector<T>& zz,
                  const std::vector<T>& bb, const std::vector<T>& cc, const std::vector<T>& mm,
                  const std::vector<int32_t>& rr, const std::vector<T>& gy) {
    Out o;
    o.y.resize(B * L * D), o.last.resize(B * D * N), o.du.resize(B * L * D), o.ddelta.resize(B * L * D);
    o.dz.resize(B * L * D), o.dA.resize(D * N), o.dBm.resize(B * L * N), o.dCm.resize(B * L * N);
    o.dD.resize(D), o.dbias.resize(D), o.dinit.resize(B * D * N);
    kernels::SelectiveScanParams p;
    p.B = B, p.L = L, p.D = D, p.N = N, p.dtype = dt, p.delta_softplus = true, p.reverse = reverse;
    p.u = uu.data(), p.delta = de.data(), p.A = A.data(), p.Bm = bb.data(), p.Cm = cc.data(), p.D_skip = Dk.data();
    p.z = zz.data(), p.delta_bias = bias.data(), p.initial_state = init.data(), p.mask = mm.data();
    p.mask_dtype = dt, p.reset = rr.data(), p.y = o.y.data(), p.last_state = o.last.data();
    kernels::selective_scan_fwd_cpu(p);
    p.dy = gy.data(), p.dlast_state = dlast.data(), p.du = o.du.data(), p.ddelta = o.ddelta.data();
    p.dz = o.dz.data(), p.dA = o.dA.data(), p.dBm = o.dBm.data(), p.dCm = o.dCm.data(), p.dD_skip = o.dD.data();
    p.ddelta_bias = o.dbias.data(), p.dinitial_state = o.dinit.data();
    kernels::selective_scan_bwd_cpu(p);
    return o;
  };
  const Out rev = call(true, u, delta, z, Bm, Cm, mask, reset, dy);
  const Out ref = call(false, flip(u), flip(delta), flip(z), flip(Bm), flip(Cm), flip(mask), reset_rev, flip(dy));
  EXPECT_EQ(rev.y, flip(ref.y));
  EXPECT_EQ(rev.last, ref.last);
  EXPECT_EQ(rev.du, flip(ref.du));
  EXPECT_EQ(rev.ddelta, flip(ref.ddelta));
  EXPECT_EQ(rev.dz, flip(ref.dz));
  EXPECT_EQ(rev.dBm, flip(ref.dBm));
  EXPECT_EQ(rev.dCm, flip(ref.dCm));
  EXPECT_EQ(rev.dA, ref.dA);
  EXPECT_EQ(rev.dD, ref.dD);
  EXPECT_EQ(rev.dbias, ref.dbias);
  EXPECT_EQ(rev.dinit, ref.dinit);
  // Not the forward scan: the direction matters.
  const Out fwd = call(false, u, delta, z, Bm, Cm, mask, reset, dy);
  EXPECT_NE(rev.y, fwd.y);
}

TEST(SelectiveScan, ReverseEqualsTheFlippedForwardScan) {
  check_reverse_scan<double>(DType::F64);
  check_reverse_scan<float>(DType::F32);
}
