// The low-precision weight copy (cached_cast, nn::as_compute, AdamW): reused while the f32 master is untouched,
// never used once anything has reached the master's memory, rewritten by AdamW bitwise equal to cast(), and a bf16
// or fp16 training run that reuses it equals one that casts afresh at every use.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "nn/heads.h"
#include "nn/init.h"
#include "optim/adamw.h"
#include "test_util.h"
#include "weight_grad_check.h"

using namespace mt;

namespace {

Tensor master(const Shape& s, uint64_t seed) {
  Generator g(seed);
  Tensor p = Tensor::randn(s, g, 0.0, 1.0, DType::F32);
  set_requires_grad(p);
  return p;
}

// The bf16 / f16 values cast() gives for p now, as doubles.
std::vector<double> cast_now(const Tensor& p, DType dt) {
  NoGradGuard ng;
  return cast(p.detach(), dt).to_vector();
}

const Storage* storage_of(const Tensor& t) { return t.storage().get(); }

}  // namespace

TEST(WeightCopy, StorageVersionAdvancesOnEveryAccessToTheMemory) {
  Tensor t = Tensor::zeros({4, 3});
  const uint64_t v0 = t.storage()->version();
  t.data_ptr();
  const uint64_t v1 = t.storage()->version();
  EXPECT_GT(v1, v0);
  t.view({12}).data<float>();  // a view reaches the same memory
  EXPECT_GT(t.storage()->version(), v1);
  const uint64_t v2 = t.storage()->version();
  (void)t.shape();  // metadata does not touch the memory
  (void)t.describe();
  EXPECT_EQ(t.storage()->version(), v2);
}

TEST(WeightCopy, CachedCastReusesItsCopyUntilTheMasterIsTouched) {
  Tensor p = master({7, 5}, 1);
  Tensor a = cached_cast(p, DType::BF16);
  Tensor b = cached_cast(p, DType::BF16);
  EXPECT_EQ(storage_of(b), storage_of(a)) << "an untouched master must reuse its copy";
  EXPECT_FALSE(b.same(a)) << "each use gets its own handle (its own autograd history)";
  EXPECT_EQ(a.dtype(), DType::BF16);
  EXPECT_EQ(a.to_vector(), cast_now(p, DType::BF16));
  EXPECT_NE(storage_of(cached_cast(p, DType::BF16)), storage_of(a)) << "reading the master counts as an access";

  p.fill_(0.25);  // a write through the tensor API
  Tensor c = cached_cast(p, DType::BF16);
  EXPECT_NE(storage_of(c), storage_of(a));
  EXPECT_EQ(c.to_vector(), std::vector<double>(35, 0.25));

  p.data<float>()[3] = 7.0f;  // a write through a raw pointer
  Tensor d = cached_cast(p, DType::BF16);
  EXPECT_EQ(d.to_vector()[3], 7.0);
  EXPECT_EQ(d.to_vector(), cast_now(p, DType::BF16));

  Tensor h = cached_cast(p, DType::F16);  // another dtype replaces the copy
  EXPECT_EQ(h.dtype(), DType::F16);
  EXPECT_EQ(h.to_vector(), cast_now(p, DType::F16));
  EXPECT_EQ(cached_cast(p, DType::BF16).to_vector(), cast_now(p, DType::BF16));

  Tensor same = cached_cast(p, DType::F32);  // no conversion: the master itself, nothing cached
  EXPECT_EQ(same.to_vector(), p.to_vector());
}

TEST(WeightCopy, CachedCastGradientIsCastsOnAHitAndOnAMiss) {
  Generator g(2);
  const Tensor w = Tensor::randn({6, 4}, g, 0.0, 1.0, DType::F32);
  auto grad_via = [&](Tensor& p, bool cached) {
    Tensor y = cached ? cached_cast(p, DType::BF16) : cast(p, DType::BF16);
    backward(sum(mul(cast(y, DType::F32), w)));
    std::vector<double> out = grad(p).to_vector();
    set_grad(p, Tensor());
    return out;
  };
  Tensor p = master({6, 4}, 3);
  const std::vector<double> ref = grad_via(p, false);
  EXPECT_EQ(grad_via(p, true), ref);  // miss: makes the copy
  EXPECT_EQ(grad_via(p, true), ref);  // hit
  // Two uses of one copy in one graph (a tied embedding and LM head) add their gradients.
  Tensor y1 = cached_cast(p, DType::BF16), y2 = cached_cast(p, DType::BF16);
  backward(add(sum(mul(cast(y1, DType::F32), w)), sum(mul(cast(y2, DType::F32), w))));
  std::vector<double> twice = grad(p).to_vector();
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_EQ(twice[i], 2 * ref[i]) << i;
}

TEST(WeightCopy, AdamWRewritesTheCopyBitwiseEqualToCast) {
  Tensor w = master({33, 17}, 4), h = master({9}, 5), plain = master({5}, 6), idle = master({4, 4}, 7);
  optim::AdamWOptions o;
  o.lr = 3e-2;
  optim::AdamW opt({{"l.weight", &w}, {"l.bias", &h}, {"k.weight", &plain}, {"idle.weight", &idle}}, o);
  const Storage* wc = storage_of(cached_cast(w, DType::BF16));
  const Storage* hc = storage_of(cached_cast(h, DType::F16));
  const std::vector<double> idle_copy = cached_cast(idle, DType::BF16).to_vector();
  const Storage* ic = storage_of(cached_cast(idle, DType::BF16));
  Generator g(8);
  for (int step = 0; step < 3; ++step) {
    for (Tensor* p : {&w, &h, &plain}) set_grad(*p, Tensor::randn(p->shape(), g, 0.0, 2.0, DType::F32));
    const std::vector<double> before = w.to_vector();
    opt.step(1e-2, 0.5);
    // Fresh after the step: the same storage (written by the update, not re-cast) holding cast()'s values. The
    // copies are looked up before anything else reads the masters (a read counts as an access too).
    Tensor wb = cached_cast(w, DType::BF16), hb = cached_cast(h, DType::F16);
    EXPECT_EQ(storage_of(wb), wc) << "step " << step;
    EXPECT_EQ(storage_of(hb), hc) << "step " << step;
    EXPECT_EQ(wb.to_vector(), cast_now(w, DType::BF16)) << "step " << step;
    EXPECT_EQ(hb.to_vector(), cast_now(h, DType::F16)) << "step " << step;
    ASSERT_NE(w.to_vector(), before);
    // No gradient: neither master nor copy changes, and the copy stays fresh.
    Tensor ib = cached_cast(idle, DType::BF16);
    EXPECT_EQ(storage_of(ib), ic);
    EXPECT_EQ(ib.to_vector(), idle_copy);
  }
  EXPECT_FALSE(plain.impl().converted) << "a parameter that was never cast gets no copy";
}

TEST(WeightCopy, AWriteAfterTheStepIsNeverHiddenByTheCopy) {
  Tensor w = master({8, 3}, 9);
  optim::AdamW opt({{"l.weight", &w}}, optim::AdamWOptions{});
  cached_cast(w, DType::BF16);
  set_grad(w, Tensor::ones({8, 3}));
  opt.step(1e-3);
  // What a checkpoint load or a start-up broadcast does: overwrite the master in place.
  Generator g(10);
  const Tensor loaded = Tensor::randn({8, 3}, g, 0.0, 1.0, DType::F32);
  w.copy_(loaded);
  EXPECT_EQ(cached_cast(w, DType::BF16).to_vector(), loaded.to(DType::BF16).to_vector());
}

// Two identical tiny language models trained on the CPU with bf16 / fp16 compute: one reuses the copies AdamW
// writes, the other touches every master before each forward so every use casts afresh. Losses and weights agree
// bit for bit.
class WeightCopyTraining : public ::testing::TestWithParam<DType> {};

TEST_P(WeightCopyTraining, ReusingTheCopyEqualsCastingAtEveryUse) {
  MambaConfig c;
  c.vocab_size = 23;
  c.d_model = 16;
  c.n_layer = 2;
  c.d_state = 4;
  c.d_conv = 3;
  c.expand = 2;
  c.finalize();
  nn::MambaLMHeadModel reuse(c), fresh(c);
  Generator g1(11), g2(11);
  reuse.init_parameters(g1);
  fresh.init_parameters(g2);
  optim::AdamWOptions o;
  o.lr = 1e-2;
  optim::AdamW opt_reuse(reuse.named_parameters(), o), opt_fresh(fresh.named_parameters(), o);
  Generator gi(12);
  const Tensor ids = Tensor::randint({2, 13}, gi, 0, c.vocab_size);
  nn::ForwardOptions fo;
  fo.compute_dtype = GetParam();
  const Tensor& emb = *reuse.named_parameters().front().second;
  std::shared_ptr<TensorImpl> first_copy;
  for (int step = 0; step < 4; ++step) {
    for (Tensor* p : fresh.parameters()) p->data_ptr();  // every copy of `fresh` is now stale
    double loss[2];
    for (int k = 0; k < 2; ++k) {  // the tape holds one graph at a time
      nn::MambaLMHeadModel& m = k ? fresh : reuse;
      Tensor l = m.forward(ids, fo, true, Tensor(), false).loss;
      backward(l);
      loss[k] = l.item();
      (k ? opt_fresh : opt_reuse).step(1e-2);
      m.zero_grad();
    }
    ASSERT_EQ(loss[0], loss[1]) << "step " << step;
    if (step == 0) first_copy = emb.impl().converted;
  }
  ASSERT_TRUE(first_copy);
  EXPECT_EQ(emb.impl().converted, first_copy) << "the reusing model kept one copy of the embedding, rewritten by AdamW";
  auto pr = reuse.named_parameters(), pf = fresh.named_parameters();
  for (size_t i = 0; i < pr.size(); ++i) EXPECT_EQ(pr[i].second->to_vector(), pf[i].second->to_vector()) << pr[i].first;
}

INSTANTIATE_TEST_SUITE_P(HalfDtypes, WeightCopyTraining, ::testing::Values(DType::BF16, DType::F16),
                         [](const ::testing::TestParamInfo<DType>& i) { return std::string(dtype_name(i.param)); });

TEST(WeightCopy, GradientsReachTheMasterUnrounded) {
  testing_weight_grad::expect_unrounded_weight_grads(Device::cpu());
}
