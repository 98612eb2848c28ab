// Training-time dropout (model.dropout on each block's mixer output, model.classifier_dropout on a classifier's
// input; nn/mamba.h ForwardOptions): off without a generator or at probability 0, reproducible from the generator's
// state, and the config rules. Elsewhere: checkpointed blocks recompute the same masks (test_checkpointing.cpp), two
// ranks follow one process (test_data_parallel.cpp), a resume is bit-exact (test_labelled.cpp).
#include "autograd/autograd.h"
#include "cli_util.h"
#include "nn/heads.h"
#include "test_util.h"

using namespace mt;
using namespace mt::nn;
using test::contains;

TEST(Dropout, ActsOnlyWithAGeneratorAndAProbability) {
  for (const char* pooling : {"mean", "last"}) {
    MambaForSequenceClassification m(test::tiny_config(8, 3, 19), 3, pooling);
    Generator init(4);
    m.init_parameters(init);
    Generator ig(9);
    const Tensor ids = Tensor::randint({4, 11}, ig, 0, 19);
    NoGradGuard ng;
    ForwardOptions eval;
    const std::vector<double> plain = m.forward(ids, eval).to_vector();
    // Probabilities without a generator (evaluation), and a generator with probabilities 0: the plain forward.
    ForwardOptions no_gen = eval;
    no_gen.dropout = 0.5;
    no_gen.classifier_dropout = 0.5;
    EXPECT_EQ(m.forward(ids, no_gen).to_vector(), plain) << pooling;
    Generator g(1);
    ForwardOptions zero = eval;
    zero.dropout_gen = &g;
    EXPECT_EQ(m.forward(ids, zero).to_vector(), plain) << pooling;
    EXPECT_EQ(g.offset(), 0u) << "no draw at probability 0";
    // Each kind alone changes the logits, and the same generator state gives the same ones.
    for (int kind = 0; kind < 2; ++kind) {
      ForwardOptions train = zero;
      (kind == 0 ? train.dropout : train.classifier_dropout) = 0.3;
      Generator a(7), b(7);
      train.dropout_gen = &a;
      const std::vector<double> da = m.forward(ids, train).to_vector();
      train.dropout_gen = &b;
      EXPECT_EQ(m.forward(ids, train).to_vector(), da) << pooling << " kind " << kind;
      EXPECT_NE(da, plain) << pooling << " kind " << kind;
      EXPECT_GT(a.offset(), 0u);
    }
    EXPECT_EQ(m.forward(ids, eval).to_vector(), plain) << "evaluation after training forwards, " << pooling;
  }
}

TEST(Dropout, ConfigRules) {
  struct Case {
    std::string args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"configs/tinyshakespeare.yaml --set model.dropout=1", "model.dropout"},
      {"configs/tinyshakespeare.yaml --set model.dropout=-0.1", "model.dropout"},
      {"configs/promoters-ecoli.yaml --set model.classifier_dropout=1.5", "model.classifier_dropout"},
      {"configs/tinyshakespeare.yaml --set model.classifier_dropout=0.1",
       "model.classifier_dropout acts on a classification head's input; model.head lm has none"},
      {"configs/tinyshakespeare.yaml --set trainer.chunk_len=64 --set model.dropout=0.1",
       "model.dropout would draw a different mask each time"},
  };
  for (const Case& c : cases) {
    const test::CliResult r = test::run_cli("train " + c.args);
    EXPECT_EQ(r.code, 3) << c.args << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, c.message)) << c.args << "\n" << r.out;
  }
}
