// Chunked training (nn/chunked.h): the gradient of the chunk-by-chunk objective equals the whole sequence's, in f64
// to 1e-10 and in f32 to 1e-5, for chunk lengths that divide L and that do not, with ignored targets.
#include <map>
#include <string>

#include "autograd/autograd.h"
#include "autograd/ops/elementwise.h"
#include "core/ignore_index.h"
#include "nn/chunked.h"
#include "test_util.h"

using namespace mt;
using namespace mt::nn;

namespace {

void expect_error(const std::function<void()>& fn, ErrorKind kind, const std::vector<std::string>& needles) {
  const std::string msg = test::error_of(fn);
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << msg;
  }
  for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
}

MambaConfig chunk_config() {
  MambaConfig c;
  c.vocab_size = 23;
  c.d_model = 10;
  c.n_layer = 2;
  c.d_state = 4;
  c.d_conv = 4;
  c.expand = 2;
  c.d_inner = 0;
  c.dt_rank = 0;
  c.finalize();
  return c;
}

struct Result {
  double loss = 0;
  std::map<std::string, std::vector<double>> grads;
};

Result grads_of(MambaLMHeadModel& m, const std::function<double()>& run) {
  m.zero_grad();
  Result r;
  r.loss = run();
  for (auto& kv : m.named_parameters()) {
    const Tensor g = grad(*kv.second);
    r.grads[kv.first] = g.defined() ? g.to(DType::F64).to_vector() : std::vector<double>();
  }
  return r;
}

void expect_same(const Result& a, const Result& b, double tol, const std::string& what) {
  EXPECT_NEAR(a.loss, b.loss, tol) << what;
  for (auto& kv : a.grads) {
    const auto& other = b.grads.at(kv.first);
    ASSERT_EQ(kv.second.size(), other.size()) << what << " " << kv.first;
    for (size_t i = 0; i < other.size(); ++i)
      ASSERT_NEAR(kv.second[i], other[i], tol * (1 + std::fabs(other[i])))
          << what << " " << kv.first << "[" << i << "]";
  }
}

}  // namespace

TEST(ChunkedLM, GradientEqualsTheWholeSequenceGradient) {
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-10 : 1e-5;
    MambaLMHeadModel m(chunk_config());
    Generator g(4);
    m.init_parameters(g);
    m.to(dt);
    const int64_t B = 2, L = 23;
    Generator ig(12);
    Tensor ids = Tensor::randint({B, L}, ig, 0, 23);
    std::vector<int64_t> tv = ids.to_vector_i64();
    tv[5] = tv[L + 9] = tv[L + 10] = kIgnoreIndex;  // ignored targets, one of them at a chunk boundary
    Tensor targets = Tensor::from_vector_i64(tv, {B, L});
    ForwardOptions fo;
    fo.compute_dtype = dt;
    const double scale = 3.0;  // a loss scale, as fp16 training applies it
    const Result whole = grads_of(m, [&] {
      Tensor loss = m.forward(ids, fo, true, targets, false).loss;
      backward(mul_scalar(loss, scale));
      return loss.item();
    });
    for (int64_t chunk : {1, 5, 10, 22, 23, 64}) {
      const Result chunked = grads_of(m, [&] {
        ChunkedLMLoss cl(m, ids, targets, chunk, fo);
        EXPECT_EQ(cl.num_chunks(), (L + chunk - 1) / chunk);
        for (int64_t c = cl.num_chunks() - 1; c >= 0; --c) {
          backward(cl.objective(c, scale));
          cl.collect(c);
        }
        return cl.loss().item();
      });
      expect_same(chunked, whole, tol, str(dtype_name(dt), " chunk_len ", chunk));
    }
  }
}

TEST(ChunkedLM, WithDocumentResetsTheGradientEqualsTheWholeSequenceGradient) {
  // Document starts inside chunks, on a chunk's first position and on its last: the chunked gradient (states
  // sliced per chunk) still equals the whole window's, in f64.
  MambaLMHeadModel m(chunk_config());
  Generator g(8);
  m.init_parameters(g);
  m.to(DType::F64);
  const int64_t B = 2, L = 23;
  Generator ig(13);
  const Tensor ids = Tensor::randint({B, L}, ig, 0, 23);
  std::vector<double> r(B * L, 0.0);
  for (int64_t t : {3, 5, 9, 10, 19}) r[t] = 1.0;
  r[L + 1] = r[L + 14] = 1.0;
  ForwardOptions fo;
  fo.compute_dtype = DType::F64;
  fo.reset = Tensor::from_vector(r, {B, L}, DType::I32);
  const Result whole = grads_of(m, [&] {
    Tensor loss = m.forward(ids, fo, true, ids, false).loss;
    backward(loss);
    return loss.item();
  });
  for (int64_t chunk : {1, 5, 10, 23}) {
    const Result chunked = grads_of(m, [&] {
      ChunkedLMLoss cl(m, ids, ids, chunk, fo);
      for (int64_t c = cl.num_chunks() - 1; c >= 0; --c) {
        backward(cl.objective(c, 1.0));
        cl.collect(c);
      }
      return cl.loss().item();
    });
    expect_same(chunked, whole, 1e-10, str("chunk_len ", chunk));
  }
}

TEST(ChunkedLM, EvaluationLossEqualsTheWholeSequenceLoss) {
  MambaLMHeadModel m(chunk_config());
  Generator g(6);
  m.init_parameters(g);
  m.to(DType::F64);
  Generator ig(2);
  Tensor ids = Tensor::randint({3, 17}, ig, 0, 23);
  std::vector<int64_t> tv = ids.to_vector_i64();
  tv[3] = tv[20] = kIgnoreIndex;
  Tensor targets = Tensor::from_vector_i64(tv, {3, 17});
  ForwardOptions fo;
  fo.compute_dtype = DType::F64;
  NoGradGuard ng;
  const double whole = m.forward(ids, fo, true, targets, false).loss.item();
  for (int64_t chunk : {1, 4, 16, 17, 40})
    EXPECT_NEAR(chunked_lm_loss(m, ids, targets, chunk, fo).item(), whole, 1e-12);
}

TEST(ChunkedLM, RefusesBadArguments) {
  MambaConfig c = chunk_config();
  MambaLMHeadModel m(c);
  Tensor ids = Tensor::zeros({1, 6}, DType::I64);
  ForwardOptions fo;
  expect_error([&] { ChunkedLMLoss(m, ids, ids, 0, fo); }, ErrorKind::Shape, {"chunk_len", ">= 1"});
  expect_error([&] { ChunkedLMLoss(m, ids, Tensor::zeros({1, 5}, DType::I64), 2, fo); }, ErrorKind::Shape, {"targets"});
  c.bidirectional = true;
  MambaLMHeadModel bi(c);
  expect_error([&] { ChunkedLMLoss(bi, ids, ids, 2, fo); }, ErrorKind::Usage, {"bidirectional"});
}
