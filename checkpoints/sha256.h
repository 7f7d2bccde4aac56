// SHA-256 (FIPS 180-4) of a file, as lowercase hex: exported files record the hash of the
// checkpoint they came from, so `sha256sum last.h5` tells whether an export is still current.
// Plain portable code: a checkpoint is hashed once per export, where speed does not matter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace vt::ckpt {

// Digest of `n` bytes, 64 hex characters.
std::string sha256_hex(const void* data, size_t n);
// Digest of a whole file, read in chunks; throws vt::Error naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace vt::ckpt
