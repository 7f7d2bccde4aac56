// CRC32C: the standard check value, RFC 3720's test vectors, continuation, and agreement of
// the hardware and table paths.
#include "data/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace vt::data {
namespace {

TEST(Crc32c, CheckValueAndRfc3720Vectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c_extend_portable(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 (iSCSI), appendix B.4: 32 bytes of zeros, of ones, and ascending 0..31.
  std::vector<uint8_t> b(32, 0);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x8A9136AAu);
  std::fill(b.begin(), b.end(), 0xFF);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) b[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x46DD794Eu);
}

TEST(Crc32c, ContinuesAcrossPiecesAndPathsAgree) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(1000);
  for (uint8_t& v : buf) v = static_cast<uint8_t>(rng());
  // Every length 0..300 at every alignment 0..7: the word loops and the byte tails.
  for (size_t off = 0; off < 8; ++off)
    for (size_t n = 0; n <= 300; ++n)
      ASSERT_EQ(crc32c(buf.data() + off, n), crc32c_extend_portable(0, buf.data() + off, n))
          << off << " " << n;
  const uint32_t whole = crc32c(buf.data(), buf.size());
  for (size_t cut : {size_t(0), size_t(1), size_t(7), size_t(500), size_t(999), size_t(1000)})
    EXPECT_EQ(crc32c_extend(crc32c(buf.data(), cut), buf.data() + cut, buf.size() - cut), whole) << cut;
  buf[500] ^= 1;  // one flipped bit changes it
  EXPECT_NE(crc32c(buf.data(), buf.size()), whole);
}

}  // namespace
}  // namespace vt::data
