// `visiontrain info`: what this binary was built with and which devices it can use.
#include <cxxopts.hpp>
#include <iostream>

#include "comm/communicator.h"
#include "layers/tensor.h"
#include "trainer/commands.h"
#include "trainer/version.h"

namespace vt {

int cmd_info(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Show the build configuration and the CUDA devices found.");
  opts.add_options()("h,help", "show this help");
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  std::cout << "visiontrain " << VT_VERSION << " (commit " << git_commit() << ")\n";
#ifdef VT_WITH_CUDA
  std::cout << "  CUDA backend: built (architectures " << VT_CUDA_ARCHITECTURES << ", static runtime)\n";
#else
  std::cout << "  CUDA backend: not built (no nvcc at configure time, or VT_ENABLE_CUDA=OFF)\n";
#endif
  std::cout << "  CPU backend: fp32, GEMM by OpenBLAS\n";
  std::cout << "  communication: MPI (launch, host all-reduce)"
            << (comm::have_nccl() ? ", NCCL (device all-reduce)" : "; NCCL not built") << "\n";
  const int n = cuda_device_count();
  std::cout << "  CUDA devices: " << n << (n ? "" : " (ops run on the CPU)") << "\n";
  for (int i = 0; i < n; ++i) std::cout << "    [" << i << "] " << cuda_device_description(i) << "\n";
  return 0;
}

}  // namespace vt
