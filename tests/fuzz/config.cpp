// libFuzzer target: the YAML config loader (strict schema over yaml-cpp, docs/DESIGN.md F6). Any input must end in a
// config or mt::Error(Config); never a crash, a hang or unbounded memory.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "train/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)mt::train::load_train_config(text, "fuzz.yaml");
  } catch (const mt::Error&) {
  }
  return 0;
}
