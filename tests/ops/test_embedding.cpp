// embedding (autograd/ops/embedding.h): values, the scatter-add backward, bad ids.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/ops/embedding.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::error_of;
using mt::test::randn64;

TEST(Embedding, Values) {
  Tensor w = Tensor::from_vector({0, 1, 10, 11, 20, 21}, {3, 2});
  Tensor ids = Tensor::from_vector_i64({2, 0, 2, 1}, {2, 2}, DType::I32);
  Tensor e = embedding(w, ids);
  EXPECT_EQ(e.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(e.to_vector(), (std::vector<double>{20, 21, 0, 1, 20, 21, 10, 11}));
  Tensor e64 = embedding(w.to(DType::BF16), Tensor::from_vector_i64({1}, {}));  // scalar id -> [d]
  EXPECT_EQ(e64.shape(), (Shape{2}));
  EXPECT_EQ(e64.dtype(), DType::BF16);
  EXPECT_EQ(e64.to_vector(), (std::vector<double>{10, 11}));
}

TEST(Embedding, BackwardScatterAddsRepeatedIds) {
  Tensor w = randn64({5, 3}, 1);
  set_requires_grad(w);
  Tensor ids = Tensor::from_vector_i64({4, 1, 4, 4}, {4});
  Tensor y = embedding(w, ids);
  backward(y, Tensor::ones({4, 3}, DType::F64));
  EXPECT_EQ(grad(w).to_vector(), (std::vector<double>{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 3, 3, 3}));

  auto f = [](const std::vector<Tensor>& v) { return embedding(v[0], v[1]); };
  EXPECT_GRADCHECK(gradcheck(f, {randn64({6, 4}, 2), Tensor::from_vector_i64({5, 0, 5, 2, 0, 5}, {2, 3})}));
  EXPECT_GRADCHECK(gradcheck(f, {randn64({6, 4}, 3), Tensor::from_vector_i64({1, 1, 3}, {3}, DType::I32)}));
}

TEST(Embedding, BadIdNamesIdPositionAndVocab) {
  Tensor w = Tensor::zeros({10, 4});
  ErrorKind kind = ErrorKind::Internal;
  std::string m = error_of([&] { embedding(w, Tensor::from_vector_i64({1, 2, 3, 4, 5, 12}, {2, 3})); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("12"), std::string::npos) << m;
  EXPECT_NE(m.find("[1, 2]"), std::string::npos) << m;
  EXPECT_NE(m.find("[0, 10)"), std::string::npos) << m;
  m = error_of([&] { embedding(w, Tensor::from_vector_i64({-1}, {1}, DType::I32)); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Data);
  EXPECT_NE(m.find("-1"), std::string::npos) << m;
  EXPECT_THROW(embedding(w, Tensor::zeros({2})), Error);                                   // float ids
  EXPECT_THROW(embedding(Tensor::zeros({10}), Tensor::from_vector_i64({1}, {1})), Error);  // 1-D weight
}
