// JPEG and PNG codecs: round trips, colour conversions, and rejection of bad data with the
// file named.
#include "data/codec.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cstring>
#include <random>

#include "tests/data/data_fixtures.h"

namespace vt::data {
namespace {

using testing::expect_error;
using testing::gradient_image;

TEST(Codec, JpegRoundTripWithinJpegError) {
  const Image src = gradient_image(37, 53, 1);  // odd sizes: partial MCUs on both axes
  const std::vector<uint8_t> jpg = encode_jpeg(src, 95);
  EXPECT_EQ(sniff_format(jpg.data(), jpg.size()), ImageFormat::kJpeg);
  const Image out = decode_image(jpg.data(), jpg.size(), "round.jpg");
  ASSERT_EQ(out.h, 37);
  ASSERT_EQ(out.w, 53);
  // Quality 95 on a smooth gradient: a few levels on average; 4:2:0 chroma costs more at
  // the few sharp colour steps, hence the looser bound on the worst pixel.
  double sum = 0;
  int worst = 0;
  for (size_t i = 0; i < src.rgb.size(); ++i) {
    const int d = std::abs(int(src.rgb[i]) - int(out.rgb[i]));
    sum += d;
    worst = std::max(worst, d);
  }
  EXPECT_LT(sum / src.rgb.size(), 3.0);
  EXPECT_LT(worst, 48);
}

TEST(Codec, PngRoundTripIsExact) {
  Image src(13, 17);
  std::mt19937 rng(3);
  for (uint8_t& v : src.rgb) v = static_cast<uint8_t>(rng());
  const std::vector<uint8_t> png = encode_png(src);
  EXPECT_EQ(sniff_format(png.data(), png.size()), ImageFormat::kPng);
  const Image out = decode_image(png.data(), png.size(), "round.png");
  ASSERT_EQ(out.h, 13);
  ASSERT_EQ(out.w, 17);
  EXPECT_EQ(out.rgb, src.rgb);
}

TEST(Codec, GreyAlphaPngBecomesRgbOnGrey114) {
  // Two pixels, grey + alpha: (200, opaque) and (10, transparent).
  const uint8_t ga[] = {200, 255, 10, 0};
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  img.width = 2;
  img.height = 1;
  img.format = PNG_FORMAT_GA;
  png_alloc_size_t size = 0;
  ASSERT_TRUE(png_image_write_to_memory(&img, nullptr, &size, 0, ga, 0, nullptr));
  std::vector<uint8_t> bytes(size);
  ASSERT_TRUE(png_image_write_to_memory(&img, bytes.data(), &size, 0, ga, 0, nullptr));
  const Image out = decode_image(bytes.data(), size, "ga.png");
  ASSERT_EQ(out.w, 2);
  EXPECT_EQ(out.px(0, 0)[0], 200);
  EXPECT_EQ(out.px(0, 0)[2], 200);
  EXPECT_EQ(out.px(0, 1)[1], 114);  // fully transparent: the background
}

TEST(Codec, CorruptAndTruncatedDataIsRejectedNamingTheFile) {
  const Image src = gradient_image(64, 64);
  std::vector<uint8_t> jpg = encode_jpeg(src, 90), png = encode_png(src);

  std::vector<uint8_t> junk(500);
  std::mt19937 rng(5);
  for (uint8_t& v : junk) v = static_cast<uint8_t>(rng());
  expect_error([&] { decode_image(junk.data(), junk.size(), "junk.jpg"); },
               {"junk.jpg", "not a JPEG or PNG"});
  expect_error([&] { decode_image(junk.data(), 0, "empty.jpg"); }, {"empty.jpg"});

  // Truncated: libjpeg only warns and pads with grey; the codec must refuse it.
  const std::vector<uint8_t> half_jpg(jpg.begin(), jpg.begin() + jpg.size() / 2);
  expect_error([&] { decode_image(half_jpg.data(), half_jpg.size(), "half.jpg"); }, {"half.jpg", "JPEG"});
  const std::vector<uint8_t> head_jpg(jpg.begin(), jpg.begin() + 40);
  expect_error([&] { decode_image(head_jpg.data(), head_jpg.size(), "head.jpg"); }, {"head.jpg", "JPEG"});
  const std::vector<uint8_t> half_png(png.begin(), png.begin() + png.size() / 2);
  expect_error([&] { decode_image(half_png.data(), half_png.size(), "half.png"); }, {"half.png", "PNG"});

  // A damaged PNG data chunk fails its CRC.
  std::vector<uint8_t> bad_png = png;
  bad_png[bad_png.size() / 2] ^= 0x55;
  expect_error([&] { decode_image(bad_png.data(), bad_png.size(), "bad.png"); }, {"bad.png", "PNG"});
}

}  // namespace
}  // namespace vt::data
