// HDF5 helpers for the shard format (see h5.h).
#include "data/h5.h"

#include <cstring>

#include "layers/check.h"

namespace vt::data::h5 {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  const std::string detail = last_error();
  throw Error(detail.empty() ? cat(where, ": ", what) : cat(where, ": ", what, " (HDF5: ", detail, ")"));
}

void ok(herr_t rc, const std::string& where, const char* what) {
  if (rc < 0) fail(where, what);
}

// A variable-length UTF-8 string type, for file_name and class_names.
Id vlen_string_type(const std::string& where) {
  Id t = check(H5Tcopy(H5T_C_S1), H5Tclose, where);
  ok(H5Tset_size(t.get(), H5T_VARIABLE), where, "H5Tset_size");
  ok(H5Tset_cset(t.get(), H5T_CSET_UTF8), where, "H5Tset_cset");
  return t;
}

Id simple_space(const std::vector<hsize_t>& dims, const std::string& where) {
  return check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, where);
}

hsize_t elements(const std::vector<hsize_t>& dims) {
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  return n;
}

std::string describe(hid_t type) {
  const size_t size = H5Tget_size(type);
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return cat(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", size * 8);
    case H5T_FLOAT:
      return cat("float", size * 8);
    case H5T_STRING:
      return H5Tis_variable_str(type) > 0 ? "variable-length string"
                                          : cat("fixed string of ", size, " bytes");
    default:
      return "a compound or other non-scalar type";
  }
}

bool is_kind(hid_t type, Kind k) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  switch (k) {
    case Kind::kUInt8:
      return cls == H5T_INTEGER && size == 1 && H5Tget_sign(type) == H5T_SGN_NONE;
    case Kind::kInt32:
      return cls == H5T_INTEGER && size == 4 && H5Tget_sign(type) == H5T_SGN_2;
    case Kind::kInt64:
      return cls == H5T_INTEGER && size == 8 && H5Tget_sign(type) == H5T_SGN_2;
    case Kind::kFloat32:
      return cls == H5T_FLOAT && size == 4;
    case Kind::kString:
      return cls == H5T_STRING;
  }
  return false;
}

// Reads n strings of a string-typed dataset (is_attr false) or attribute, vlen or fixed.
std::vector<std::string> read_string_object(hid_t obj, bool is_attr, hsize_t n, const std::string& where) {
  Id file_type = check(is_attr ? H5Aget_type(obj) : H5Dget_type(obj), H5Tclose, where);
  if (H5Tget_class(file_type.get()) != H5T_STRING)
    fail(where, cat("has type ", describe(file_type.get()), ", expected strings"));
  std::vector<std::string> out(n);
  if (n == 0) return out;
  if (H5Tis_variable_str(file_type.get()) > 0) {
    Id mem = vlen_string_type(where);
    std::vector<char*> ptrs(n, nullptr);
    ok(is_attr ? H5Aread(obj, mem.get(), ptrs.data())
               : H5Dread(obj, mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()),
       where, "reading strings");
    for (hsize_t i = 0; i < n; ++i) out[i] = ptrs[i] ? ptrs[i] : "";
    Id space = simple_space({n}, where);
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
#else
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
#endif
    return out;
  }
  const size_t size = H5Tget_size(file_type.get());
  Id mem = check(H5Tcopy(H5T_C_S1), H5Tclose, where);
  ok(H5Tset_size(mem.get(), size), where, "H5Tset_size");
  std::vector<char> buf(n * size);
  ok(is_attr ? H5Aread(obj, mem.get(), buf.data())
             : H5Dread(obj, mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()),
     where, "reading strings");
  for (hsize_t i = 0; i < n; ++i)
    out[i] = std::string(buf.data() + i * size, strnlen(buf.data() + i * size, size));
  return out;
}

Id open_attr(hid_t obj, const std::string& name, const std::string& where) {
  if (!has_attr(obj, name)) fail(where, cat("missing attribute ", name));
  return check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, cat(where, ": attribute ", name));
}

hsize_t attr_elements(hid_t attr, const std::string& where) {
  Id space = check(H5Aget_space(attr), H5Sclose, where);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0) fail(where, "bad dataspace");
  return static_cast<hsize_t>(n);
}

}  // namespace

Id& Id::operator=(Id&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Id::reset() {
  if (id_ >= 0 && close_) close_(id_);
  id_ = H5I_INVALID_HID;
}

void Id::close(const std::string& where) {
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  if (id >= 0 && close_ && close_(id) < 0) fail(where, "closing failed");
}

QuietErrors::QuietErrors() {
  H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

QuietErrors::~QuietErrors() {
  H5Eset_auto2(H5E_DEFAULT, func_, data_);
}

std::string last_error() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        if (e->desc && *e->desc) *static_cast<std::string*>(out) = e->desc;  // the last is the innermost
        return 0;
      },
      &msg);
  return msg;
}

Id check(hid_t id, Id::Closer close, const std::string& where) {
  if (id < 0) fail(where, "HDF5 call failed");
  return Id(id, close);
}

Id create_dataset(hid_t file, const std::string& name, hid_t file_type, const std::vector<hsize_t>& dims,
                  const Layout& layout, const std::string& where) {
  const std::string at = cat(where, ": dataset ", name);
  Id space = simple_space(dims, at);
  Id dcpl = check(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, at);
  // No modification times in object headers: equal content gives byte-identical files.
  ok(H5Pset_obj_track_times(dcpl.get(), false), at, "H5Pset_obj_track_times");
  if (layout.contiguous_early) {
    ok(H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS), at, "H5Pset_layout");
    ok(H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY), at, "H5Pset_alloc_time");
    ok(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), at, "H5Pset_fill_time");  // written once, by us
  }
  return check(H5Dcreate2(file, name.c_str(), file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
               H5Dclose, at);
}

void write_all(hid_t dset, hid_t mem_type, const void* data, const std::string& where) {
  Id space = check(H5Dget_space(dset), H5Sclose, where);
  if (H5Sget_simple_extent_npoints(space.get()) == 0) return;
  ok(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where, "H5Dwrite");
}

void write_rows(hid_t dset, hid_t mem_type, hsize_t first, hsize_t count, const void* data,
                const std::string& where) {
  if (count == 0) return;
  Id fspace = check(H5Dget_space(dset), H5Sclose, where);
  const int rank = H5Sget_simple_extent_ndims(fspace.get());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(fspace.get(), dims.data(), nullptr);
  std::vector<hsize_t> start(dims.size(), 0), counts = dims;
  start[0] = first;
  counts[0] = count;
  ok(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, counts.data(), nullptr), where,
     "H5Sselect_hyperslab");
  Id mspace = simple_space(counts, where);
  ok(H5Dwrite(dset, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, data), where, "H5Dwrite");
}

void write_strings(hid_t file, const std::string& name, const std::vector<std::string>& values,
                   const std::string& where) {
  Id type = vlen_string_type(where);
  Id dset = create_dataset(file, name, type.get(), {values.size()}, {}, where);
  std::vector<const char*> ptrs;
  for (const std::string& s : values) ptrs.push_back(s.c_str());
  write_all(dset.get(), type.get(), ptrs.data(), cat(where, ": dataset ", name));
}

void write_attr(hid_t obj, const std::string& name, int64_t value, const std::string& where) {
  const std::string at = cat(where, ": attribute ", name);
  Id space = check(H5Screate(H5S_SCALAR), H5Sclose, at);
  Id attr = check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                  H5Aclose, at);
  ok(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), at, "H5Awrite");
}

void write_attr(hid_t obj, const std::string& name, const std::string& value, const std::string& where) {
  const std::string at = cat(where, ": attribute ", name);
  Id type = vlen_string_type(at);
  Id space = check(H5Screate(H5S_SCALAR), H5Sclose, at);
  Id attr =
      check(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, at);
  const char* p = value.c_str();
  ok(H5Awrite(attr.get(), type.get(), &p), at, "H5Awrite");
}

void write_attr(hid_t obj, const std::string& name, const std::vector<std::string>& values,
                const std::string& where) {
  const std::string at = cat(where, ": attribute ", name);
  Id type = vlen_string_type(at);
  Id space = simple_space({values.size()}, at);
  Id attr =
      check(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, at);
  std::vector<const char*> ptrs;
  for (const std::string& s : values) ptrs.push_back(s.c_str());
  ok(H5Awrite(attr.get(), type.get(), ptrs.data()), at, "H5Awrite");
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kUInt8:
      return "uint8";
    case Kind::kInt32:
      return "int32";
    case Kind::kInt64:
      return "int64";
    case Kind::kFloat32:
      return "float32";
    case Kind::kString:
      return "string";
  }
  return "?";
}

Id open_dataset(hid_t file, const std::string& name, const std::string& where) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) fail(where, cat("missing dataset ", name));
  return check(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose, cat(where, ": dataset ", name));
}

std::vector<hsize_t> shape(hid_t dset, const std::string& where) {
  Id space = check(H5Dget_space(dset), H5Sclose, where);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail(where, "bad dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return dims;
}

void expect_kind(hid_t dset, Kind k, const std::string& where) {
  Id type = check(H5Dget_type(dset), H5Tclose, where);
  if (!is_kind(type.get(), k))
    throw Error(cat(where, " has type ", describe(type.get()), ", expected ", kind_name(k)));
}

void read_all(hid_t dset, hid_t mem_type, void* out, const std::string& where) {
  Id space = check(H5Dget_space(dset), H5Sclose, where);
  if (H5Sget_simple_extent_npoints(space.get()) == 0) return;
  ok(H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), where, "H5Dread");
}

std::vector<std::string> read_strings(hid_t dset, const std::string& where) {
  const std::vector<hsize_t> dims = shape(dset, where);
  return read_string_object(dset, false, elements(dims), where);
}

bool has_attr(hid_t obj, const std::string& name) {
  return H5Aexists(obj, name.c_str()) > 0;
}

int64_t read_attr_int(hid_t obj, const std::string& name, const std::string& where) {
  const std::string at = cat(where, ": attribute ", name);
  Id attr = open_attr(obj, name, where);
  Id type = check(H5Aget_type(attr.get()), H5Tclose, at);
  if (H5Tget_class(type.get()) != H5T_INTEGER || attr_elements(attr.get(), at) != 1)
    throw Error(cat(at, " has type ", describe(type.get()), ", expected one integer"));
  int64_t v = 0;
  ok(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), at, "H5Aread");
  return v;
}

std::string read_attr_string(hid_t obj, const std::string& name, const std::string& where) {
  const std::string at = cat(where, ": attribute ", name);
  Id attr = open_attr(obj, name, where);
  if (attr_elements(attr.get(), at) != 1) throw Error(cat(at, " is not a single string"));
  return read_string_object(attr.get(), true, 1, at)[0];
}

std::vector<std::string> read_attr_strings(hid_t obj, const std::string& name, const std::string& where) {
  const std::string at = cat(where, ": attribute ", name);
  Id attr = open_attr(obj, name, where);
  return read_string_object(attr.get(), true, attr_elements(attr.get(), at), at);
}

}  // namespace vt::data::h5
