// Terminal progress for long commands (convert, synth, later training): a bar with count,
// rate and ETA. On a terminal it redraws one line in place (\r, at most 10 times a second);
// otherwise (a log file, CI) it prints a plain line at every 10% so logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace vt {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, std::string unit = "img", std::FILE* out = stderr);
  ~ProgressBar();  // finishes the line if finish() was not called
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(int64_t done);
  // Text shown after the rate and ETA (training: losses, lr, data-wait); kept until replaced.
  void set_suffix(std::string suffix) { suffix_ = std::move(suffix); }
  // Prints the final state with total time and mean rate, and ends the line.
  void finish();

 private:
  std::string line(int64_t done, bool final) const;

  std::string label_, unit_, suffix_;
  int64_t total_;
  std::FILE* out_;
  bool tty_;
  bool finished_ = false;
  int64_t done_ = 0;
  int next_decile_ = 1;  // non-terminal output: the next 10% step to print
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.5 GB", "320 kB", "12 B" (decimal units).
std::string human_bytes(int64_t bytes);
// "0:42", "12:05", "3:04:10"
std::string human_duration(double seconds);

}  // namespace vt
