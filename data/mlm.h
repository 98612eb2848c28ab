// Masked language modelling (trainer.objective: mlm), BERT's recipe: each position is selected with probability p;
// a selected position becomes the mask token (80%), a random token (10%) or stays as it is (10%), and only selected
// positions are scored, against the original token at the same position (no shift: a bidirectional model sees the
// whole sequence). Document and padding markers (`keep`) are never selected.
//
// The masking of sample i is a pure function of (seed, domain, i) (data/sample_rng.h), so a resumed run masks every
// sample as the uninterrupted one did, and validation windows get the same masking at every evaluation.
#pragma once

#include <cstdint>
#include <vector>

#include "data/batch.h"

namespace mt::data {

struct MlmMasking {
  double probability = 0.15;
  int64_t mask_id = 0;                   // the mask token (the tokenizer's base vocabulary size: a new id)
  int64_t random_lo = 0, random_hi = 0;  // random replacements are drawn uniformly from [random_lo, random_hi)
  std::vector<int64_t> keep;             // ids never selected (document end, padding)
};

// Rewrites b.ids and b.targets of rows r = 0 .. B-1 (samples first + r): targets = the original id at selected
// positions and kIgnoreIndex elsewhere. Positions whose mask is 0 (padding) are never selected.
void apply_mlm_masking(Batch& b, const MlmMasking& m, uint64_t seed, uint64_t domain, int64_t first);

}  // namespace mt::data
