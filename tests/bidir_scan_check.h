// The two-direction selective scan against two one-direction calls (tests/ops/test_selective_scan_bidir.cpp on the
// CPU, tests/cuda/test_cuda_selective_scan.cpp on CUDA): both outputs and every gradient, bit for bit.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/selective_scan.h"
#include "autograd/ops/selective_scan_bidir.h"
#include "autograd/ops/shape_ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "tests/test_util.h"

namespace mt::test {

struct BidirCase {
  int64_t B, L, D, N;
  DType dt;
  bool flags;          // z, D_skip, delta_bias, a mask and document resets all on, or all off
  int64_t bc_pad = 0;  // > 0: Bm and Cm are views of one [B, L, bc_pad + 2N] tensor (x_proj's output)
  std::string str() const {
    return "B=" + std::to_string(B) + " L=" + std::to_string(L) + " D=" + std::to_string(D) +
           " N=" + std::to_string(N) + " " + dtype_name(dt) + (flags ? " flags on" : " flags off") +
           (bc_pad > 0 ? " B, C views" : "");
  }
};

// Leaves of one run: each direction's u, delta, A, BC (the wide tensor or Bm), Cm (undefined with views), D_skip,
// delta_bias; then z.
struct BidirLeaves {
  std::vector<Tensor> t;
  Tensor mask, reset;
};

inline BidirLeaves bidir_leaves(const BidirCase& c, uint64_t seed, Device dev) {
  Generator gen(seed);
  const DType wdt = c.dt == DType::F64 ? DType::F64 : DType::F32;
  BidirLeaves l;
  for (int dir = 0; dir < 2; ++dir) {
    l.t.push_back(Tensor::randn({c.B, c.L, c.D}, gen, 0.0, 1.0, c.dt));
    l.t.push_back(Tensor::randn({c.B, c.L, c.D}, gen, -1.0, 0.8, c.dt));
    l.t.push_back(Tensor::rand({c.D, c.N}, gen, -2.0, -0.3, wdt));
    l.t.push_back(Tensor::randn({c.B, c.L, c.bc_pad > 0 ? c.bc_pad + 2 * c.N : c.N}, gen, 0.0, 1.0, c.dt));
    l.t.push_back(c.bc_pad > 0 ? Tensor() : Tensor::randn({c.B, c.L, c.N}, gen, 0.0, 1.0, c.dt));
    l.t.push_back(c.flags ? Tensor::randn({c.D}, gen, 0.0, 1.0, wdt) : Tensor());
    l.t.push_back(c.flags ? Tensor::rand({c.D}, gen, -0.5, 0.5, wdt) : Tensor());
  }
  l.t.push_back(c.flags ? Tensor::randn({c.B, c.L, c.D}, gen, 0.0, 1.0, c.dt) : Tensor());
  for (Tensor& x : l.t)
    if (x.defined()) {
      x = x.to(dev);
      set_requires_grad(x);
    }
  if (c.flags) {
    std::vector<double> m(static_cast<size_t>(c.B * c.L), 1.0), r(static_cast<size_t>(c.B * c.L), 0.0);
    for (int64_t b = 0; b < c.B; ++b) {
      m[b * c.L + (b + 1) * c.L / (c.B + 2)] = 0.0;         // a pad inside each row
      if (c.L > 4) r[b * c.L + (c.L / 2 + b) % c.L] = 1.0;  // a document start inside each row
      if (b == 1) r[b * c.L] = 1.0;
    }
    m[c.B * c.L - 1] = 0.0;
    l.mask = Tensor::from_vector(m, {c.B, c.L}, DType::F32).to(dev);
    l.reset = Tensor::from_vector(r, {c.B, c.L}, DType::I32).to(dev);
  }
  return l;
}

// One direction's inputs from the leaves (dir 0 forward, 1 reverse).
inline ScanDirection bidir_direction(const BidirCase& c, const BidirLeaves& l, int dir) {
  const Tensor* v = &l.t[static_cast<size_t>(dir * 7)];
  ScanDirection s{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
  if (c.bc_pad > 0) {
    const std::vector<Tensor> parts = split(v[3], -1, {c.bc_pad, c.N, c.N}, /*views=*/true);
    s.Bm = parts[1];
    s.Cm = parts[2];
  }
  return s;
}

// Outputs then the leaves' gradients, as CPU f64 vectors (exact for every dtype), with their names.
struct BidirResult {
  std::vector<std::string> names;
  std::vector<std::vector<double>> values;
};

// One run: the two-direction op (two_calls false) or two selective_scan calls, seeded with fixed gradients.
inline BidirResult run_bidir(const BidirCase& c, Device dev, bool two_calls) {
  const BidirLeaves l = bidir_leaves(c, 900 + static_cast<uint64_t>(c.L), dev);
  const ScanDirection f = bidir_direction(c, l, 0), r = bidir_direction(c, l, 1);
  const Tensor& z = l.t[14];
  Tensor yf, yr;
  if (two_calls) {
    yf = selective_scan(f.u, f.delta, f.A, f.Bm, f.Cm, f.D_skip, z, f.delta_bias, true, Tensor(), l.mask, l.reset).y;
    yr = selective_scan(r.u, r.delta, r.A, r.Bm, r.Cm, r.D_skip, z, r.delta_bias, true, Tensor(), l.mask, l.reset,
                        /*reverse=*/true)
             .y;
  } else {
    const SelectiveScanBidirOut o = selective_scan_bidir(f, r, z, true, l.mask, l.reset);
    yf = o.y_fwd;
    yr = o.y_rev;
  }
  Generator gen(77);
  const Tensor gf = Tensor::randn(yf.shape(), gen, 0.0, 1.0, c.dt).to(dev);
  const Tensor gr = Tensor::randn(yr.shape(), gen, 0.0, 1.0, c.dt).to(dev);
  backward(seed_loss({yf, yr}, {gf, gr}));
  BidirResult res;
  res.names = {"y_fwd", "y_rev"};
  res.values = {yf.to(Device::cpu()).to_vector(), yr.to(Device::cpu()).to_vector()};
  const char* names[] = {"u", "delta", "A", "Bm", "Cm", "D_skip", "delta_bias"};
  for (size_t i = 0; i < l.t.size(); ++i) {
    if (!l.t[i].defined()) continue;
    res.names.push_back(i == 14 ? std::string("dz") : std::string(i < 7 ? "fwd d" : "rev d") + names[i % 7]);
    const Tensor g = grad(l.t[i]);
    res.values.push_back(g.defined() ? g.to(Device::cpu()).to_vector() : std::vector<double>{});
  }
  return res;
}

inline void expect_bidir_equals_two_scans(const BidirCase& c, Device dev) {
  SCOPED_TRACE(c.str());
  const BidirResult one = run_bidir(c, dev, false), two = run_bidir(c, dev, true);
  ASSERT_EQ(one.names, two.names);
  for (size_t i = 0; i < one.values.size(); ++i) {
    ASSERT_EQ(one.values[i].size(), two.values[i].size()) << one.names[i];
    ASSERT_FALSE(one.values[i].empty()) << one.names[i] << ": no gradient";
    size_t diff = 0;
    for (size_t j = 0; j < one.values[i].size(); ++j) diff += one.values[i][j] != two.values[i][j];
    EXPECT_EQ(diff, 0u) << one.names[i] << ": " << diff << " of " << one.values[i].size() << " values differ";
  }
}

}  // namespace mt::test
