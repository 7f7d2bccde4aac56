// Error reporting shared by every check macro (see check.h).
#include "layers/check.h"

#include <unistd.h>

#include <atomic>

namespace vt {
namespace {
std::atomic<int> g_rank{-1};
}

void set_process_rank(int rank) { g_rank = rank; }
int process_rank() { return g_rank; }

void check_failed(const char* lib, const char* expr, const char* file, int line,
                  const std::string& detail) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  // Name files relative to the source tree: layers/conv2d.cu:42, not /home/.../conv2d.cu:42.
  const std::string root = VT_SOURCE_DIR "/";
  if (std::string(file).rfind(root, 0) == 0) file += root.size();
  const int rank = g_rank;
  std::ostringstream os;
  os << "[rank " << (rank < 0 ? std::string("?") : std::to_string(rank)) << " @ " << host << "] "
     << lib << " error at " << file << ":" << line << ": `" << expr << "`";
  if (!detail.empty()) os << ": " << detail;
  throw Error(os.str());
}

}  // namespace vt
