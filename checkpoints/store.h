// The versioned checkpoint directory of a training run: what `--resume auto` resumes from.
//
// Every commit is a new immutable file <dir>/ckpt-<step, 10 digits>.h5 (Checkpoint::save,
// atomic), followed by an atomic rewrite of <dir>/latest, a one-line text file naming it,
// followed by pruning by a RetentionPolicy. A kill at any moment therefore leaves the previous
// checkpoint and `latest` valid, plus at worst a temporary file that the next CheckpointStore
// on the directory removes. Resuming does not trust `latest` blindly: load_newest_good() loads
// and verifies candidates newest first and says why it skipped any. Files of any other name in
// the directory are never touched. Layout and guarantees: docs/formats/checkpoint.md.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "checkpoints/checkpoint.h"

namespace vt::ckpt {

struct RetentionPolicy {
  int keep_last = 3;            // the newest K checkpoints (K >= 1)
  bool keep_best = true;        // the one with the highest "fitness" attribute (ties: the newer)
  int64_t milestone_every = 0;  // also keep every checkpoint whose step is a multiple of M (0: none)
};

// A run's versioned checkpoints: <dir>/ckpt-<step, zero-padded to 10 digits>.h5 and <dir>/latest,
// a one-line text file holding the current checkpoint's file name.
class CheckpointStore {
 public:
  // Creates dir if needed; removes this store's own stale temporaries (ckpt-<10 digits>.h5.tmp.* and
  // latest.tmp) left by a killed writer. Nothing else is touched.
  CheckpointStore(std::string dir, RetentionPolicy policy);
  const std::string& dir() const { return dir_; }
  static std::string file_name(int64_t step);  // "ckpt-0000000123.h5"; 0 <= step < 10^10

  // Sets c's "fitness" string attribute ("%.17g", or "nan" when there is none) and "step" int attribute,
  // saves it as ckpt-<step>.h5 (Checkpoint::save: atomic), then rewrites `latest` atomically to name it, then
  // prunes by the policy. Returns the checkpoint's path. Only one thread calls commit at a time (the
  // trainer's writer thread).
  std::string commit(Checkpoint& c, int64_t step, double fitness);

  struct Entry {
    int64_t step;
    std::string path;
  };
  std::vector<Entry> list() const;  // files of the exact pattern ckpt-<10 digits>.h5, ascending step
  std::string latest() const;       // the path `latest` names ("" when there is no latest file)

  // --resume auto: the newest checkpoint that verifies. Candidates in order: latest's target, then every
  // other pattern file newest first. Each is loaded fully (Checkpoint::load verifies every CRC). A candidate
  // that fails (missing, truncated, not HDF5, CRC mismatch, latest naming a missing file) is skipped with one
  // line appended to *notes naming the file and the reason (the vt::Error text) and saying it falls back.
  // Returns nullopt when none verifies. notes may be null.
  std::optional<std::pair<std::string, Checkpoint>> load_newest_good(std::vector<std::string>* notes) const;

 private:
  std::string path_of(const std::string& name) const;
  // Deletes every pattern file the policy does not keep (see the .cpp for the rule).
  void prune();
  // The stored fitness of a committed file, NaN when it has none or cannot be read; cached,
  // since committed files never change.
  double fitness_of(const Entry& e);
  // Unlinks the named files of dir_, then fsyncs dir_ once.
  void remove_files(const std::vector<std::string>& names) const;

  std::string dir_;
  RetentionPolicy policy_;
  std::map<std::string, double> fitness_;  // file name -> fitness
};

}  // namespace vt::ckpt
