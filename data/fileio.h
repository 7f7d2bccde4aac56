// File helpers for the data pipeline: whole-file reads (inputs are opened read-only and
// never modified), positioned reads from many threads, and the write-temp-then-rename
// protocol that makes every output file appear complete or not at all.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vt::data {

// Reads the whole file; throws vt::Error "<path>: <strerror>" when it cannot.
std::vector<uint8_t> read_file(const std::string& path);
std::string read_text_file(const std::string& path);

bool file_exists(const std::string& path);
int64_t file_size(const std::string& path);  // throws when the file cannot be stat'ed

// Writes `bytes` to path.tmp, fsyncs it, renames it over `path`, and fsyncs the directory.
void write_file_atomic(const std::string& path, const std::string& bytes);
// fsync of an existing file or directory (the rename half of the protocol).
void sync_path(const std::string& path);
// Renames `from` over `to`, then fsyncs the directory of `to`.
void commit_rename(const std::string& from, const std::string& to);
// Copies the file `from` to `to` with write_file_atomic's guarantees (temp, fsync, rename).
void copy_file_atomic(const std::string& from, const std::string& to);

// A read-only file descriptor for pread from any number of threads.
class ReadOnlyFile {
 public:
  ReadOnlyFile() = default;
  explicit ReadOnlyFile(const std::string& path);
  ReadOnlyFile(ReadOnlyFile&& o) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& o) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile();

  // Reads exactly n bytes at offset; throws naming the file on a short read or error.
  void pread_exact(void* dst, size_t n, int64_t offset) const;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace vt::data
