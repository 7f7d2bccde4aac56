// The program's version as the ranks compare it and checkpoints record it: the release
// (VT_VERSION) and the commit the binary was built from (refreshed at every build).
#pragma once

#include <string>

namespace vt {

const char* git_commit();     // "f01250a1c3ab", "f01250a1c3ab+changes" (uncommitted edits) or "unknown"
std::string program_version();  // "0.1.0 f01250a1c3ab"

}  // namespace vt
