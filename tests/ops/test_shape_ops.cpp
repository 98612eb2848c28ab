// Shape ops (autograd/ops/shape_ops.h): views, copies, and the routing of gradients.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "autograd/ops/shape_ops.h"
#include "tests/test_util.h"

using namespace mt;
using mt::test::randn64;

namespace {

Tensor iota(const Shape& s) {
  std::vector<double> v(static_cast<size_t>(shape_numel(s)));
  std::iota(v.begin(), v.end(), 0.0);
  return Tensor::from_vector(v, s, DType::F64);
}

}  // namespace

TEST(ShapeOps, ReshapeViewsWhenContiguousAndCopiesOtherwise) {
  Tensor a = iota({2, 3, 4});
  Tensor r = reshape(a, {6, -1});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  EXPECT_EQ(r.storage(), a.storage());  // a view
  EXPECT_FALSE(r.same(a));
  Tensor t = transpose(a, 0, 2);  // [4, 3, 2], non-contiguous
  EXPECT_EQ(t.storage(), a.storage());
  Tensor rt = reshape(t, {-1});
  EXPECT_NE(rt.storage(), a.storage());
  EXPECT_EQ(rt.to_vector(), t.contiguous().to_vector());
  EXPECT_EQ(rt.to_vector()[1], 12.0);  // t[0, 0, 1] = a[1, 0, 0]
  EXPECT_THROW(reshape(a, {5, -1}), Error);
  EXPECT_THROW(reshape(a, {-1, -1}), Error);
  EXPECT_THROW(reshape(a, {2, 3}), Error);
}

TEST(ShapeOps, TransposePermuteSqueezeValues) {
  Tensor a = iota({2, 3});
  EXPECT_EQ(transpose(a, 0, 1).to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  Tensor b = iota({2, 3, 4});
  Tensor p = permute(b, {2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.to_vector()[1], 4.0);  // p[0, 0, 1] = b[0, 1, 0]
  EXPECT_EQ(p.to_vector()[6], 1.0);  // p[1, 0, 0] = b[0, 0, 1]
  EXPECT_EQ(unsqueeze(a, 1).shape(), (Shape{2, 1, 3}));
  EXPECT_EQ(unsqueeze(a, -1).shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(unsqueeze(a, 0).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(squeeze(unsqueeze(a, 2), 2).to_vector(), a.to_vector());
  EXPECT_EQ(contiguous(transpose(a, 0, 1)).strides(), (Shape{2, 1}));
  EXPECT_THROW(squeeze(a, 0), Error);
  EXPECT_THROW(permute(b, {0, 0, 1}), Error);
  EXPECT_THROW(permute(b, {0, 1}), Error);
  EXPECT_THROW(transpose(a, 0, 2), Error);
  EXPECT_THROW(unsqueeze(a, 4), Error);
}

TEST(ShapeOps, SliceValues) {
  Tensor a = iota({10});
  EXPECT_EQ(slice(a, 0, 1, 8, 3).to_vector(), (std::vector<double>{1, 4, 7}));
  EXPECT_EQ(slice(a, 0, -3, 10).to_vector(), (std::vector<double>{7, 8, 9}));
  EXPECT_EQ(slice(a, 0, 2, -5, 2).to_vector(), (std::vector<double>{2, 4}));
  EXPECT_EQ(slice(a, 0, 8, 100).to_vector(), (std::vector<double>{8, 9}));  // end clamps
  EXPECT_EQ(slice(a, 0, 5, 3).numel(), 0);
  Tensor m = iota({3, 4});
  Tensor s = slice(m, -1, 1, 4, 2);  // columns 1, 3
  EXPECT_EQ(s.shape(), (Shape{3, 2}));
  EXPECT_EQ(s.storage(), m.storage());
  EXPECT_EQ(s.to_vector(), (std::vector<double>{1, 3, 5, 7, 9, 11}));
  EXPECT_THROW(slice(a, 0, 0, 5, 0), Error);
  EXPECT_THROW(slice(a, 1, 0, 5), Error);
}

TEST(ShapeOps, ConcatAndFlipValues) {
  Tensor a = iota({2, 1, 2});
  Tensor b = Tensor::from_vector({10, 11, 12, 13, 14, 15, 16, 17}, {2, 2, 2}, DType::F64);
  Tensor c = Tensor::from_vector({20, 21}, {2, 1, 1}, DType::F64).as_strided({2, 1, 2}, {1, 1, 0}, 0);  // strided
  Tensor cat = concat({a, b, c}, 1);
  EXPECT_EQ(cat.shape(), (Shape{2, 4, 2}));
  EXPECT_EQ(cat.to_vector(), (std::vector<double>{0, 1, 10, 11, 12, 13, 20, 20, 2, 3, 14, 15, 16, 17, 21, 21}));
  EXPECT_EQ(concat({a}, -1).to_vector(), a.to_vector());
  EXPECT_EQ(concat({iota({2}), Tensor::empty({0}, DType::F64), iota({1})}, 0).to_vector(),
            (std::vector<double>{0, 1, 0}));
  EXPECT_THROW(concat({a, iota({2, 1, 3})}, 1), Error);  // mismatch outside the concat dim
  EXPECT_THROW(concat({a, a.to(DType::F32)}, 1), Error);
  EXPECT_THROW(concat({}, 0), Error);

  Tensor m = iota({2, 3});
  EXPECT_EQ(flip(m, 1).to_vector(), (std::vector<double>{2, 1, 0, 5, 4, 3}));
  EXPECT_EQ(flip(m, 0).to_vector(), (std::vector<double>{3, 4, 5, 0, 1, 2}));
  EXPECT_EQ(flip(transpose(m, 0, 1), 0).to_vector(), (std::vector<double>{2, 5, 1, 4, 0, 3}));
  EXPECT_NE(flip(m, 0).storage(), m.storage());
}

TEST(ShapeOps, IntegerTensorsReshapeAndSlice) {
  Tensor ids = Tensor::from_vector_i64({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(reshape(ids, {3, 2}).to_vector_i64(), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(slice(ids, 1, 1, 3).to_vector_i64(), (std::vector<int64_t>{2, 3, 5, 6}));
  EXPECT_EQ(concat({ids, ids}, 0).shape(), (Shape{4, 3}));
}

TEST(ShapeOps, SliceBackwardZerosOutsideTheSlice) {
  Tensor x = randn64({5}, 1);
  set_requires_grad(x);
  Tensor y = slice(x, 0, -4, 5, 2);  // elements 1, 3
  backward(y, Tensor::from_vector({7, 9}, {2}, DType::F64));
  EXPECT_EQ(grad(x).to_vector(), (std::vector<double>{0, 7, 0, 9, 0}));
}

TEST(ShapeOps, SplitValuesErrorsAndBackward) {
  const Tensor a = iota({2, 5});
  const std::vector<Tensor> parts = split(a, 1, {2, 0, 3});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].to_vector(), (std::vector<double>{0, 1, 5, 6}));
  EXPECT_EQ(parts[1].shape(), (Shape{2, 0}));
  EXPECT_EQ(parts[2].to_vector(), (std::vector<double>{2, 3, 4, 7, 8, 9}));
  EXPECT_TRUE(parts[0].is_contiguous() && parts[2].is_contiguous());
  EXPECT_THROW(split(a, 1, {2, 2}), Error);   // sizes do not sum to the dim
  EXPECT_THROW(split(a, 1, {6, -1}), Error);  // negative size
  EXPECT_THROW(split(a, 2, {5}), Error);      // no such dim

  // The gradient equals the one of a slice per part; a part that takes no part in the loss gets zeros.
  Tensor x = randn64({3, 7}, 4), y = x.clone();
  set_requires_grad(x);
  set_requires_grad(y);
  const Tensor w = randn64({3, 4}, 5);
  const std::vector<Tensor> px = split(x, -1, {3, 4});
  backward(px[1], w);
  backward(contiguous(slice(y, -1, 3, 7)), w);
  EXPECT_EQ(grad(x).to_vector(), grad(y).to_vector());
  EXPECT_EQ(slice(grad(x), 1, 0, 3).contiguous().to_vector(), std::vector<double>(9, 0.0));
}
