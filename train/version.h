// The version of this build: the project version (CMakeLists.txt) and the git commit it was built from, baked in at
// build time by cmake/version.cmake ("unknown" when built without git, "-dirty" with uncommitted changes).
#pragma once

namespace mt::train {

const char* version();     // "0.1.0"
const char* git_commit();  // "1a2b3c4d5e6f", "1a2b3c4d5e6f-dirty" or "unknown"

}  // namespace mt::train
