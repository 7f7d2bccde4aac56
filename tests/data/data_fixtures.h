// Fixtures shared by the data/ tests: a temporary directory removed at the end, small file
// writers, test images, and whole-tree snapshots (to prove inputs are left unchanged).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "data/crc32c.h"
#include "data/fileio.h"
#include "data/image.h"
#include "tests/test_util.h"

namespace vt::data::testing {

using TempDir = vt::test::TempDir;  // tests/test_util.h

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline void write_text(const std::string& path, const std::string& text) {
  write_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// A smooth, non-constant test image (compresses well, so JPEG errors stay small).
inline Image gradient_image(int h, int w, int seed = 0) {
  Image img(h, w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.px(y, x);
      p[0] = static_cast<uint8_t>((x * 255) / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>((y * 255) / std::max(1, h - 1));
      p[2] = static_cast<uint8_t>((seed * 37 + (x + y) * 2) % 256);
    }
  return img;
}

// relative path -> CRC32C of the content, for every file under `root`.
inline std::map<std::string, uint32_t> snapshot(const std::string& root) {
  std::map<std::string, uint32_t> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root))
    if (e.is_regular_file()) {
      const std::vector<uint8_t> b = read_file(e.path().string());
      out[std::filesystem::relative(e.path(), root).string()] = crc32c(b.data(), b.size());
    }
  return out;
}

// Expects `fn` to throw vt::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
    return;
  }
  ADD_FAILURE() << "no exception thrown";
}

}  // namespace vt::data::testing
