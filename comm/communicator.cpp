// Backend choice and the trace clock (see communicator.h).
#include "comm/communicator.h"

#include <chrono>

#include "layers/check.h"

namespace vt::comm {

bool have_nccl() {
#ifdef VT_WITH_NCCL
  return true;
#else
  return false;
#endif
}

double trace_clock() {
  static const auto t0 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::unique_ptr<Communicator> make_communicator(const std::string& kind, Device dev, size_t staging_bytes,
                                                Watchdog* watchdog) {
  VT_CHECK(kind == "auto" || kind == "nccl" || kind == "mpi", "--comm must be auto, nccl or mpi, not '", kind, "'");
  const bool nccl = kind == "nccl" || (kind == "auto" && dev == Device::kCUDA && have_nccl());
  if (nccl) {
    VT_CHECK(have_nccl(), "--comm nccl: this build has no NCCL (visiontrain info shows the build)");
    VT_CHECK(dev == Device::kCUDA, "--comm nccl reduces device buffers; training on the CPU uses --comm mpi");
    return make_nccl_communicator(watchdog);
  }
  return make_mpi_communicator(dev, staging_bytes, watchdog);
}

#ifndef VT_WITH_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(Watchdog*) {
  VT_CHECK(false, "this build has no NCCL backend");
}
#endif

}  // namespace vt::comm
