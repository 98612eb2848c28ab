// embedding on CUDA: a bad id is found on the device and named (CUDA vs the CPU: the op table).
#include <gtest/gtest.h>

#include <string>

#include "autograd/ops/embedding.h"
#include "tests/test_util.h"

using namespace mt;

TEST(CudaEmbedding, BadIdIsADataErrorNamingIt) {
  MT_REQUIRE_CUDA();
  Tensor w = Tensor::zeros({10, 4}, DType::BF16, Device::cuda());
  Tensor ids = Tensor::from_vector_i64({1, 2, 3, 4, 5, 10}, {2, 3}, DType::I64, Device::cuda());
  try {
    embedding(w, ids);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Data);
    std::string m = e.what();
    EXPECT_NE(m.find("id 10"), std::string::npos) << m;
    EXPECT_NE(m.find("[1, 2]"), std::string::npos) << m;
    EXPECT_NE(m.find("[0, 10)"), std::string::npos) << m;
  }
}
