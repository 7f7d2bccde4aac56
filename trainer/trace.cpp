// The Chrome trace writer (see trace.h).
#include "trainer/trace.h"

#include <cstdio>
#include <fstream>

#include "comm/world.h"
#include "layers/check.h"

namespace vt {

Trace::Trace(std::string path, int64_t max_steps) : path_(std::move(path)), max_steps_(max_steps) {}

void Trace::add(const std::string& name, Track track, double start_s, double end_s, int64_t step) {
  if (!on(step)) return;
  events_.push_back({{"name", name},
                     {"ph", "X"},
                     {"pid", comm::world().rank},
                     {"tid", int(track)},
                     {"ts", start_s * 1e6},
                     {"dur", std::max(0.0, end_s - start_s) * 1e6},
                     {"args", {{"step", step}}}});
}

void Trace::write() {
  if (path_.empty()) return;
  const comm::World& w = comm::world();
  nlohmann::json mine = events_;
  mine.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", w.rank},
                  {"args", {{"name", cat("rank ", w.rank, " @ ", w.host)}}}});
  mine.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", w.rank}, {"args", {{"sort_index", w.rank}}}});
  const char* threads[] = {"step", "communication"};
  for (int t = 0; t < 2; ++t)
    mine.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", w.rank}, {"tid", t}, {"args", {{"name", threads[t]}}}});
  const std::vector<std::string> all = comm::gather_string(mine.dump(), 0);
  if (w.rank != 0) return;
  nlohmann::json events = nlohmann::json::array();
  for (const auto& text : all)
    for (auto& e : nlohmann::json::parse(text)) events.push_back(std::move(e));
  std::ofstream out(path_);
  VT_CHECK(out.good(), "--trace: cannot write ", path_);
  out << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  VT_CHECK(out.good(), "--trace: writing ", path_, " failed");
  std::printf("trace: %zu events of %d ranks in %s (open it in https://ui.perfetto.dev)\n", events.size(), w.size,
              path_.c_str());
}

}  // namespace vt
