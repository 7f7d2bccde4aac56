// MPI start-up and the host collectives of the main thread (see world.h).
#include "comm/world.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "layers/check.h"

namespace vt::comm {
namespace {

World g_world;
bool g_initialized = false;
MPI_Comm g_host_comm = MPI_COMM_NULL;  // the main thread's duplicate of MPI_COMM_WORLD

std::string hostname() {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  return host;
}

}  // namespace

const World& init_world() {
  static std::once_flag once;
  std::call_once(once, [] {
    int initialized = 0;
    MPI_CHECK(MPI_Initialized(&initialized));
    if (!initialized) {
      int provided = 0;
      MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
      VT_CHECK(provided >= MPI_THREAD_MULTIPLE, "this MPI library gives thread level ", provided,
               ", and visiontrain needs MPI_THREAD_MULTIPLE (", MPI_THREAD_MULTIPLE,
               "): its communication thread calls MPI while the main thread may too");
    }
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &g_host_comm));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &g_world.size));
    MPI_Comm node = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &g_world.local_rank));
    MPI_CHECK(MPI_Comm_size(node, &g_world.local_size));
    MPI_CHECK(MPI_Comm_free(&node));
    // Errors come back as codes, so MPI_CHECK can name the rank and the call.
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_set_errhandler(g_host_comm, MPI_ERRORS_RETURN));
    g_world.host = hostname();
    g_initialized = true;
    set_process_rank(g_world.rank);
  });
  return g_world;
}

const World& world() {
  if (!g_initialized && g_world.host.empty()) g_world.host = hostname();
  return g_world;
}

bool world_initialized() { return g_initialized; }

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (g_initialized && g_world.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void finalize_world() {
  if (!g_initialized) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MPI_Comm_free(&g_host_comm);
  MPI_Finalize();
}

void barrier() {
  if (g_initialized) MPI_CHECK(MPI_Barrier(g_host_comm));
}

void broadcast_bytes(void* data, size_t bytes, int root) {
  if (!g_initialized || g_world.size == 1) return;
  // MPI counts are int: send in pieces of at most 1 GiB.
  auto* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes;) {
    const int n = static_cast<int>(std::min<size_t>(bytes - done, size_t(1) << 30));
    MPI_CHECK(MPI_Bcast(p + done, n, MPI_BYTE, root, g_host_comm));
    done += static_cast<size_t>(n);
  }
}

namespace {

// allgather_string (root < 0) and gather_string (to root).
std::vector<std::string> collect_strings(const std::string& mine, int root) {
  if (!g_initialized || g_world.size == 1) return {mine};
  const int n = g_world.size;
  const bool receive = root < 0 || g_world.rank == root;
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(n)), displs(static_cast<size_t>(n));
  if (root < 0) MPI_CHECK(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, g_host_comm));
  else MPI_CHECK(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, g_host_comm));
  int total = 0;
  for (int r = 0; r < n; ++r) {
    displs[r] = total;
    total += lens[r];
  }
  std::string all(receive ? static_cast<size_t>(total) : 0, '\0');
  if (root < 0)
    MPI_CHECK(MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                             g_host_comm));
  else
    MPI_CHECK(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, root,
                          g_host_comm));
  std::vector<std::string> out;
  if (receive)
    for (int r = 0; r < n; ++r)
      out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(lens[r])));
  return out;
}

}  // namespace

std::vector<std::string> allgather_string(const std::string& mine) { return collect_strings(mine, -1); }
std::vector<std::string> gather_string(const std::string& mine, int root) { return collect_strings(mine, root); }

void allreduce_sum(double* values, int n) {
  if (!g_initialized || g_world.size == 1) return;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, g_host_comm));
}

}  // namespace vt::comm
