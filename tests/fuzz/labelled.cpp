// libFuzzer target: the labelled-data readers (TSV / CSV / JSONL / FASTA classes) and the FASTA DNA stream. The first
// byte picks the format; the rest is the file. Errors must be mt::Error(Data) naming file:line.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "data/dna.h"
#include "data/labelled.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const char* dir = std::getenv("TMPDIR");
  const std::string p = std::string(dir ? dir : "/tmp") + "/fuzz_labelled_" + std::to_string(::getpid());
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  const char* formats[] = {"tsv", "csv", "jsonl", "fasta", "fasta-stream"};
  const std::string fmt = formats[data[0] % 5];
  try {
    if (fmt == "fasta-stream") {
      mt::data::read_fasta_dna(
          p, "fuzz", [](const uint8_t*, size_t) {}, [] {});
    } else {
      mt::data::LabelledOptions o;
      o.format = fmt;
      o.tokenizer = fmt == "fasta" ? "dna" : "byte";
      o.max_len = 64;
      o.bad_rows = (data[0] & 0x80) ? "skip" : "error";
      std::vector<std::string> files = {p};
      if (fmt == "fasta") files.push_back(p);  // two classes from the same file
      mt::data::ReadStats st;
      (void)mt::data::read_labelled(o, files, &st);
    }
  } catch (const mt::Error&) {
  }
  std::remove(p.c_str());
  return 0;
}
