// Small helpers over the HDF5 C API for the shard format: an owning identifier, quiet error
// handling, and typed reads and writes of whole datasets and attributes.
//
// Every failure throws vt::Error whose message starts with `where` (the file, and the
// dataset or attribute) and ends with HDF5's own innermost error description. HDF5's habit
// of printing its error stack to stderr is switched off while these helpers run (QuietErrors).
#pragma once

#include <hdf5.h>

#include <string>
#include <vector>

namespace vt::data::h5 {

// Owns one HDF5 identifier (file, dataset, dataspace, type, property list, attribute).
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer close) : id_(id), close_(close) {}
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& o) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  void reset();
  // Closes now and reports a failure (closing a file flushes it: errors matter there).
  void close(const std::string& where);

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// Silences HDF5's automatic error printing for this thread while alive (HDF5's error state
// is per thread in thread-safe builds), restoring the previous handler afterwards.
class QuietErrors {
 public:
  QuietErrors();
  ~QuietErrors();
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The most specific message on this thread's HDF5 error stack ("" when empty).
std::string last_error();

// Throws vt::Error "<where>: <HDF5 message>" when id < 0; otherwise takes ownership.
Id check(hid_t id, Id::Closer close, const std::string& where);

// --- writing ---------------------------------------------------------------------------
// Options for a dataset's layout: payload datasets are contiguous with their space
// allocated at creation, so that H5Dget_offset gives one file offset for the whole array.
struct Layout {
  bool contiguous_early = false;
};

// Creates dataset `name` of `file_type` with `dims` and writes `data` (mem_type, all of it).
// `data` may be null when some dimension is 0 or when the caller writes it in pieces later.
Id create_dataset(hid_t file, const std::string& name, hid_t file_type, const std::vector<hsize_t>& dims,
                  const Layout& layout, const std::string& where);
void write_all(hid_t dset, hid_t mem_type, const void* data, const std::string& where);
// Writes rows [first, first + count) of a dataset whose first dimension indexes rows.
void write_rows(hid_t dset, hid_t mem_type, hsize_t first, hsize_t count, const void* data,
                const std::string& where);
void write_strings(hid_t file, const std::string& name, const std::vector<std::string>& values,
                   const std::string& where);

void write_attr(hid_t obj, const std::string& name, int64_t value, const std::string& where);
void write_attr(hid_t obj, const std::string& name, const std::string& value, const std::string& where);
void write_attr(hid_t obj, const std::string& name, const std::vector<std::string>& values,
                const std::string& where);

// --- reading ---------------------------------------------------------------------------
enum class Kind { kUInt8, kInt32, kInt64, kFloat32, kString };
const char* kind_name(Kind k);

// Opens dataset `name`; throws "<where>: missing dataset <name>" when absent.
Id open_dataset(hid_t file, const std::string& name, const std::string& where);
std::vector<hsize_t> shape(hid_t dset, const std::string& where);
// Throws unless the dataset's stored type is of kind k (integers: exact size and sign).
void expect_kind(hid_t dset, Kind k, const std::string& where);
void read_all(hid_t dset, hid_t mem_type, void* out, const std::string& where);
std::vector<std::string> read_strings(hid_t dset, const std::string& where);

bool has_attr(hid_t obj, const std::string& name);
int64_t read_attr_int(hid_t obj, const std::string& name, const std::string& where);
std::string read_attr_string(hid_t obj, const std::string& name, const std::string& where);
std::vector<std::string> read_attr_strings(hid_t obj, const std::string& name, const std::string& where);

}  // namespace vt::data::h5
