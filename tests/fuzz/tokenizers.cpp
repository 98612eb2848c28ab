// libFuzzer target: the tokenizers. The first byte picks one: GPT-NeoX BPE encode (+ decode round trip of valid
// UTF-8), DNA encode, or parsing the input as a tokenizer.json. Errors must be mt::Error(Data).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/bpe.h"
#include "data/dna.h"

namespace {
const mt::data::BpeTokenizer& neox() {
  static const mt::data::BpeTokenizer t =
      mt::data::BpeTokenizer::load(std::string(MT_SOURCE_DIR) + "/data/tokenizers/gpt-neox-20b/tokenizer.json");
  return t;
}
std::string temp_path() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/fuzz_tokenizer_" + std::to_string(::getpid()) + ".json";
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    switch (data[0] % 3) {
      case 0: {
        const auto ids = neox().encode(text);
        bool ascii = true;
        for (unsigned char c : text) ascii = ascii && c < 0x80;
        // Byte-level BPE gives back what it was given (NFC leaves ASCII alone).
        if (ascii && neox().decode(ids) != text) std::abort();
        break;
      }
      case 1: {
        std::vector<int32_t> out;
        const int64_t bad = mt::data::encode_dna(text, out);
        if (bad >= 0 && !out.empty()) std::abort();  // a rejected sequence leaves the output unchanged
        break;
      }
      default: {
        const std::string p = temp_path();
        FILE* f = std::fopen(p.c_str(), "wb");
        if (!f) return 0;
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
        try {
          (void)mt::data::BpeTokenizer::load(p);
        } catch (const mt::Error&) {
        }
        std::remove(p.c_str());
      }
    }
  } catch (const mt::Error&) {
  }
  return 0;
}
