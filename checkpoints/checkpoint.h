// One checkpoint file: named fp32 tensors and attributes in a self-describing HDF5 file.
//
// Tensors are addressed "group/name" (one level of groups: "params/model.0.conv.weight",
// "ema/...", "optim/momentum"), each with its shape and a CRC32C of its bytes stored as the
// dataset's `crc32c` attribute; attributes are int64 or string (structured values go in as
// JSON text). save() writes a temp file in the target's directory, fsyncs it, renames it
// over the target and fsyncs the directory, so a file at `path` is always complete. load()
// verifies every tensor's CRC and names the file and tensor on a mismatch. The file reads
// with h5py and h5dump. Layout and fields: docs/formats/checkpoint.md. A run's directory of
// versioned checkpoints is store.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vt::ckpt {

constexpr int64_t kFormatVersion = 1;

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, product(shape) values
};

class Checkpoint {
 public:
  // Adds or replaces a tensor; throws if data.size() != product(shape) or the name is not
  // "name" or "group/name".
  void put(const std::string& name, std::vector<int64_t> shape, std::vector<float> data);
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  // Throws vt::Error naming the tensor when absent.
  const HostTensor& get(const std::string& name) const;
  const std::map<std::string, HostTensor>& tensors() const { return tensors_; }

  void set(const std::string& key, int64_t value) { ints_[key] = value; }
  void set(const std::string& key, const std::string& value) { strings_[key] = value; }
  int64_t get_int(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool has_attr(const std::string& key) const { return ints_.count(key) || strings_.count(key); }

  // Atomic write (see the file comment). Records kFormatVersion.
  void save(const std::string& path) const;
  // Reads and verifies; throws vt::Error naming `path` (and the tensor) when the file is
  // missing, truncated, not a checkpoint, of a newer format, or fails a CRC.
  static Checkpoint load(const std::string& path);
  // Reads only the root attributes (no tensors, no CRC checks): cheap enough to rank every
  // checkpoint of a run by its "fitness". Throws like load() when the file cannot be opened.
  static Checkpoint load_attrs(const std::string& path);

 private:
  std::map<std::string, HostTensor> tensors_;
  std::map<std::string, int64_t> ints_;
  std::map<std::string, std::string> strings_;
};

}  // namespace vt::ckpt
