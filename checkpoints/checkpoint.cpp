// Checkpoint files in HDF5 (see checkpoint.h).
#include "checkpoints/checkpoint.h"

#include <hdf5.h>
#include <unistd.h>

#include <set>

#include "data/crc32c.h"
#include "data/fileio.h"
#include "data/h5.h"
#include "layers/check.h"

namespace vt::ckpt {

namespace h5 = vt::data::h5;

namespace {

int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

uint32_t crc_of(const std::vector<float>& v) { return data::crc32c(v.data(), v.size() * sizeof(float)); }

// Visits every dataset of the file (depth 1 below the root's groups): collects "group/name".
herr_t collect(hid_t, const char* name, const H5O_info_t* info, void* out) {
  if (info->type == H5O_TYPE_DATASET) static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

// Opens a checkpoint for reading and checks its format version (the caller holds QuietErrors).
h5::Id open_checkpoint(const std::string& path) {
  VT_CHECK(data::file_exists(path), "checkpoint ", path, " does not exist");
  h5::Id file = h5::check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose,
                          cat("checkpoint ", path, " cannot be opened (truncated or not HDF5)"));
  VT_CHECK(h5::has_attr(file.get(), "format_version"), "checkpoint ", path, ": no format_version: not a checkpoint");
  const int64_t version = h5::read_attr_int(file.get(), "format_version", path);
  VT_CHECK(version >= 1 && version <= kFormatVersion, "checkpoint ", path, ": format version ", version,
           " is newer than this program's (", kFormatVersion, ")");
  return file;
}

// Copies the root's attributes (integers and strings, all but format_version) into c.
void read_root_attrs(hid_t file, const std::string& path, Checkpoint& c) {
  std::vector<std::string> keys;
  auto visit = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  VT_CHECK(H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, nullptr, visit, &keys) >= 0, "checkpoint ", path,
           ": cannot list its attributes: ", h5::last_error());
  for (const std::string& key : keys) {
    if (key == "format_version") continue;
    h5::Id a = h5::check(H5Aopen(file, key.c_str(), H5P_DEFAULT), H5Aclose, path);
    h5::Id type = h5::check(H5Aget_type(a.get()), H5Tclose, path);
    if (H5Tget_class(type.get()) == H5T_STRING) c.set(key, h5::read_attr_string(file, key, path));
    else c.set(key, h5::read_attr_int(file, key, path));
  }
}

}  // namespace

void Checkpoint::put(const std::string& name, std::vector<int64_t> shape, std::vector<float> data) {
  const size_t slash = name.find('/');
  VT_CHECK(!name.empty() && name.front() != '/' && name.back() != '/' &&
               (slash == std::string::npos || name.find('/', slash + 1) == std::string::npos),
           "checkpoint tensor name '", name, "' must be 'name' or 'group/name'");
  VT_CHECK(product(shape) == static_cast<int64_t>(data.size()), "checkpoint tensor '", name, "': ", data.size(),
           " values for a shape of ", product(shape));
  tensors_[name] = {std::move(shape), std::move(data)};
}

const HostTensor& Checkpoint::get(const std::string& name) const {
  auto it = tensors_.find(name);
  VT_CHECK(it != tensors_.end(), "checkpoint has no tensor '", name, "'");
  return it->second;
}

int64_t Checkpoint::get_int(const std::string& key) const {
  auto it = ints_.find(key);
  VT_CHECK(it != ints_.end(), "checkpoint has no integer attribute '", key, "'");
  return it->second;
}

const std::string& Checkpoint::get_string(const std::string& key) const {
  auto it = strings_.find(key);
  VT_CHECK(it != strings_.end(), "checkpoint has no string attribute '", key, "'");
  return it->second;
}

void Checkpoint::save(const std::string& path) const {
  const std::string tmp = cat(path, ".tmp.", getpid());
  {
    h5::QuietErrors quiet;
    h5::Id file = h5::check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose, tmp);
    std::set<std::string> groups;
    for (const auto& [name, t] : tensors_) {
      const size_t slash = name.find('/');
      if (slash != std::string::npos && groups.insert(name.substr(0, slash)).second) {
        h5::Id g = h5::check(H5Gcreate2(file.get(), name.substr(0, slash).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                             H5Gclose, cat(tmp, ": group ", name.substr(0, slash)));
      }
      std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
      h5::Id d = h5::create_dataset(file.get(), name, H5T_IEEE_F32LE, dims, {}, tmp);
      h5::write_all(d.get(), H5T_NATIVE_FLOAT, t.data.data(), cat(tmp, ": ", name));
      h5::write_attr(d.get(), "crc32c", static_cast<int64_t>(crc_of(t.data)), cat(tmp, ": ", name));
    }
    h5::write_attr(file.get(), "format_version", kFormatVersion, tmp);
    for (const auto& [k, v] : ints_) h5::write_attr(file.get(), k, v, tmp);
    for (const auto& [k, v] : strings_) h5::write_attr(file.get(), k, v, tmp);
    file.close(tmp);
  }
  data::sync_path(tmp);
  data::commit_rename(tmp, path);
}

Checkpoint Checkpoint::load(const std::string& path) {
  h5::QuietErrors quiet;
  h5::Id file = open_checkpoint(path);
  Checkpoint c;
  std::vector<std::string> names;
  VT_CHECK(H5Ovisit2(file.get(), H5_INDEX_NAME, H5_ITER_INC, collect, &names, H5O_INFO_BASIC) >= 0, "checkpoint ",
           path, ": cannot list its datasets: ", h5::last_error());
  for (const std::string& name : names) {
    const std::string where = cat("checkpoint ", path, ": tensor ", name);
    h5::Id d = h5::open_dataset(file.get(), name, path);
    h5::expect_kind(d.get(), h5::Kind::kFloat32, where);
    const std::vector<hsize_t> dims = h5::shape(d.get(), where);
    HostTensor t;
    t.shape.assign(dims.begin(), dims.end());
    t.data.resize(static_cast<size_t>(product(t.shape)));
    h5::read_all(d.get(), H5T_NATIVE_FLOAT, t.data.data(), where);
    const int64_t crc = h5::read_attr_int(d.get(), "crc32c", where);
    VT_CHECK(static_cast<uint32_t>(crc) == crc_of(t.data), where, ": CRC32C mismatch (stored ", crc, ", computed ",
             crc_of(t.data), "): the file is corrupt");
    c.tensors_[name] = std::move(t);
  }
  read_root_attrs(file.get(), path, c);
  return c;
}

Checkpoint Checkpoint::load_attrs(const std::string& path) {
  h5::QuietErrors quiet;
  h5::Id file = open_checkpoint(path);
  Checkpoint c;
  read_root_attrs(file.get(), path, c);
  return c;
}

}  // namespace vt::ckpt
