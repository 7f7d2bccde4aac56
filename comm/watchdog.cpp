// The collective watchdog (see watchdog.h).
#include "comm/watchdog.h"

#include <algorithm>
#include <cstdio>

#include "comm/world.h"

namespace vt::comm {

Watchdog::Watchdog(double timeout_s) : timeout_s_(timeout_s) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t Watchdog::begin(const std::string& what, int64_t step) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t token = next_token_++;
  in_flight_[token] = {what, step, Clock::now()};
  return token;
}

void Watchdog::end(int64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.erase(token);
}

void Watchdog::set_poll(std::function<void()> poll) {
  std::lock_guard<std::mutex> running(poll_mu_);
  std::lock_guard<std::mutex> lock(mu_);
  poll_ = std::move(poll);
}

void Watchdog::run() {
  // Check every second, or a tenth of the timeout when that is shorter (tests use 2 s).
  const auto period = std::chrono::duration<double>(std::min(1.0, timeout_s_ / 10));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [this] { return stop_; })) {
    lock.unlock();  // the poll retires entries through end()
    {
      std::lock_guard<std::mutex> running(poll_mu_);
      std::function<void()> poll;
      {
        std::lock_guard<std::mutex> l(mu_);
        poll = poll_;
      }
      if (poll) poll();
    }
    lock.lock();
    const auto now = Clock::now();
    for (const auto& [token, e] : in_flight_) {
      const double age = std::chrono::duration<double>(now - e.since).count();
      if (age < timeout_s_) continue;
      const World& w = world();
      std::fprintf(stderr,
                   "\n[rank %d @ %s] watchdog: %s (step %lld) has not finished after %.0f s (--comm-timeout %g): "
                   "another rank is hung, stuck outside the collective, or dead. Aborting the job.\n",
                   w.rank, w.host.c_str(), e.what.c_str(), (long long)e.step, age, timeout_s_);
      abort_job(3);
    }
  }
}

}  // namespace vt::comm
