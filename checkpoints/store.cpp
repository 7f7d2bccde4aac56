// The versioned checkpoint directory of a run (see store.h).
//
// Retention after every commit keeps the union of: the newest keep_last files by step; the
// best by fitness (finite values only; ties go to the newer) when keep_best; every step that
// is a multiple of milestone_every; and, always, the file `latest` names at that moment, so
// the pointer never dangles even when a run resumed from an older step commits below the
// newest. Every other file of the exact pattern is unlinked, then the directory fsynced.
#include "checkpoints/store.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>

#include "data/fileio.h"
#include "layers/check.h"

namespace vt::ckpt {
namespace {

namespace fs = std::filesystem;

constexpr char kLatest[] = "latest";
constexpr size_t kNameSize = 18;  // "ckpt-" + 10 digits + ".h5"
constexpr int64_t kMaxStep = 9'999'999'999;

// The step of a name of the exact pattern ckpt-<10 digits>.h5, or nullopt.
std::optional<int64_t> step_of(const std::string& name) {
  if (name.size() != kNameSize || name.compare(0, 5, "ckpt-") != 0 || name.compare(15, 3, ".h5") != 0)
    return std::nullopt;
  int64_t step = 0;
  for (size_t i = 5; i < 15; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// What Checkpoint::save (ckpt-<10 digits>.h5.tmp.<pid>) and write_file_atomic (latest.tmp)
// leave behind when killed before their rename.
bool is_own_temporary(const std::string& name) {
  if (name == std::string(kLatest) + ".tmp") return true;
  return name.size() >= kNameSize + 5 && step_of(name.substr(0, kNameSize)) &&
         name.compare(kNameSize, 5, ".tmp.") == 0;
}

// Names of the regular files of dir (symlinks followed); subdirectories are not entered.
std::vector<std::string> regular_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  VT_CHECK(!ec, "checkpoint store ", dir, ": cannot list: ", ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    VT_CHECK(!ec, "checkpoint store ", dir, ": cannot list: ", ec.message());
    std::error_code type_ec;
    if (it->is_regular_file(type_ec)) out.push_back(it->path().filename().string());
  }
  VT_CHECK(!ec, "checkpoint store ", dir, ": cannot list: ", ec.message());
  return out;
}

// The "fitness" attribute as commit writes it; NaN when absent or not a number.
double parse_fitness(const Checkpoint& attrs) {
  if (!attrs.has_attr("fitness")) return std::numeric_limits<double>::quiet_NaN();
  const std::string& s = attrs.get_string("fitness");
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return s.empty() || *end != '\0' ? std::numeric_limits<double>::quiet_NaN() : v;
}

}  // namespace

CheckpointStore::CheckpointStore(std::string dir, RetentionPolicy policy)
    : dir_(std::move(dir)), policy_(policy) {
  VT_CHECK(!dir_.empty(), "checkpoint store: the directory name is empty");
  VT_CHECK(policy_.keep_last >= 1, "checkpoint store ", dir_, ": keep_last is ", policy_.keep_last,
           ", must be at least 1");
  VT_CHECK(policy_.milestone_every >= 0, "checkpoint store ", dir_, ": milestone_every is ",
           policy_.milestone_every, ", must be 0 (none) or positive");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  VT_CHECK(!ec, "checkpoint store ", dir_, ": cannot create the directory: ", ec.message());
  std::vector<std::string> stale;
  for (const std::string& name : regular_files(dir_))
    if (is_own_temporary(name)) stale.push_back(name);
  remove_files(stale);
}

std::string CheckpointStore::file_name(int64_t step) {
  VT_CHECK(step >= 0 && step <= kMaxStep, "checkpoint step ", step, " does not fit a 10-digit file name");
  char buf[32];
  std::snprintf(buf, sizeof(buf), "ckpt-%010lld.h5", static_cast<long long>(step));
  return buf;
}

std::string CheckpointStore::path_of(const std::string& name) const {
  return (fs::path(dir_) / name).string();
}

std::string CheckpointStore::commit(Checkpoint& c, int64_t step, double fitness) {
  const std::string name = file_name(step);
  char text[32] = "nan";
  if (!std::isnan(fitness))
    std::snprintf(text, sizeof(text), "%.17g", fitness);  // %.17g round-trips a double
  c.set("fitness", std::string(text));
  c.set("step", step);
  const std::string path = path_of(name);
  c.save(path);
  fitness_[name] = fitness;  // the file may replace an older one of the same step
  data::write_file_atomic(path_of(kLatest), name + "\n");
  prune();
  return path;
}

std::vector<CheckpointStore::Entry> CheckpointStore::list() const {
  std::vector<Entry> out;
  for (const std::string& name : regular_files(dir_))
    if (auto step = step_of(name)) out.push_back({*step, path_of(name)});
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.step < b.step; });
  return out;
}

std::string CheckpointStore::latest() const {
  const std::string pointer = path_of(kLatest);
  if (!data::file_exists(pointer)) return "";
  std::string name = data::read_text_file(pointer);
  name = name.substr(0, name.find('\n'));
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  return name.empty() ? "" : path_of(name);
}

double CheckpointStore::fitness_of(const Entry& e) {
  const std::string name = file_name(e.step);
  auto it = fitness_.find(name);
  if (it != fitness_.end()) return it->second;
  double f = std::numeric_limits<double>::quiet_NaN();  // unreadable: ranked as having no fitness
  try {
    f = parse_fitness(Checkpoint::load_attrs(e.path));
  } catch (const Error&) {
  }
  return fitness_[name] = f;
}

void CheckpointStore::prune() {
  const std::vector<Entry> entries = list();
  const std::string pointed = latest();
  std::set<int64_t> keep;
  const size_t n = entries.size();
  for (size_t i = n > static_cast<size_t>(policy_.keep_last) ? n - policy_.keep_last : 0; i < n; ++i)
    keep.insert(entries[i].step);
  if (policy_.keep_best) {
    const Entry* best = nullptr;
    double best_fitness = 0;
    for (const Entry& e : entries) {  // ascending step: >= hands ties to the newer
      const double f = fitness_of(e);
      if (std::isfinite(f) && (!best || f >= best_fitness)) {
        best = &e;
        best_fitness = f;
      }
    }
    if (best) keep.insert(best->step);
  }
  std::vector<std::string> doomed;
  for (const Entry& e : entries) {
    const bool milestone = policy_.milestone_every > 0 && e.step % policy_.milestone_every == 0;
    if (keep.count(e.step) || milestone || e.path == pointed) continue;
    doomed.push_back(file_name(e.step));
    fitness_.erase(doomed.back());
  }
  remove_files(doomed);
}

void CheckpointStore::remove_files(const std::vector<std::string>& names) const {
  for (const std::string& name : names) {
    const std::string path = path_of(name);
    VT_CHECK(::unlink(path.c_str()) == 0 || errno == ENOENT, "checkpoint store: cannot delete ", path, ": ",
             std::strerror(errno));
  }
  if (!names.empty()) data::sync_path(dir_);
}

std::optional<std::pair<std::string, Checkpoint>> CheckpointStore::load_newest_good(
    std::vector<std::string>* notes) const {
  std::vector<std::string> candidates;
  std::string pointed;
  try {
    pointed = latest();
  } catch (const Error& e) {
    if (notes)
      notes->push_back(
          cat("cannot read ", path_of(kLatest), " (", e.what(), "); falling back to the checkpoint files"));
  }
  if (!pointed.empty()) candidates.push_back(pointed);
  const std::vector<Entry> entries = list();
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    if (it->path != pointed) candidates.push_back(it->path);
  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      return std::make_pair(candidates[i], Checkpoint::load(candidates[i]));
    } catch (const std::exception& e) {  // not only vt::Error: a garbled shape can fail to allocate
      if (!notes) continue;
      notes->push_back(cat("skipping ", candidates[i], candidates[i] == pointed ? " (named by latest)" : "",
                           ": ", e.what(), "; ",
                           i + 1 < candidates.size() ? cat("falling back to ", candidates[i + 1])
                                                     : std::string("no older checkpoint to fall back to")));
    }
  }
  return std::nullopt;
}

}  // namespace vt::ckpt
