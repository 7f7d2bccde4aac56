// JPEG and PNG decoding and encoding (see codec.h).
#include "data/codec.h"

#include <png.h>
#include <turbojpeg.h>

#include <cstring>
#include <memory>

#include "layers/check.h"

namespace vt::data {
namespace {

struct TjDeleter {
  void operator()(void* h) const { tjDestroy(h); }
};
using TjHandle = std::unique_ptr<void, TjDeleter>;

// One decompressor per thread: creating one costs more than decoding a small image.
tjhandle decompressor() {
  thread_local TjHandle h(tjInitDecompress());
  VT_CHECK(h, "tjInitDecompress: ", tjGetErrorStr2(nullptr));
  return h.get();
}

Image decode_jpeg(const uint8_t* bytes, size_t n, const std::string& what) {
  tjhandle tj = decompressor();
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, bytes, static_cast<unsigned long>(n), &w, &h, &subsamp, &colorspace) != 0)
    throw Error(cat(what, ": corrupt JPEG header (", tjGetErrorStr2(tj), ")"));
  if (w <= 0 || h <= 0 || int64_t(w) * h > kMaxDecodePixels)
    throw Error(
        cat(what, ": JPEG of ", w, "x", h, " pixels is empty or larger than ", kMaxDecodePixels, " pixels"));
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK)
    throw Error(cat(what, ": CMYK JPEG is not supported (convert it to RGB)"));
  Image img(h, w);
  // STOPONWARNING: libjpeg only warns on premature end of data and fills the rest with grey;
  // such an image must be rejected, not trained on. LIMITSCANS guards against progressive
  // files crafted with huge scan counts.
  const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS | TJFLAG_ACCURATEDCT;
  if (tjDecompress2(tj, bytes, static_cast<unsigned long>(n), img.rgb.data(), w, 0, h, TJPF_RGB, flags) !=
      0) {
    const bool warning = tjGetErrorCode(tj) == TJERR_WARNING;
    throw Error(cat(what, ": ", warning ? "truncated or damaged" : "corrupt", " JPEG data (",
                    tjGetErrorStr2(tj), ")"));
  }
  return img;
}

Image decode_png(const uint8_t* bytes, size_t n, const std::string& what) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes, n))
    throw Error(cat(what, ": corrupt PNG (", png.message, ")"));
  if (png.width == 0 || png.height == 0 || int64_t(png.width) * png.height > kMaxDecodePixels) {
    png_image_free(&png);
    throw Error(cat(what, ": PNG of ", png.width, "x", png.height, " pixels is empty or too large"));
  }
  png.format = PNG_FORMAT_RGB;
  Image img(static_cast<int>(png.height), static_cast<int>(png.width));
  const png_color background{114, 114, 114};
  if (!png_image_finish_read(&png, &background, img.rgb.data(), 0, nullptr))
    throw Error(cat(what, ": corrupt or truncated PNG (", png.message, ")"));
  return img;
}

}  // namespace

ImageFormat sniff_format(const uint8_t* bytes, size_t n) {
  static const uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return ImageFormat::kJpeg;
  if (n >= 8 && std::memcmp(bytes, kPngMagic, 8) == 0) return ImageFormat::kPng;
  return ImageFormat::kUnknown;
}

Image decode_image(const uint8_t* bytes, size_t n, const std::string& what) {
  switch (sniff_format(bytes, n)) {
    case ImageFormat::kJpeg:
      return decode_jpeg(bytes, n, what);
    case ImageFormat::kPng:
      return decode_png(bytes, n, what);
    default:
      throw Error(cat(what, ": not a JPEG or PNG image (", n, " bytes, unrecognised signature)"));
  }
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  VT_CHECK(img.h > 0 && img.w > 0 && img.rgb.size() == size_t(img.h) * img.w * 3, "encode_jpeg: bad image ",
           img.h, "x", img.w);
  VT_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality ", quality, " outside 1..100");
  TjHandle tj(tjInitCompress());
  VT_CHECK(tj, "tjInitCompress: ", tjGetErrorStr2(nullptr));
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj.get(), img.rgb.data(), img.w, 0, img.h, TJPF_RGB, &buf, &size, TJSAMP_420,
                             quality, TJFLAG_ACCURATEDCT);
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> owner(buf, tjFree);
  VT_CHECK(rc == 0, "encode_jpeg: ", tjGetErrorStr2(tj.get()));
  return std::vector<uint8_t>(buf, buf + size);
}

std::vector<uint8_t> encode_png(const Image& img) {
  VT_CHECK(img.h > 0 && img.w > 0 && img.rgb.size() == size_t(img.h) * img.w * 3, "encode_png: bad image ",
           img.h, "x", img.w);
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(img.w);
  png.height = static_cast<png_uint_32>(img.h);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  VT_CHECK(png_image_write_to_memory(&png, nullptr, &size, 0, img.rgb.data(), 0, nullptr),
           "encode_png: ", png.message);
  std::vector<uint8_t> out(size);
  VT_CHECK(png_image_write_to_memory(&png, out.data(), &size, 0, img.rgb.data(), 0, nullptr),
           "encode_png: ", png.message);
  out.resize(size);
  return out;
}

}  // namespace vt::data
