// The project's one family of error checks.
//
// Library code never prints and carries on: a violated contract or a failed library call
// throws vt::Error, whose message says where (file:line), who (rank and host), and what
// (the expression and the library's own error string). The executable catches it at the
// top, prints it, and aborts all ranks. Every backend macro (CUDA_CHECK, NCCL_CHECK,
// MPI_CHECK, H5_CHECK) expands to the same VT_CHECK_GEN template; a macro only needs its
// library's header where it is used.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vt {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The MPI rank to name in error messages; -1 (the default) until MPI is initialised.
void set_process_rank(int rank);
int process_rank();

// Builds "[rank R @ host] LIB error at file:line: `expr`: detail" and throws vt::Error.
[[noreturn]] void check_failed(const char* lib, const char* expr, const char* file, int line,
                               const std::string& detail);

// Streams any number of values into one string: cat("got ", n, " channels").
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace vt

// The template: evaluate `expr` once into `type e_`, and if `ok` (an expression of e_) is
// false, throw with `detail` (an expression of e_ giving a std::string or const char*).
#define VT_CHECK_GEN(lib, type, expr, ok, detail)                                   \
  do {                                                                               \
    type e_ = (expr);                                                                \
    if (!(ok)) ::vt::check_failed(lib, #expr, __FILE__, __LINE__, std::string(detail)); \
  } while (0)

// A contract check in our own code: VT_CHECK(n > 0, "conv2d: batch ", n, " is empty").
#define VT_CHECK(cond, ...)                                                          \
  do {                                                                               \
    if (!(cond)) ::vt::check_failed("check", #cond, __FILE__, __LINE__, ::vt::cat(__VA_ARGS__)); \
  } while (0)

#define CUDA_CHECK(expr) VT_CHECK_GEN("CUDA", cudaError_t, expr, e_ == cudaSuccess, cudaGetErrorString(e_))

#define NCCL_CHECK(expr) VT_CHECK_GEN("NCCL", ncclResult_t, expr, e_ == ncclSuccess, ncclGetErrorString(e_))

#define MPI_CHECK(expr)                                                               \
  VT_CHECK_GEN("MPI", int, expr, e_ == MPI_SUCCESS, ([&] {                           \
                 char s_[MPI_MAX_ERROR_STRING];                                     \
                 int n_ = 0;                                                        \
                 MPI_Error_string(e_, s_, &n_);                                     \
                 return std::string(s_, static_cast<size_t>(n_));                   \
               }()))

// HDF5 calls return a negative value on failure. `what` names the file and dataset, since
// HDF5's own message rarely does: H5_CHECK(H5Dread(...), cat(path, ":/images")).
#define H5_CHECK(expr, what)                                                          \
  VT_CHECK_GEN("HDF5", long long, static_cast<long long>(expr), e_ >= 0, ::vt::cat(what))
