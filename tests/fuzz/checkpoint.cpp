// libFuzzer target: the checkpoint gate. The input is a manifest and a file (split at the first 0xff byte): the gate
// (manifest syntax, file name, whole-file SHA-256, docs/DESIGN.md F4) must refuse everything it cannot prove is ours
// before HDF5 sees a byte, with mt::Error(Checkpoint). Seeds: a real checkpoint with its manifest.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "train/ckpt/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/fuzz_ckpt_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + mt::train::checkpoint_file_name(2);
  size_t cut = 0;
  while (cut < size && data[cut] != 0xff) ++cut;
  FILE* m = std::fopen((path + ".sha256").c_str(), "wb");
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!m || !f) return 0;
  std::fwrite(data, 1, cut, m);
  if (cut < size) std::fwrite(data + cut + 1, 1, size - cut - 1, f);
  std::fclose(m);
  std::fclose(f);
  try {
    (void)mt::train::load_checkpoint(path);
  } catch (const mt::Error&) {
  }
  (void)mt::train::verify_checkpoint(path);
  (void)mt::train::latest_checkpoint(dir);
  return 0;
}
