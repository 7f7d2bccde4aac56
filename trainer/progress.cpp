// Progress bar (see progress.h).
#include "trainer/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace vt {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, std::FILE* out)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(std::max<int64_t>(total, 0)),
      out_(out),
      tty_(isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_) finish();
}

std::string ProgressBar::line(int64_t done, bool final) const {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? std::min(1.0, double(done) / total_) : 1.0;
  const double rate = secs > 0 ? done / secs : 0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  char buf[256];
  std::string s = label_ + " [" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "]";
  std::snprintf(buf, sizeof(buf), " %3d%%  %lld/%lld  %.1f %s/s", static_cast<int>(std::floor(frac * 100)),
                static_cast<long long>(done), static_cast<long long>(total_), rate, unit_.c_str());
  s += buf;
  if (final)
    s += "  in " + human_duration(secs);
  else if (rate > 0 && done < total_)
    s += "  ETA " + human_duration((total_ - done) / rate);
  if (!suffix_.empty()) s += "  " + suffix_;
  return s;
}

void ProgressBar::update(int64_t done) {
  done_ = done;
  if (finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(100) && done < total_) return;
    last_draw_ = now;
    std::fprintf(out_, "\r%s\033[K", line(done, false).c_str());  // \033[K clears what a longer line left
    std::fflush(out_);
    return;
  }
  if (total_ <= 0 || next_decile_ > 9) return;
  const int decile = static_cast<int>(done * 10 / total_);
  if (decile < next_decile_) return;
  next_decile_ = decile + 1;
  if (done < total_) std::fprintf(out_, "%s\n", line(done, false).c_str());
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_)
    std::fprintf(out_, "\r%s\033[K\n", line(done_, true).c_str());
  else
    std::fprintf(out_, "%s\n", line(done_, true).c_str());
  std::fflush(out_);
}

std::string human_bytes(int64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1000 && u < 5) v /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string human_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof(buf), "%ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace vt
