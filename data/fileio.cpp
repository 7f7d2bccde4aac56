// File helpers (see fileio.h). POSIX calls, so that errors carry errno's text.
#include "data/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "layers/check.h"

namespace vt::data {
namespace {

[[noreturn]] void sys_fail(const std::string& path, const char* what) {
  throw Error(cat(path, ": ", what, ": ", std::strerror(errno)));
}

int open_or_throw(const std::string& path, int flags, mode_t mode = 0) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) sys_fail(path, "cannot open");
  return fd;
}

void write_all_fd(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) sys_fail(path, "write failed");
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  ReadOnlyFile f(path);
  std::vector<uint8_t> out(static_cast<size_t>(file_size(path)));
  f.pread_exact(out.data(), out.size(), 0);
  return out;
}

std::string read_text_file(const std::string& path) {
  const std::vector<uint8_t> b = read_file(path);
  return std::string(b.begin(), b.end());
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

int64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) sys_fail(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) throw Error(cat(path, ": not a regular file"));
  return static_cast<int64_t>(st.st_size);
}

void sync_path(const std::string& path) {
  const int fd = open_or_throw(path, O_RDONLY);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems refuse fsync on directories (EINVAL); data files must sync.
  if (rc != 0 && !(err == EINVAL && std::filesystem::is_directory(path))) {
    errno = err;
    sys_fail(path, "fsync failed");
  }
}

void commit_rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) sys_fail(to, "rename from temporary file failed");
  std::string dir = std::filesystem::path(to).parent_path().string();
  sync_path(dir.empty() ? "." : dir);
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::copy_file(from, tmp, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) throw Error(cat(to, ": copying ", from, " failed: ", ec.message()));
  sync_path(tmp);
  commit_rename(tmp, to);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = open_or_throw(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  try {
    write_all_fd(fd, bytes.data(), bytes.size(), tmp);
    if (::fsync(fd) != 0) sys_fail(tmp, "fsync failed");
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) sys_fail(tmp, "close failed");
  commit_rename(tmp, path);
}

ReadOnlyFile::ReadOnlyFile(const std::string& path) : fd_(open_or_throw(path, O_RDONLY)), path_(path) {}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) {
  o.fd_ = -1;
}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

void ReadOnlyFile::pread_exact(void* dst, size_t n, int64_t offset) const {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t r = ::pread(fd_, p, n, offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) sys_fail(path_, "read failed");
    if (r == 0) throw Error(cat(path_, ": unexpected end of file at byte ", offset, " (file truncated?)"));
    p += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
}

}  // namespace vt::data
