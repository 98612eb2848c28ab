#include "train/version.h"

#include "mt_version.h"

namespace mt::train {

const char* version() { return MT_VERSION; }
const char* git_commit() { return MT_GIT_COMMIT; }

}  // namespace mt::train
