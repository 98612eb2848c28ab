#include "core/error.h"

namespace mt {
void throw_error(ErrorKind kind, const std::string& msg) { throw Error(kind, msg); }
}  // namespace mt
