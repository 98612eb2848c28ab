// evaluate / predict on the GPU (train/inference.h): class probabilities, pooled and per-token features of padded
// batches, and a language model's windowed loss, against the same model on the CPU.
#include <unistd.h>

#include <fstream>

#include "test_util.h"
#include "train/inference.h"

using namespace mt;

namespace {

// A random 3-class classifier on `dev` (same weights on every device: the init is counter-based).
train::InferenceModel classifier(Device dev, const std::string& pooling) {
  train::InferenceModel m;
  m.cfg.model.head = "sequence_classification";
  m.cfg.model.num_classes = 3;
  m.cfg.model.pooling = pooling;
  m.cfg.data.kind = "classification";
  m.cls = std::make_unique<nn::MambaForSequenceClassification>(test::tiny_config(32, 2), 3, pooling);
  Generator g(11);
  m.cls->init_parameters(g);
  m.cls->to(dev);
  m.device = dev;
  return m;
}

// Rows of different lengths (1 .. 70 tokens), so that batches are padded and masked.
std::vector<train::InputRow> rows() {
  std::vector<train::InputRow> out;
  for (int64_t r = 0; r < 9; ++r) {
    train::InputRow in;
    in.row = r;
    for (int64_t t = 0; t < 1 + (r * 29) % 70; ++t) in.ids.push_back(static_cast<int32_t>((r * 31 + t * 7) % 256));
    out.push_back(in);
  }
  return out;
}

}  // namespace

TEST(CudaInference, ClassifierBatchesMatchTheCpu) {
  MT_REQUIRE_CUDA();
  for (const char* pooling : {"mean", "last", "state"}) {
    const train::InferenceModel cpu = classifier(Device::cpu(), pooling), gpu = classifier(Device::cuda(), pooling);
    train::ForwardRequest req;
    req.probs = req.pooled = req.hidden = true;
    const train::BatchOutputs a = train::run_batch(cpu, rows(), req), b = train::run_batch(gpu, rows(), req);
    EXPECT_LE(test::tolerance_ratio(b.probs, a.probs, 1e-5, 1e-4), 1.0) << pooling;
    EXPECT_LE(test::rel_l2(b.pooled.to_vector(), a.pooled.to_vector()), 1e-4) << pooling;
    EXPECT_LE(test::rel_l2(b.hidden.to_vector(), a.hidden.to_vector()), 1e-4) << pooling;
    req.compute = DType::BF16;
    const train::BatchOutputs h = train::run_batch(gpu, rows(), req);
    EXPECT_LE(test::tolerance_ratio(h.probs, a.probs, 2e-2, 5e-2), 1.0) << pooling;
  }
}

TEST(CudaInference, LanguageModelEvaluationMatchesTheCpu) {
  MT_REQUIRE_CUDA();
  const std::string file = "/tmp/mt_cuda_infer_" + std::to_string(::getpid()) + ".txt";
  {
    std::ifstream in(test::source_path("data/corpora/tinyshakespeare.txt"), std::ios::binary);
    std::string text(5000, '\0');
    in.read(&text[0], 5000);
    std::ofstream(file, std::ios::binary) << text;
  }
  auto lm = [&](Device dev) {
    train::InferenceModel m;
    m.cfg.data.kind = "text";
    m.cfg.data.seq_len = 256;
    m.cfg.tokenizer.kind = "byte";
    m.lm = std::make_unique<nn::MambaLMHeadModel>(test::tiny_config(32, 2));
    Generator g(5);
    m.lm->init_parameters(g);
    m.lm->to(dev);
    m.device = dev;
    return m;
  };
  const train::LanguageModelReport a = train::evaluate_language_model(lm(Device::cpu()), file, 4, DType::F32);
  const train::LanguageModelReport b = train::evaluate_language_model(lm(Device::cuda()), file, 4, DType::F32);
  EXPECT_EQ(a.n, 19 * 255 + 135);  // 19 windows of 256 and a last one of 136 tokens
  EXPECT_EQ(b.n, a.n);
  EXPECT_EQ(b.bytes, a.bytes);
  EXPECT_NEAR(b.loss(), a.loss(), 1e-4 * a.loss());
  ::unlink(file.c_str());
}
