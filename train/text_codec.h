// The text side of a language model's tokenizer for `mamba-train generate`: a prompt to token ids, and new token ids
// back to text as they come (byte, DNA or BPE, as tokenizer.kind says).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "train/config/config.h"

namespace mt::data {
class BpeTokenizer;
}

namespace mt::train {

class TextCodec {
 public:
  // tokenizer.kind byte | dna | bpe (tokenizer.path: the tokenizer.json). mt::Error(Data) for an unreadable BPE file.
  explicit TextCodec(const TrainConfig& c);
  ~TextCodec();

  // The end-of-sequence token: BPE's <|endoftext|> (when the tokenizer has one), DNA's [EOD]; -1 for byte models.
  int64_t eos() const;
  // The prompt's tokens. mt::Error(Data) for a character that is not DNA (dna) or invalid UTF-8 (bpe).
  std::vector<int64_t> encode(const std::string& text) const;
  // The text of the next new tokens that is final so far: a BPE character split over several tokens comes out once
  // its last byte has. Ids the tokenizer lacks (a vocabulary padded past the tokenizer's) and special DNA tokens
  // have no text. Concatenated, feed() and finish() give the decoding of all the tokens.
  std::string feed(const std::vector<int64_t>& ids);
  std::string finish();  // whatever is held back (an unfinished character, as U+FFFD)

 private:
  std::string kind_;
  std::unique_ptr<data::BpeTokenizer> bpe_;
  std::vector<int32_t> pending_;  // BPE tokens whose text is not all out yet
  size_t emitted_ = 0;            // bytes of decode(pending_) already given out
};

}  // namespace mt::train
