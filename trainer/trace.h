// The Chrome trace of a run (`visiontrain train --trace FILE`), for Perfetto or
// chrome://tracing: one process track per rank ("rank 1 @ host"), with a thread for the step
// (data, forward, backward, optimizer) and one for communication (each bucket's all-reduce).
//
// Events are complete events ("ph": "X") in microseconds on comm::trace_clock(). Each rank
// keeps its own in memory, for the first `max_steps` steps only (a trace is for looking at a
// few steps, not a whole run); write() gathers them to rank 0, which writes FILE. On the GPU
// the step's phases are host times after a stream synchronisation, which tracing adds.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace vt {

class Trace {
 public:
  enum Track { kStep = 0, kComm = 1 };

  Trace(std::string path, int64_t max_steps);  // empty path: disabled
  bool on(int64_t step) const { return !path_.empty() && step < max_steps_; }
  void add(const std::string& name, Track track, double start_s, double end_s, int64_t step);
  // Collective (every rank calls it): rank 0 writes the file of all ranks' events.
  void write();

 private:
  std::string path_;
  int64_t max_steps_;
  nlohmann::json events_ = nlohmann::json::array();
};

}  // namespace vt
