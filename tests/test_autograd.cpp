// The tape: execution order, accumulation into leaves, no-grad scope, release of saved tensors, grad-ready hooks.
#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "test_util.h"

using namespace mt;

TEST(Autograd, ChainRuleThroughTemporaries) {
  Tensor x = Tensor::from_vector({0.5, -1.0, 2.0}, {3}, DType::F64);
  set_requires_grad(x);
  backward(sum(exp(exp(x))));  // d/dx = exp(exp(x)) * exp(x)
  std::vector<double> g = grad(x).to_vector(), xv = x.to_vector();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], std::exp(std::exp(xv[i])) * std::exp(xv[i]), 1e-12);
  EXPECT_EQ(current_tape().size(), 0u);  // backward consumed the tape
}

TEST(Autograd, LeafGradientsAccumulateAcrossBackwards) {
  Tensor w = Tensor::from_vector({1.0, 2.0}, {2}, DType::F64);
  set_requires_grad(w);
  backward(sum(mul_scalar(w, 3.0)));
  backward(sum(mul(w, w)));  // gradient accumulation: 3 + 2w
  EXPECT_EQ(grad(w).to_vector(), (std::vector<double>{5.0, 7.0}));
  zero_grad(w);
  EXPECT_FALSE(grad(w).defined());
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensor w = Tensor::ones({4}, DType::F64);
  set_requires_grad(w);
  {
    NoGradGuard ng;
    Tensor y = mul(w, w);
    EXPECT_FALSE(requires_grad(y));
    EXPECT_EQ(current_tape().size(), 0u);
  }
  Tensor y = mul(w, w);
  EXPECT_TRUE(requires_grad(y));
  EXPECT_EQ(current_tape().size(), 1u);
  current_tape().clear();
}

TEST(Autograd, SavedTensorsAreReleasedWhenTheirNodeRan) {
  Generator gen(1);
  Tensor x = Tensor::rand({1000}, gen, -1, 1, DType::F64);
  set_requires_grad(x);
  std::weak_ptr<Storage> saved;
  Tensor loss;
  {
    Tensor e = exp(x);  // exp saves its output for backward
    saved = e.storage();
    loss = sum(mul_scalar(e, 2.0));
  }
  EXPECT_FALSE(saved.expired());  // the tape holds it
  backward(loss);
  EXPECT_TRUE(saved.expired());  // released during backward
}

TEST(Autograd, GradReadyHookFiresOnceWhenTheGradientIsFinal) {
  Tensor a = Tensor::from_vector({1.0, 2.0}, {2}, DType::F64);
  Tensor b = Tensor::from_vector({3.0, 4.0}, {2}, DType::F64);
  set_requires_grad(a, true, "a");
  set_requires_grad(b, true, "b");
  std::vector<std::string> order;
  std::vector<double> a_grad_at_hook;
  add_grad_ready_hook(a, [&](const Tensor& g) {
    order.push_back("a");
    a_grad_at_hook = g.to_vector();
  });
  add_grad_ready_hook(b, [&](const Tensor&) { order.push_back("b"); });
  // a is used first and last; b only in the middle. b's gradient is final before a's.
  Tensor h = mul(a, a);    // uses a
  Tensor k = mul(h, b);    // uses b
  Tensor out = add(k, a);  // uses a again
  backward(sum(out));
  ASSERT_EQ(order, (std::vector<std::string>{"b", "a"}));
  // The hook saw the complete gradient: d/da (a^2 b + a) = 2ab + 1.
  EXPECT_EQ(a_grad_at_hook, (std::vector<double>{7.0, 17.0}));
}

TEST(Autograd, BackwardNeedsAScalarOrAGradient) {
  Tensor x = Tensor::ones({3}, DType::F64);
  set_requires_grad(x);
  Tensor y = mul_scalar(x, 2.0);
  EXPECT_THROW(backward(y), Error);
  backward(y, Tensor::from_vector({1, 2, 3}, {3}, DType::F64));
  EXPECT_EQ(grad(x).to_vector(), (std::vector<double>{2, 4, 6}));
  Tensor c = Tensor::ones({2});
  EXPECT_THROW(backward(sum(c)), Error);  // nothing requires grad
}

TEST(Autograd, GradcheckDetectsAWrongGradient) {
  // A deliberately wrong backward must fail gradcheck (the check can fail).
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y = in[0].clone();
    if (any_requires_grad({&in[0]})) {
      auto node = make_lambda_node("wrong_square", [x = in[0]](const std::vector<Tensor>& g) -> std::vector<Tensor> {
        return {mul_scalar(mul(g[0], x), 3.0)};  // should be 2x
      });
      Tensor out = mul(in[0].detach(), in[0].detach());
      record_node(node, {in[0]}, {out});
      return out;
    }
    return mul(y, y);
  };
  auto res = gradcheck(wrong, {Tensor::from_vector({0.3, -0.7}, {2}, DType::F64)});
  EXPECT_FALSE(res.ok);
  EXPECT_NE(res.message.find("analytic"), std::string::npos);
}

// A leaf's first gradient is taken without a copy when nothing else holds it, and copied when something does: the
// node's output gradient handed straight back, or one tensor handed to two leaves.
TEST(Autograd, LeafGradientsAreTakenWhenOwnedAloneAndCopiedWhenShared) {
  Tensor a = Tensor::from_vector({1.0, 2.0}, {2}, DType::F64), b = Tensor::from_vector({3.0, 4.0}, {2}, DType::F64);
  set_requires_grad(a);
  set_requires_grad(b);
  Tensor out;
  {
    NoGradGuard ng;
    out = mul_scalar(a, 1.0);  // a plain tensor to stand for the node's output
  }
  const void* fresh = nullptr;
  const void* passed = nullptr;
  auto node = make_lambda_node("test_fresh_and_shared", [&](const std::vector<Tensor>& g) {
    Tensor mine = mul_scalar(g[0], 2.0);  // a fresh tensor nobody else holds
    fresh = mine.data_ptr();
    passed = g[0].data_ptr();
    return std::vector<Tensor>{mine, g[0]};  // b gets the output gradient itself, which the tape still holds
  });
  record_node(node, {a, b}, {out});
  backward(out, Tensor::ones({2}, DType::F64));
  EXPECT_EQ(grad(a).data_ptr(), fresh);   // taken
  EXPECT_NE(grad(b).data_ptr(), passed);  // copied
  EXPECT_EQ(grad(a).to_vector(), (std::vector<double>{2.0, 2.0}));
  EXPECT_EQ(grad(b).to_vector(), (std::vector<double>{1.0, 1.0}));

  // add() hands the same gradient to both of its inputs: each leaf gets storage of its own.
  Tensor c = Tensor::from_vector({1.0, 2.0}, {2}, DType::F64), d = Tensor::from_vector({3.0, 4.0}, {2}, DType::F64);
  set_requires_grad(c);
  set_requires_grad(d);
  backward(sum(add(c, d)));
  EXPECT_NE(grad(c).data_ptr(), grad(d).data_ptr());
  grad(c).fill_(7.0);
  EXPECT_EQ(grad(d).to_vector(), (std::vector<double>{1.0, 1.0}));
}
