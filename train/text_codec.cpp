#include "train/text_codec.h"

#include "core/error.h"
#include "data/bpe.h"
#include "data/dna.h"

namespace mt::train {

TextCodec::TextCodec(const TrainConfig& c) : kind_(c.tokenizer.kind) {
  if (kind_ == "bpe") bpe_ = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::load(c.tokenizer.path));
}

TextCodec::~TextCodec() = default;

int64_t TextCodec::eos() const {
  if (bpe_) return bpe_->eos_id();
  return kind_ == "dna" ? data::kDnaEod : -1;
}

std::vector<int64_t> TextCodec::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  if (bpe_) {
    try {
      for (int32_t id : bpe_->encode(text)) ids.push_back(id);
    } catch (const Error& e) {
      throw Error(e.kind(), str("--prompt: ", e.what()));
    }
  } else if (kind_ == "dna") {
    std::vector<int32_t> t;
    const int64_t bad = data::encode_dna(text, t);
    MT_CHECK(bad < 0, ErrorKind::Data, "--prompt: character ", bad + 1, " ('", text[static_cast<size_t>(bad)],
             "') is not a DNA letter (A C G T, N or an IUPAC ambiguity code)");
    ids.assign(t.begin(), t.end());
  } else {
    for (unsigned char c : text) ids.push_back(c);
  }
  return ids;
}

std::string TextCodec::feed(const std::vector<int64_t>& ids) {
  std::string out;
  for (int64_t id : ids) {
    if (bpe_) {
      if (id >= 0 && id < bpe_->vocab_size()) pending_.push_back(static_cast<int32_t>(id));
    } else if (kind_ == "dna") {
      if (const char c = data::dna_letter(id)) out += c;
    } else if (id >= 0 && id < 256) {
      out += static_cast<char>(id);
    }
  }
  if (!bpe_ || pending_.empty()) return out;
  // Decoding replaces an unfinished UTF-8 character at the end by U+FFFD: hold those back until it is complete.
  const std::string text = bpe_->decode(pending_);
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t end = text.size();
  while (end >= emitted_ + kReplacement.size() &&
         text.compare(end - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    end -= kReplacement.size();
  out += text.substr(emitted_, end - emitted_);
  if (end == text.size()) {
    pending_.clear();
    emitted_ = 0;
  } else {
    emitted_ = end;
  }
  return out;
}

std::string TextCodec::finish() {
  if (!bpe_ || pending_.empty()) return "";
  const std::string rest = bpe_->decode(pending_).substr(emitted_);
  pending_.clear();
  emitted_ = 0;
  return rest;
}

}  // namespace mt::train
