// The ranks of a job: MPI start-up, who is who, and the few host-side collectives the
// trainer needs outside the gradient path (the handshake, the broadcast of rank 0's initial
// weights, the step's loss for the log).
//
// MPI is always the bootstrap: under mpirun or srun every process is one rank, and a plain
// run is an MPI singleton, a 1-rank job. init_world() asks for MPI_THREAD_MULTIPLE because
// the MPI backend's communication thread calls MPI while the main thread may too. The local
// rank (the rank within MPI_Comm_split_type(SHARED), i.e. within the node) picks the GPU.
// These collectives run on a private duplicate of MPI_COMM_WORLD, from the main thread only;
// without init_world() the world is one rank and they are identities.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace vt::comm {

struct World {
  int rank = 0, size = 1;              // in the job
  int local_rank = 0, local_size = 1;  // on this node
  std::string host;
};

// Initialises MPI once per process (later calls return the same world), names this rank in
// every error message (set_process_rank), and makes the job's abort handler MPI_Abort.
const World& init_world();
// The world after init_world(); one rank on this host before.
const World& world();
bool world_initialized();
// Ends the whole job from any rank and thread: MPI_Abort (which makes mpirun kill every
// rank) with more than one rank, std::_Exit(code) otherwise. Flushes stdout and stderr.
[[noreturn]] void abort_job(int code);
// MPI_Finalize, if MPI was initialised; at the normal end of main().
void finalize_world();

// Host collectives, main thread only.
void barrier();
void broadcast_bytes(void* data, size_t bytes, int root);
// Every rank's string, in rank order: on every rank (allgather), or on `root` only (gather;
// the other ranks get an empty list).
std::vector<std::string> allgather_string(const std::string& mine);
std::vector<std::string> gather_string(const std::string& mine, int root);
// values[i] = sum over ranks of values[i].
void allreduce_sum(double* values, int n);

}  // namespace vt::comm
