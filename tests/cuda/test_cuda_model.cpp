// The whole Mamba model on the GPU against the transformers golden data (tests/data/parity) and the CPU.
#include "autograd/autograd.h"
#include "nn/hf_io.h"
#include "nn/safetensors.h"
#include "test_util.h"
#include "train/ids_file.h"

using namespace mt;

namespace {
std::map<std::string, Tensor> run(Device dev, DType cd) {
  const std::string dir = test::source_path("tests/data/parity");
  auto model = nn::load_hf_model(dir);
  model->to(dev);
  Tensor ids = train::read_ids_file(dir + "/ids.txt", model->config().vocab_size).to(dev);
  nn::ForwardOptions fo;
  fo.compute_dtype = cd;
  nn::LMOutput out = model->forward(ids, fo, true);
  backward(out.loss);
  std::map<std::string, Tensor> r;
  r["logits"] = out.logits.detach();
  r["last_hidden_state"] = out.backbone.last_hidden_state.detach();
  r["loss"] = out.loss.detach();
  for (auto& np : model->named_parameters()) r["grad/" + np.first] = grad(*np.second);
  return r;
}
}  // namespace

TEST(CudaModel, Float32ParityWithTransformersOnTheGpu) {
  MT_REQUIRE_CUDA();
  auto golden = load_safetensors(test::source_path("tests/data/parity/golden.safetensors"));
  auto ours = run(Device::cuda(), DType::F32);
  for (auto& kv : golden) {
    ASSERT_TRUE(ours[kv.first].defined()) << kv.first;
    EXPECT_LE(test::rel_l2(ours[kv.first].to_vector(), kv.second.to_vector()), 1e-4) << kv.first;
  }
}

TEST(CudaModel, Bf16ForwardAndGradientsTrackFloat32) {
  MT_REQUIRE_CUDA();
  auto ref = run(Device::cpu(), DType::F32);
  auto bf = run(Device::cuda(), DType::BF16);
  EXPECT_LE(test::rel_l2(bf["logits"].to_vector(), ref["logits"].to_vector()), 3e-2);
  EXPECT_LE(test::rel_l2(bf["loss"].to_vector(), ref["loss"].to_vector()), 3e-2);
  for (auto& kv : ref) {
    if (kv.first.rfind("grad/", 0) != 0) continue;
    EXPECT_LE(test::rel_l2(bf[kv.first].to_vector(), kv.second.to_vector()), 1e-1) << kv.first;
  }
}
