// Activation checkpointing (autograd/checkpoint.h, ForwardOptions::checkpoint_blocks): the same loss and the same
// gradient bits as without it, also with chunked training's carried states, and every parameter's grad-ready hook
// fires exactly once per backward. A checkpointed block draws the same dropout masks when it is recomputed.
#include <map>

#include "autograd/checkpoint.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "nn/chunked.h"
#include "test_util.h"

using namespace mt;
using namespace mt::nn;

namespace {

MambaConfig ckpt_config() {
  MambaConfig c;
  c.vocab_size = 19;
  c.d_model = 8;
  c.n_layer = 3;
  c.d_state = 3;
  c.d_conv = 3;
  c.finalize();
  return c;
}

std::map<std::string, std::vector<double>> grads(const MambaLMHeadModel& m) {
  std::map<std::string, std::vector<double>> out;
  for (auto& kv : m.named_parameters()) out[kv.first] = grad(*kv.second).to_vector();
  return out;
}

}  // namespace

TEST(Checkpointing, BlocksGiveTheSameGradientBits) {
  // Also with dropout: a checkpointed block draws its masks from a generator of its own, so the recomputation in the
  // backward draws the same ones (with the shared generator it would draw new ones, and other gradients).
  for (DType cd : {DType::F32, DType::BF16}) {
    MambaLMHeadModel m(ckpt_config());
    Generator init(2);
    m.init_parameters(init);
    Generator ig(5);
    const Tensor ids = Tensor::randint({2, 13}, ig, 0, 19);
    std::map<std::pair<double, bool>, std::pair<double, std::map<std::string, std::vector<double>>>> r;
    for (double p : {0.0, 0.25})
      for (bool ck : {false, true}) {
        m.zero_grad();
        Generator g(11);
        ForwardOptions fo;
        fo.compute_dtype = cd;
        fo.checkpoint_blocks = ck;
        fo.dropout = p;
        fo.dropout_gen = &g;
        Tensor loss = m.forward(ids, fo, true, Tensor(), false).loss;
        backward(mul_scalar(loss, 2.0));
        r[{p, ck}] = {loss.item(), grads(m)};
      }
    for (double p : {0.0, 0.25}) {
      const auto& plain = r[std::make_pair(p, false)];
      const auto& ck = r[std::make_pair(p, true)];
      EXPECT_EQ(ck.first, plain.first) << dtype_name(cd) << " dropout " << p;
      EXPECT_EQ(ck.second, plain.second) << dtype_name(cd) << " dropout " << p;
    }
    const double with = r[std::make_pair(0.25, false)].first, without = r[std::make_pair(0.0, false)].first;
    EXPECT_NE(with, without) << dtype_name(cd) << ": dropout acted";
  }
}

TEST(Checkpointing, ComposesWithChunkedTraining) {
  MambaLMHeadModel m(ckpt_config());
  Generator g(3);
  m.init_parameters(g);
  Generator ig(6);
  Tensor ids = Tensor::randint({2, 17}, ig, 0, 19);
  std::map<bool, std::map<std::string, std::vector<double>>> r;
  for (bool ck : {false, true}) {
    m.zero_grad();
    ForwardOptions fo;
    fo.checkpoint_blocks = ck;
    ChunkedLMLoss cl(m, ids, ids, 5, fo);
    for (int64_t c = cl.num_chunks() - 1; c >= 0; --c) {
      backward(cl.objective(c, 1.0));
      cl.collect(c);
    }
    r[ck] = grads(m);
  }
  EXPECT_EQ(r[true], r[false]);
}

TEST(Checkpointing, HooksFireOncePerParameterInTheOuterBackward) {
  MambaLMHeadModel m(ckpt_config());
  Generator g(4);
  m.init_parameters(g);
  std::map<std::string, int> fired;
  for (auto& kv : m.named_parameters()) {
    const std::string name = kv.first;
    add_grad_ready_hook(*kv.second, [&fired, name](const Tensor&) { ++fired[name]; });
  }
  Generator ig(7);
  Tensor ids = Tensor::randint({1, 9}, ig, 0, 19);
  ForwardOptions fo;
  fo.checkpoint_blocks = true;
  backward(m.forward(ids, fo, true, Tensor(), false).loss);
  EXPECT_EQ(fired.size(), m.named_parameters().size());
  for (auto& kv : fired) EXPECT_EQ(kv.second, 1) << kv.first;
}

TEST(Checkpointing, AFunctionOfTwoInputsAndAParameter) {
  // y = (a * w) * b, z = a + b: gradients through the recompute equal the direct ones.
  Generator g(8);
  Tensor a = Tensor::randn({5}, g, 0.0, 1.0, DType::F64), b = Tensor::randn({5}, g, 0.0, 1.0, DType::F64);
  Tensor w = Tensor::randn({5}, g, 0.0, 1.0, DType::F64);
  set_requires_grad(a);
  set_requires_grad(b);
  set_requires_grad(w);
  auto fn = [&w](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{mul(mul(in[0], w), in[1]), add(in[0], in[1])};
  };
  auto run = [&](bool ck) {
    zero_grad(a);
    zero_grad(b);
    zero_grad(w);
    std::vector<Tensor> o = ck ? checkpoint(fn, {a, b}, {&w}) : fn({a, b});
    backward(add(sum(mul_scalar(o[0], 3.0)), sum(o[1])));
    return std::vector<std::vector<double>>{grad(a).to_vector(), grad(b).to_vector(), grad(w).to_vector()};
  };
  EXPECT_EQ(run(true), run(false));
}
