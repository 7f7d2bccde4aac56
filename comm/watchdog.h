// The watchdog: no rank waits forever on a collective.
//
// Every collective a rank starts is registered with what it is ("all-reduce of bucket 3",
// "handshake") and the training step; a thread checks once a second, and when one has been
// in flight longer than the timeout it prints which rank, which collective and which step,
// and ends the job (abort_job, i.e. MPI_Abort, so mpirun takes every rank down). A hung
// peer, a peer stuck outside any collective, or a dead network all end that way. A backend
// whose collectives finish on a GPU stream gives a poll function, which the thread calls
// first to retire the finished ones. Timeout 0 disables the checks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace vt::comm {

class Watchdog {
 public:
  explicit Watchdog(double timeout_s);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  double timeout_s() const { return timeout_s_; }
  // Registers a collective in flight; returns the token that end() retires. Thread-safe.
  int64_t begin(const std::string& what, int64_t step);
  void end(int64_t token);
  // Called by the watchdog thread before each check (e.g. to query CUDA events). Returns
  // only when no earlier poll is still running, so its owner may then go away.
  void set_poll(std::function<void()> poll);

  // begin() in the constructor, end() in the destructor: for blocking host collectives.
  class Scope {
   public:
    Scope(Watchdog* w, const std::string& what, int64_t step) : w_(w), token_(w ? w->begin(what, step) : -1) {}
    ~Scope() {
      if (w_) w_->end(token_);
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Watchdog* w_;
    int64_t token_;
  };

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string what;
    int64_t step;
    Clock::time_point since;
  };
  void run();

  double timeout_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int64_t next_token_ = 0;
  std::map<int64_t, Entry> in_flight_;
  std::mutex poll_mu_;  // held while the poll runs
  std::function<void()> poll_;
  std::thread thread_;
};

}  // namespace vt::comm
