// Document resets on the GPU: a packed window encodes each document as if alone (f32 compute, the CUDA conv and
// scan kernels with their reset paths; the kernels themselves are compared with the CPU in the op table).
#include "doc_resets_check.h"
#include "test_util.h"

using namespace mt;

TEST(CudaDocumentResets, EachDocumentOfAWindowIsEncodedAsIfAlone) {
  MT_REQUIRE_CUDA();
  test::check_documents_read_alone(Device::cuda(), DType::F32, 2e-5);
}
