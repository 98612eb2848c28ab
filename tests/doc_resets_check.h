// The model-level check of document resets (data.reset_at_document_end), shared by the CPU test
// (tests/test_document_resets.cpp) and the CUDA one (tests/cuda/test_cuda_document_resets.cpp): a window that packs
// several documents, with their starts passed as ForwardOptions::reset, gives every position the hidden state that
// its document alone gives. Checked for the unidirectional model, both bidirectional weight layouts and the
// reverse-complement-equivariant one, with layers whose conv reaches across the boundaries (d_conv 4).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/ops/shape_ops.h"
#include "core/rng.h"
#include "data/batch.h"
#include "nn/mamba.h"

namespace mt::test {

inline void check_documents_read_alone(Device dev, DType cd, double tol) {
  constexpr int64_t kEod = 1;  // the DNA vocabulary's [EOD]
  // Row 0: documents [0, 6) and [6, 19); row 1: [0, 2), [2, 3) (one token), [3, 19). Each document but the last
  // of its row ends with kEod; the other ids are bases 2..5.
  const int64_t L = 19;
  const std::vector<std::vector<int64_t>> ends = {{6, 19}, {2, 3, 19}};
  std::vector<int64_t> ids_v(2 * L);
  Generator ig(7);
  const std::vector<int64_t> bases = Tensor::randint({2 * L}, ig, 2, 6).to_vector_i64();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < L; ++t) ids_v[b * L + t] = bases[b * L + t];
  for (int64_t b = 0; b < 2; ++b)
    for (size_t k = 0; k + 1 < ends[b].size(); ++k) ids_v[b * L + ends[b][k] - 1] = kEod;
  const Tensor ids = Tensor::from_vector_i64(ids_v, {2, L});
  const Tensor starts = data::document_starts(ids, kEod);
  ASSERT_TRUE(starts.defined());

  struct Variant {
    const char* name;
    bool bidirectional, rc;
    BiWeights weights;
  };
  const Variant variants[] = {{"unidirectional", false, false, BiWeights::Caduceus},
                              {"bidirectional (Caduceus weights)", true, false, BiWeights::Caduceus},
                              {"bidirectional (shared weights)", true, false, BiWeights::Shared},
                              {"reverse-complement equivariant", true, true, BiWeights::Caduceus}};
  for (const Variant& v : variants) {
    MambaConfig c;
    c.vocab_size = 8;
    c.d_model = 16;
    c.n_layer = 2;
    c.d_state = 4;
    c.d_conv = 4;
    c.bidirectional = v.bidirectional;
    c.bidirectional_weights = v.weights;
    c.rc_equivariant = v.rc;
    if (v.rc) c.rc_complement = {0, 1, 5, 4, 3, 2, 6, 7};
    c.finalize();
    nn::MambaBackbone m(c);
    Generator g(11);
    m.init_parameters(g);
    m.to(cd == DType::F64 ? DType::F64 : DType::F32);
    m.to(dev);
    NoGradGuard ng;
    nn::ForwardOptions fo;
    fo.compute_dtype = cd;
    fo.reset = starts.to(dev);
    const std::vector<double> whole =
        m.forward(ids.to(dev), fo).last_hidden_state.to(Device::cpu()).to(DType::F64).to_vector();
    nn::ForwardOptions alone_opt;
    alone_opt.compute_dtype = cd;
    const int64_t H = static_cast<int64_t>(whole.size()) / (2 * L);
    double worst = 0, scale = 0;
    for (int64_t b = 0; b < 2; ++b) {
      int64_t s = 0;
      for (int64_t e : ends[b]) {
        const Tensor doc = slice(slice(ids, 0, b, b + 1), 1, s, e).contiguous();
        const std::vector<double> alone =
            m.forward(doc.to(dev), alone_opt).last_hidden_state.to(Device::cpu()).to(DType::F64).to_vector();
        for (int64_t t = s; t < e; ++t)
          for (int64_t h = 0; h < H; ++h) {
            const double a = whole[(b * L + t) * H + h], r = alone[(t - s) * H + h];
            worst = std::max(worst, std::fabs(a - r));
            scale = std::max(scale, std::fabs(r));
          }
        s = e;
      }
    }
    EXPECT_LE(worst, tol * std::max(1.0, scale))
        << v.name << ": largest difference " << worst << " (values up to " << scale << ")";
    // Without the starts the documents do see each other: the check can fail.
    nn::ForwardOptions joined = alone_opt;
    const std::vector<double> mixed =
        m.forward(ids.to(dev), joined).last_hidden_state.to(Device::cpu()).to(DType::F64).to_vector();
    double diff = 0;
    for (size_t i = 0; i < mixed.size(); ++i) diff = std::max(diff, std::fabs(mixed[i] - whole[i]));
    EXPECT_GT(diff, 100 * tol * std::max(1.0, scale)) << v.name;
  }
}

}  // namespace mt::test
