// AdamW (optim/adamw.h): the update against a double-precision transcription of the formula over several steps,
// decay groups, grad_scale, and parameters without a gradient left alone.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/autograd.h"
#include "optim/adamw.h"
#include "tests/test_util.h"

using namespace mt;

namespace {

struct RefState {
  std::vector<double> p, m, v;
};

// One AdamW step in double on the reference state.
void ref_step(RefState& s, const std::vector<double>& g, double lr, double scale, double wd,
              const optim::AdamWOptions& o, int64_t t) {
  const double bc1 = 1 - std::pow(o.beta1, static_cast<double>(t)), bc2 = 1 - std::pow(o.beta2, static_cast<double>(t));
  for (size_t i = 0; i < s.p.size(); ++i) {
    const double gi = g[i] * scale;
    s.m[i] = o.beta1 * s.m[i] + (1 - o.beta1) * gi;
    s.v[i] = o.beta2 * s.v[i] + (1 - o.beta2) * gi * gi;
    s.p[i] -= lr * ((s.m[i] / bc1) / (std::sqrt(s.v[i] / bc2) + o.eps) + wd * s.p[i]);
  }
}

}  // namespace

TEST(AdamW, DefaultDecayGroups) {
  Tensor mat = Tensor::zeros({3, 4}), vec = Tensor::zeros({4});
  EXPECT_TRUE(optim::default_decay("backbone.layers.0.mixer.in_proj.weight", mat));
  EXPECT_TRUE(optim::default_decay("backbone.embeddings.weight", mat));
  EXPECT_FALSE(optim::default_decay("backbone.layers.0.mixer.A_log", mat));
  EXPECT_FALSE(optim::default_decay("backbone.layers.0.mixer.D", vec));
  EXPECT_FALSE(optim::default_decay("backbone.layers.0.mixer.dt_proj.bias", vec));
  EXPECT_FALSE(optim::default_decay("backbone.layers.0.norm.weight", vec));
  EXPECT_FALSE(optim::default_decay("backbone.norm_f.weight", vec));
  EXPECT_FALSE(optim::default_decay("backbone.layers.0.mixer.conv1d.weight", vec));  // 1-D
}

TEST(AdamW, MatchesTheFormulaOverStepsWithDecayGroupsAndScale) {
  Generator gen(1);
  Tensor w = Tensor::randn({5, 3}, gen, 0.0, 1.0, DType::F32);    // decayed
  Tensor b = Tensor::randn({3}, gen, 0.0, 1.0, DType::F32);       // "x.bias": not decayed
  Tensor frozen = Tensor::randn({4}, gen, 0.0, 1.0, DType::F32);  // never gets a gradient
  const std::vector<double> frozen0 = frozen.to_vector();
  optim::AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  optim::AdamW opt({{"x.weight", &w}, {"x.bias", &b}, {"y.bias", &frozen}}, o);
  RefState rw{w.to_vector(), std::vector<double>(15, 0.0), std::vector<double>(15, 0.0)};
  RefState rb{b.to_vector(), std::vector<double>(3, 0.0), std::vector<double>(3, 0.0)};
  for (int64_t t = 1; t <= 4; ++t) {
    Tensor gw = Tensor::randn({5, 3}, gen, 0.0, 3.0, DType::F32), gb = Tensor::randn({3}, gen, 0.0, 3.0, DType::F32);
    set_grad(w, gw);
    set_grad(b, gb);
    const double lr = 1e-2 / static_cast<double>(t), scale = t == 2 ? 0.25 : 1.0;
    opt.step(lr, scale);
    ref_step(rw, gw.to_vector(), lr, scale, 0.1, o, t);
    ref_step(rb, gb.to_vector(), lr, scale, 0.0, o, t);
    EXPECT_EQ(opt.step_count(), t);
    EXPECT_LE(test::tolerance_ratio(w.to_vector(), rw.p, 1e-6, 1e-5), 1.0) << "step " << t;
    EXPECT_LE(test::tolerance_ratio(b.to_vector(), rb.p, 1e-6, 1e-5), 1.0) << "step " << t;
    EXPECT_LE(test::tolerance_ratio(opt.entries()[0].exp_avg_sq.to_vector(), rw.v, 1e-9, 1e-5), 1.0);
  }
  EXPECT_EQ(frozen.to_vector(), frozen0);
  EXPECT_EQ(opt.entries()[2].exp_avg.to_vector(), std::vector<double>(4, 0.0));
}

TEST(AdamW, RejectsNonFloatMasters) {
  Tensor h = Tensor::zeros({3}, DType::BF16);
  EXPECT_THROW(optim::AdamW({{"h", &h}}, optim::AdamWOptions{}), Error);
}
