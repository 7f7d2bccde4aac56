// Image codecs: JPEG through libjpeg-turbo's TurboJPEG API and PNG through libpng's
// simplified API, both to and from 8-bit interleaved RGB (data/image.h).
//
// The format is sniffed from the magic bytes, never from a file extension. Anything that is
// not a complete, valid JPEG or PNG throws vt::Error naming `what` (the source file or shard
// record), including data that libjpeg only warns about (a truncated file decodes to a grey
// tail with a warning): convert skips and reports such images, the loader counts them.
// All functions are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace vt::data {

enum class ImageFormat { kUnknown, kJpeg, kPng };

ImageFormat sniff_format(const uint8_t* bytes, size_t n);

// Decodes JPEG or PNG to RGB. Grey, grey+alpha, palette and 16-bit PNGs are converted to
// 8-bit RGB; transparent pixels are composited onto grey 114 (the letterbox fill). CMYK
// JPEGs are rejected. Images over kMaxDecodePixels are rejected before any allocation.
Image decode_image(const uint8_t* bytes, size_t n, const std::string& what);

constexpr int64_t kMaxDecodePixels = int64_t(1) << 28;  // 16384 x 16384

// Baseline JPEG, 4:2:0 chroma, quality 1..100.
std::vector<uint8_t> encode_jpeg(const Image& img, int quality);
// Lossless 8-bit RGB PNG.
std::vector<uint8_t> encode_png(const Image& img);

}  // namespace vt::data
