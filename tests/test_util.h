// Shared helpers for the test suite.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"

namespace mt::test {

// Skip a test unless a GPU is visible (CUDA tests carry the ctest label `cuda`).
#define MT_REQUIRE_CUDA()                                          \
  do {                                                             \
    if (!::mt::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

// The message of the mt::Error that f throws (its kind in *kind when asked), or "(no error)".
inline std::string error_of(const std::function<void()>& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (const mt::Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "(no error)";
}

// The message of the mt::Error(Shape) that f throws; a test failure when it throws another kind or nothing.
inline std::string shape_error_of(const std::function<void()>& f) {
  ErrorKind kind = ErrorKind::Internal;
  const std::string m = error_of(f, &kind);
  EXPECT_EQ(kind, ErrorKind::Shape) << m;
  return m;
}

// A CPU f64 tensor of N(0, std^2) values from a fixed seed.
inline Tensor randn64(const Shape& s, uint64_t seed, double std = 1.0) {
  Generator g(seed);
  return Tensor::randn(s, g, 0.0, std, DType::F64);
}

// A scalar whose backward hands grads[i] to outs[i]: one backward through several outputs at once.
inline Tensor seed_loss(const std::vector<Tensor>& outs, const std::vector<Tensor>& grads) {
  Tensor loss = Tensor::scalar(0.0, DType::F64);
  auto node = make_lambda_node("test_seed", [grads](const std::vector<Tensor>&) {
    std::vector<Tensor> r;
    for (const Tensor& g : grads) r.push_back(g.clone());
    return r;
  });
  record_node(node, outs, {loss});
  return loss;
}

// A TCP port on 127.0.0.1 that was free a moment ago (rendezvous / control-plane tests).
inline int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

inline std::string source_path(const std::string& rel) { return std::string(MT_SOURCE_DIR) + "/" + rel; }

// A whole file as bytes ("" when it cannot be read), and a file made of `bytes`.
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Max over elements of |a-b| / (atol + rtol*|b|); <= 1 means within tolerance. NaN anywhere gives +inf.
inline double tolerance_ratio(const std::vector<double>& a, const std::vector<double>& b, double atol, double rtol) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    double r = std::fabs(a[i] - b[i]) / (atol + rtol * std::fabs(b[i]));
    if (std::isnan(r)) return INFINITY;
    if (r > worst) worst = r;
  }
  return worst;
}

// ||a - b|| / ||b|| over all elements (NaN -> inf).
inline double rel_l2(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  double r = std::sqrt(num / (den > 0 ? den : 1e-300));
  return std::isnan(r) ? INFINITY : r;
}

#define EXPECT_CLOSE(actual, expected, atol, rtol)                                                             \
  do {                                                                                                         \
    auto mt_a_ = (actual).to_vector();                                                                         \
    auto mt_b_ = (expected).to_vector();                                                                       \
    ASSERT_EQ(mt_a_.size(), mt_b_.size());                                                                     \
    double mt_r_ = ::mt::test::tolerance_ratio(mt_a_, mt_b_, (atol), (rtol));                                  \
    EXPECT_LE(mt_r_, 1.0) << "tolerance ratio " << mt_r_ << " (atol " << (atol) << ", rtol " << (rtol) << ")"; \
  } while (0)

#define EXPECT_GRADCHECK(result) EXPECT_TRUE((result).ok) << (result).message

}  // namespace mt::test
