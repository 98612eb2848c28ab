// libFuzzer target: the safetensors reader (HF weights, model.init_from): header JSON, dtypes, shapes, offsets.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* dir = std::getenv("TMPDIR");
  const std::string p = std::string(dir ? dir : "/tmp") + "/fuzz_st_" + std::to_string(::getpid()) + ".safetensors";
  FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    (void)mt::safetensors_metadata(p);
    (void)mt::load_safetensors(p);
  } catch (const mt::Error&) {
  }
  std::remove(p.c_str());
  return 0;
}
