// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of shard contents and
// manifests. Chosen over CRC32 because x86 computes it in hardware (SSE4.2 `crc32`), which
// keeps full verification of a dataset disk-bound rather than CPU-bound. The standard check
// value is crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vt::data {

// Continues a running checksum: crc32c_extend(crc32c_extend(0, a, n), b, m) equals the
// checksum of a followed by b. Start from 0. Uses the CPU instruction when present.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);

inline uint32_t crc32c(const void* data, size_t n) {
  return crc32c_extend(0, data, n);
}

// The table-driven implementation alone, whatever the CPU (the reference in tests).
uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t n);

}  // namespace vt::data
