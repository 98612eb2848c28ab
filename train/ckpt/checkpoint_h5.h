// Internal to train/ckpt/checkpoint.cpp: the HDF5 side of checkpoints (layout in train/ckpt/checkpoint.h).
// build_checkpoint_image (declared in checkpoint.h) makes the file image; parse_checkpoint_image opens an image whose
// SHA-256 has already been verified and checks / reads it.
#pragma once

#include <cstdint>
#include <vector>

#include "train/ckpt/checkpoint.h"

namespace mt::train {

// Opens `bytes` with the HDF5 core driver (it takes the buffer: `bytes` is left empty to keep the peak memory at two
// copies) and checks writer, format version and, when expected_step >= 0, the step attribute. Then walks every object:
// read_data = false only checks types and sizes (verify), true also reads everything into the result (load);
// read_tensors = false then leaves the tensors out (the small values only).
// Throws mt::Error(Checkpoint, reason) where the reason does not name the file (callers add it).
CheckpointData parse_checkpoint_image(std::vector<unsigned char>& bytes, int64_t expected_step, bool read_data,
                                      bool read_tensors = true);

}  // namespace mt::train
