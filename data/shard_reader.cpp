// ShardReader: open-time validation of one shard, in-memory metadata, and pread access to
// image payloads (see shard.h).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/crc32c.h"
#include "data/h5.h"
#include "data/shard.h"
#include "layers/check.h"

namespace vt::data {
namespace {

std::string shape_text(const std::vector<hsize_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += cat(i ? ", " : "", dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Opens `name`, checks its type and exact shape, and reads it whole into `out`.
template <class T>
void read_checked(hid_t file, const std::string& name, h5::Kind kind, hid_t mem_type,
                  const std::vector<hsize_t>& want, std::vector<T>& out, const std::string& where) {
  h5::Id d = h5::open_dataset(file, name, where);
  const std::string at = cat(where, ": dataset ", name);
  h5::expect_kind(d.get(), kind, at);
  const std::vector<hsize_t> got = h5::shape(d.get(), at);
  if (got != want) throw Error(cat(at, " has shape ", shape_text(got), ", expected ", shape_text(want)));
  hsize_t n = 1;
  for (hsize_t x : want) n *= x;
  out.resize(n);
  h5::read_all(d.get(), mem_type, out.data(), at);
}

void check_offsets(const std::vector<int64_t>& off, int64_t last, bool strict, const std::string& at) {
  if (off.front() != 0) throw Error(cat(at, ": first offset is ", off.front(), ", expected 0"));
  for (size_t i = 1; i < off.size(); ++i)
    if (strict ? off[i] <= off[i - 1] : off[i] < off[i - 1])
      throw Error(cat(at, ": offsets not ", strict ? "increasing" : "monotone", " at image ", i - 1, " (",
                      off[i - 1], " then ", off[i], ")"));
  if (off.back() != last) throw Error(cat(at, ": last offset is ", off.back(), ", expected ", last));
}

}  // namespace

ShardReader::ShardReader(const std::string& dir, const ShardEntry& entry, const Schema& schema,
                         const std::string& manifest)
    : schema_(schema) {
  const std::string path = (std::filesystem::path(dir) / entry.file).string();
  const std::string where = cat("shard ", path);
  if (!file_exists(path)) throw Error(cat("missing shard ", path, " listed in ", manifest));
  const int64_t bytes = file_size(path);
  if (bytes != entry.bytes)
    throw Error(cat(where, ": file is ", bytes, " bytes but ", manifest, " lists ", entry.bytes,
                    " (truncated, or replaced after conversion)"));
  file_ = ReadOnlyFile(path);

  h5::QuietErrors quiet;
  h5::Id fapl = h5::check(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, where);
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl.get(), false, true);  // read-only; locks fail on some cluster file systems
#endif
  const hid_t fid = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (fid < 0) {
    const std::string detail = h5::last_error();
    throw Error(cat(where, ": not a readable HDF5 file (truncated or corrupt?)",
                    detail.empty() ? "" : " (HDF5: ", detail, detail.empty() ? "" : ")"));
  }
  h5::Id file(fid, H5Fclose);

  // Attributes, against the manifest.
  const int64_t version = h5::read_attr_int(fid, "schema_version", where);
  VT_CHECK(version == kSchemaVersion, where, ": schema_version ", version, ", expected ", kSchemaVersion);
  const std::string storage = h5::read_attr_string(fid, "storage", where);
  VT_CHECK(storage == storage_name(schema.storage), where, ": attribute storage is \"", storage, "\" but ",
           manifest, " says \"", storage_name(schema.storage), "\"");
  const int64_t imgsz = h5::read_attr_int(fid, "imgsz", where);
  VT_CHECK(imgsz == schema.imgsz, where, ": attribute imgsz is ", imgsz, " but ", manifest, " says ",
           schema.imgsz);
  const int64_t n = h5::read_attr_int(fid, "num_images", where),
                nb = h5::read_attr_int(fid, "num_boxes", where);
  VT_CHECK(n == entry.images && nb == entry.boxes && n > 0, where, ": attributes say ", n, " images and ", nb,
           " boxes but ", manifest, " lists ", entry.images, " and ", entry.boxes);
  VT_CHECK(h5::read_attr_strings(fid, "class_names", where) == schema.class_names, where,
           ": attribute class_names differs from the class names in ", manifest);
  const int64_t crc = h5::read_attr_int(fid, "content_crc32c", where);
  VT_CHECK(crc == int64_t(entry.crc32c), where, ": attribute content_crc32c ", crc, " differs from ",
           manifest);
  stored_crc_ = static_cast<uint32_t>(crc);

  // Metadata datasets, exact types and shapes.
  const hsize_t N = hsize_t(n), NB = hsize_t(nb);
  ShardArrays& a = arrays_;
  const bool raw = schema.storage == Storage::kRaw;
  if (raw)
    read_checked(fid, "/letterbox", h5::Kind::kFloat32, H5T_NATIVE_FLOAT, {N, 3}, a.letterbox, where);
  else
    read_checked(fid, "/image_offsets", h5::Kind::kInt64, H5T_NATIVE_INT64, {N + 1}, a.image_offsets, where);
  read_checked(fid, "/box_offsets", h5::Kind::kInt64, H5T_NATIVE_INT64, {N + 1}, a.box_offsets, where);
  read_checked(fid, "/boxes", h5::Kind::kFloat32, H5T_NATIVE_FLOAT, {NB, 4}, a.boxes, where);
  read_checked(fid, "/classes", h5::Kind::kInt32, H5T_NATIVE_INT32, {NB}, a.classes, where);
  read_checked(fid, "/orig_size", h5::Kind::kInt32, H5T_NATIVE_INT32, {N, 2}, a.orig_size, where);
  read_checked(fid, "/image_id", h5::Kind::kInt64, H5T_NATIVE_INT64, {N}, a.image_id, where);
  {
    h5::Id d = h5::open_dataset(fid, "/file_name", where);
    const std::string at = cat(where, ": dataset /file_name");
    h5::expect_kind(d.get(), h5::Kind::kString, at);
    const std::vector<hsize_t> got = h5::shape(d.get(), at);
    if (got != std::vector<hsize_t>{N})
      throw Error(cat(at, " has shape ", shape_text(got), ", expected (", N, ",)"));
    a.file_name = h5::read_strings(d.get(), at);
  }

  // The payload: type, shape, and a contiguous allocation inside the file.
  const std::string payload_name = raw ? "/images" : "/image_bytes";
  const std::string at = cat(where, ": dataset ", payload_name);
  h5::Id payload = h5::open_dataset(fid, payload_name, where);
  h5::expect_kind(payload.get(), h5::Kind::kUInt8, at);
  const std::vector<hsize_t> got = h5::shape(payload.get(), at);
  const hsize_t S = hsize_t(schema.imgsz);
  if (raw && got != std::vector<hsize_t>{N, S, S, 3})
    throw Error(cat(at, " has shape ", shape_text(got), ", expected ", shape_text({N, S, S, 3})));
  if (!raw && got.size() != 1)
    throw Error(cat(at, " has shape ", shape_text(got), ", expected (total_bytes,)"));
  payload_total_ = raw ? int64_t(N * S * S * 3) : int64_t(got[0]);
  {
    h5::Id dcpl = h5::check(H5Dget_create_plist(payload.get()), H5Pclose, at);
    const haddr_t offset = H5Dget_offset(payload.get());
    if (H5Pget_layout(dcpl.get()) != H5D_CONTIGUOUS || offset == HADDR_UNDEF)
      throw Error(
          cat(at,
              " is not stored contiguously in the file (the schema requires it, so that images can be "
              "read with pread)"));
    payload_offset_ = static_cast<int64_t>(offset);
    if (payload_offset_ + payload_total_ > bytes)
      throw Error(cat(at, " extends past the end of the file (truncated?)"));
  }

  // Offsets and values.
  if (!raw) check_offsets(a.image_offsets, payload_total_, true, cat(where, ": dataset /image_offsets"));
  check_offsets(a.box_offsets, nb, false, cat(where, ": dataset /box_offsets"));
  const int ncls = static_cast<int>(schema.class_names.size());
  for (int64_t i = 0; i < n; ++i) {
    const int32_t h = a.orig_size[2 * i], w = a.orig_size[2 * i + 1];
    VT_CHECK(h > 0 && w > 0, where, ": dataset /orig_size: image ", i, " (", a.file_name[i], ") has size ", h,
             "x", w);
    if (raw) {
      const float* lb = &a.letterbox[3 * i];
      VT_CHECK(std::isfinite(lb[0]) && lb[0] > 0 && std::isfinite(lb[1]) && std::isfinite(lb[2]), where,
               ": dataset /letterbox: bad mapping for image ", i, " (", a.file_name[i], ")");
    }
    const float W = raw ? float(schema.imgsz) : float(w), H = raw ? float(schema.imgsz) : float(h);
    const float tol = 1e-3f * std::max(W, H);
    for (int64_t k = a.box_offsets[i]; k < a.box_offsets[i + 1]; ++k) {
      const float* b = &a.boxes[4 * k];
      const bool ok = std::isfinite(b[0]) && std::isfinite(b[1]) && std::isfinite(b[2]) &&
                      std::isfinite(b[3]) && b[0] >= -tol && b[1] >= -tol && b[0] <= b[2] && b[1] <= b[3] &&
                      b[2] <= W + tol && b[3] <= H + tol;
      VT_CHECK(ok, where, ": dataset /boxes: box ", k, " of image ", i, " (", a.file_name[i], ") = (", b[0],
               ", ", b[1], ", ", b[2], ", ", b[3], ") is not inside the ", W, "x", H, " image");
      VT_CHECK(a.classes[k] >= 0 && a.classes[k] < ncls, where, ": dataset /classes: box ", k, " of image ",
               i, " (", a.file_name[i], ") has class ", a.classes[k], ", expected 0..", ncls - 1);
    }
  }
}

Record ShardReader::meta(int64_t i) const {
  VT_CHECK(i >= 0 && i < size(), path(), ": image index ", i, " out of range (", size(), " images)");
  const ShardArrays& a = arrays_;
  Record r;
  r.file_name = a.file_name[i];
  r.image_id = a.image_id[i];
  r.orig_h = a.orig_size[2 * i];
  r.orig_w = a.orig_size[2 * i + 1];
  if (schema_.storage == Storage::kRaw)
    r.letterbox = {a.letterbox[3 * i], a.letterbox[3 * i + 1], a.letterbox[3 * i + 2]};
  for (int64_t k = a.box_offsets[i]; k < a.box_offsets[i + 1]; ++k)
    r.boxes.push_back(
        {a.boxes[4 * k], a.boxes[4 * k + 1], a.boxes[4 * k + 2], a.boxes[4 * k + 3], a.classes[k]});
  return r;
}

int64_t ShardReader::payload_size(int64_t i) const {
  VT_CHECK(i >= 0 && i < size(), path(), ": image index ", i, " out of range (", size(), " images)");
  if (schema_.storage == Storage::kRaw) return int64_t(schema_.imgsz) * schema_.imgsz * 3;
  return arrays_.image_offsets[i + 1] - arrays_.image_offsets[i];
}

void ShardReader::read_encoded(int64_t i, std::vector<uint8_t>& out) const {
  VT_CHECK(schema_.storage == Storage::kEncoded, path(), ": read_encoded on a raw shard");
  out.resize(static_cast<size_t>(payload_size(i)));
  file_.pread_exact(out.data(), out.size(), payload_offset_ + arrays_.image_offsets[i]);
}

void ShardReader::read_raw(int64_t i, uint8_t* dst) const {
  VT_CHECK(schema_.storage == Storage::kRaw, path(), ": read_raw on an encoded shard");
  const int64_t n = payload_size(i);
  file_.pread_exact(dst, static_cast<size_t>(n), payload_offset_ + i * n);
}

uint32_t ShardReader::compute_crc32c() const {
  constexpr int64_t kPiece = int64_t(4) << 20;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(kPiece, std::max<int64_t>(payload_total_, 1))));
  uint32_t crc = 0;
  for (int64_t done = 0; done < payload_total_;) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(kPiece, payload_total_ - done));
    file_.pread_exact(buf.data(), n, payload_offset_ + done);
    crc = crc32c_extend(crc, buf.data(), n);
    done += static_cast<int64_t>(n);
  }
  return extend_crc_with_arrays(crc, arrays_, schema_.storage);
}

}  // namespace vt::data
