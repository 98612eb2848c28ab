// Files that ship with mamba-train (example configs, corpora, tokenizer files), found from any working directory.
//
// `cmake --install build --prefix P` puts the binary in P/bin and the shipped files under P/share/mamba-train/
// (configs/, data/corpora/, data/tokenizers/). A relative path that does not exist under the working directory is
// looked up there, so `mamba-train train P/share/mamba-train/configs/tinyshakespeare.yaml` works from anywhere even
// though the config names `data/corpora/tinyshakespeare.txt`.
#pragma once

#include <string>

namespace mt {

// The installed share directory (<dir of the running binary>/../share/mamba-train), or "" when it does not exist.
std::string shipped_data_dir();

// `path` itself when it is empty, absolute, or exists relative to the working directory (as a file, a directory or a
// split token-shard set PATH.000.bin); else the same relative path under shipped_data_dir() when it exists there;
// else `path` unchanged, so that the error a caller reports names what the user wrote.
std::string shipped_path(const std::string& path);

}  // namespace mt
