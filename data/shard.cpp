// Shard checksum order, file naming, and the writer (see shard.h; reader in shard_reader.cpp).
#include "data/shard.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "data/crc32c.h"
#include "data/h5.h"
#include "layers/check.h"

namespace vt::data {
namespace {

template <class T>
uint32_t extend(uint32_t crc, const std::vector<T>& v) {
  return crc32c_extend(crc, v.data(), v.size() * sizeof(T));
}

// Payload pieces are copied from the spool into HDF5 in pieces of about this size.
constexpr size_t kCopyPiece = size_t(16) << 20;

}  // namespace

uint32_t extend_crc_with_arrays(uint32_t crc, const ShardArrays& a, Storage storage) {
  crc = storage == Storage::kEncoded ? extend(crc, a.image_offsets) : extend(crc, a.letterbox);
  crc = extend(crc, a.box_offsets);
  crc = extend(crc, a.boxes);
  crc = extend(crc, a.classes);
  crc = extend(crc, a.orig_size);
  crc = extend(crc, a.image_id);
  for (const std::string& s : a.file_name) crc = crc32c_extend(crc, s.c_str(), s.size() + 1);  // with the NUL
  return crc;
}

std::string shard_file_name(const std::string& split, int index) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "-%05d.h5", index);
  return split + buf;
}

ShardWriter::ShardWriter(std::string path, Schema schema)
    : path_(std::move(path)), schema_(std::move(schema)) {
  VT_CHECK(!schema_.class_names.empty(), path_, ": a shard needs at least one class name");
  VT_CHECK((schema_.storage == Storage::kRaw) == (schema_.imgsz > 0), path_, ": imgsz ", schema_.imgsz,
           " does not fit storage ", storage_name(schema_.storage));
  const std::string spool = path_ + ".payload.tmp";
  spool_fd_ = ::open(spool.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (spool_fd_ < 0) throw Error(cat(spool, ": cannot create: ", std::strerror(errno)));
  ::unlink(spool.c_str());  // the spool lives only as long as the descriptor
  arrays_.image_offsets.push_back(0);
  arrays_.box_offsets.push_back(0);
}

ShardWriter::~ShardWriter() {
  if (spool_fd_ >= 0) ::close(spool_fd_);
  if (!finished_) std::remove((path_ + ".tmp").c_str());
}

void ShardWriter::add(const Record& rec, const uint8_t* payload, size_t n) {
  const int ncls = static_cast<int>(schema_.class_names.size());
  if (schema_.storage == Storage::kRaw)
    VT_CHECK(n == size_t(schema_.imgsz) * schema_.imgsz * 3, path_, ": raw payload of ", rec.file_name,
             " is ", n, " bytes, expected ", schema_.imgsz, "x", schema_.imgsz, "x3");
  else
    VT_CHECK(n > 0, path_, ": empty payload for ", rec.file_name);
  VT_CHECK(rec.orig_h > 0 && rec.orig_w > 0, path_, ": ", rec.file_name, " has size ", rec.orig_h, "x",
           rec.orig_w);
  for (const Box& b : rec.boxes)
    VT_CHECK(b.cls >= 0 && b.cls < ncls, path_, ": ", rec.file_name, ": class id ", b.cls, " out of range");

  for (size_t done = 0; done < n;) {
    const ssize_t w = ::write(spool_fd_, payload + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw Error(cat(path_, ": writing the payload spool failed: ", std::strerror(errno)));
    done += static_cast<size_t>(w);
  }
  payload_crc_ = crc32c_extend(payload_crc_, payload, n);
  payload_bytes_ += static_cast<int64_t>(n);

  ShardArrays& a = arrays_;
  if (schema_.storage == Storage::kEncoded)
    a.image_offsets.push_back(payload_bytes_);
  else
    a.letterbox.insert(a.letterbox.end(), {rec.letterbox.scale, rec.letterbox.pad_x, rec.letterbox.pad_y});
  for (const Box& b : rec.boxes) {
    a.boxes.insert(a.boxes.end(), {b.x1, b.y1, b.x2, b.y2});
    a.classes.push_back(b.cls);
  }
  a.box_offsets.push_back(static_cast<int64_t>(a.classes.size()));
  a.orig_size.insert(a.orig_size.end(), {rec.orig_h, rec.orig_w});
  a.image_id.push_back(rec.image_id);
  a.file_name.push_back(rec.file_name);
}

ShardEntry ShardWriter::finish() {
  VT_CHECK(!finished_, path_, ": finish() called twice");
  VT_CHECK(size() > 0, path_, ": a shard needs at least one image");
  const ShardArrays& a = arrays_;
  const hsize_t n = static_cast<hsize_t>(a.size()), nb = a.classes.size();
  const std::string tmp = path_ + ".tmp";
  const uint32_t crc = extend_crc_with_arrays(payload_crc_, a, schema_.storage);
  {
    h5::QuietErrors quiet;
    h5::Id fcpl = h5::check(H5Pcreate(H5P_FILE_CREATE), H5Pclose, tmp);
    H5Pset_obj_track_times(fcpl.get(), false);  // root group: no timestamps either
    h5::Id file = h5::check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT), H5Fclose, tmp);
    const hid_t f = file.get();

    // The payload: contiguous and allocated now, then filled from the spool piece by piece.
    const bool raw = schema_.storage == Storage::kRaw;
    const hsize_t S = static_cast<hsize_t>(schema_.imgsz);
    const std::string payload_name = raw ? "/images" : "/image_bytes";
    h5::Id payload = h5::create_dataset(
        f, payload_name, H5T_STD_U8LE,
        raw ? std::vector<hsize_t>{n, S, S, 3} : std::vector<hsize_t>{hsize_t(payload_bytes_)}, {true}, tmp);
    const size_t row = raw ? size_t(S * S * 3) : 1;  // bytes per first-dimension row
    const size_t rows_per_piece = std::max<size_t>(1, kCopyPiece / row);
    std::vector<uint8_t> piece(rows_per_piece * row);
    const size_t total_rows = raw ? n : size_t(payload_bytes_);
    for (size_t r = 0; r < total_rows; r += rows_per_piece) {
      const size_t count = std::min(rows_per_piece, total_rows - r);
      const ssize_t got = ::pread(spool_fd_, piece.data(), count * row, static_cast<off_t>(r * row));
      VT_CHECK(got == ssize_t(count * row), path_,
               ": reading back the payload spool failed: ", std::strerror(errno));
      h5::write_rows(payload.get(), H5T_NATIVE_UINT8, r, count, piece.data(),
                     cat(tmp, ": dataset ", payload_name));
    }

    auto write = [&](const char* name, hid_t file_type, hid_t mem_type, std::vector<hsize_t> dims,
                     const void* data) {
      h5::Id d = h5::create_dataset(f, name, file_type, dims, {}, tmp);
      h5::write_all(d.get(), mem_type, data, cat(tmp, ": dataset ", name));
    };
    if (raw)
      write("/letterbox", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {n, 3}, a.letterbox.data());
    else
      write("/image_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, {n + 1}, a.image_offsets.data());
    write("/boxes", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {nb, 4}, a.boxes.data());
    write("/classes", H5T_STD_I32LE, H5T_NATIVE_INT32, {nb}, a.classes.data());
    write("/box_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, {n + 1}, a.box_offsets.data());
    write("/orig_size", H5T_STD_I32LE, H5T_NATIVE_INT32, {n, 2}, a.orig_size.data());
    write("/image_id", H5T_STD_I64LE, H5T_NATIVE_INT64, {n}, a.image_id.data());
    h5::write_strings(f, "/file_name", a.file_name, tmp);

    h5::write_attr(f, "schema_version", int64_t(kSchemaVersion), tmp);
    h5::write_attr(f, "storage", std::string(storage_name(schema_.storage)), tmp);
    h5::write_attr(f, "imgsz", int64_t(schema_.imgsz), tmp);
    h5::write_attr(f, "num_images", int64_t(n), tmp);
    h5::write_attr(f, "num_boxes", int64_t(nb), tmp);
    h5::write_attr(f, "class_names", schema_.class_names, tmp);
    h5::write_attr(f, "content_crc32c", int64_t(crc), tmp);
    h5::write_attr(f, "created_by", program_version(), tmp);
    payload.close(tmp);
    file.close(tmp);
  }
  sync_path(tmp);
  commit_rename(tmp, path_);
  finished_ = true;
  ::close(spool_fd_);
  spool_fd_ = -1;
  return {std::filesystem::path(path_).filename().string(), int64_t(n), int64_t(nb), file_size(path_), crc};
}

}  // namespace vt::data
