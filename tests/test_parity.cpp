// Parity with the reference implementation: transformers' MambaForCausalLM in float64 (tools/gen_parity.py
// wrote tests/data/parity/: config.json, model.safetensors, ids.txt and golden.safetensors with logits,
// last_hidden_state, loss and grad/<name> for every parameter). Our forward and every gradient must match:
// relative L2 error <= 1e-4 in fp32, and ~1e-10 in f64.
#include <cmath>

#include "autograd/autograd.h"
#include "nn/hf_io.h"
#include "nn/safetensors.h"
#include "test_util.h"
#include "train/ids_file.h"

using namespace mt;

namespace {

struct ParityRun {
  std::map<std::string, Tensor> golden;
  std::map<std::string, Tensor> ours;
};

ParityRun run(DType cd) {
  const std::string dir = test::source_path("tests/data/parity");
  ParityRun r;
  r.golden = load_safetensors(dir + "/golden.safetensors");
  auto model = nn::load_hf_model(dir, /*keep_f64=*/cd == DType::F64);
  Tensor ids = train::read_ids_file(dir + "/ids.txt", model->config().vocab_size);
  nn::ForwardOptions fo;
  fo.compute_dtype = cd;
  nn::LMOutput out = model->forward(ids, fo, /*with_loss=*/true);
  backward(out.loss);
  r.ours["logits"] = out.logits.detach();
  r.ours["last_hidden_state"] = out.backbone.last_hidden_state.detach();
  r.ours["loss"] = out.loss.detach();
  for (auto& np : model->named_parameters()) r.ours["grad/" + np.first] = grad(*np.second);
  return r;
}

void compare(const ParityRun& r, double tol) {
  int compared = 0;
  for (auto& kv : r.golden) {
    auto it = r.ours.find(kv.first);
    ASSERT_NE(it, r.ours.end()) << "we produce no " << kv.first;
    ASSERT_TRUE(it->second.defined()) << kv.first << " got no gradient";
    ASSERT_EQ(it->second.shape(), kv.second.shape()) << kv.first;
    const double err = test::rel_l2(it->second.to_vector(), kv.second.to_vector());
    EXPECT_LE(err, tol) << kv.first;
    ++compared;
  }
  // Every parameter's gradient is in the golden file (and nothing of ours is left unchecked).
  for (auto& kv : r.ours) EXPECT_TRUE(r.golden.count(kv.first)) << "no golden value for " << kv.first;
  EXPECT_GE(compared, 3);
}

}  // namespace

TEST(Parity, Float32MatchesTransformersWithin1e4) { compare(run(DType::F32), 1e-4); }

TEST(Parity, Float64MatchesTransformersExactly) { compare(run(DType::F64), 1e-9); }
