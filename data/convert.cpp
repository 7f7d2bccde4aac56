// The conversion driver shared by every source format (see convert.h).
#include "data/convert.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "data/codec.h"
#include "data/fileio.h"
#include "data/resize.h"
#include "layers/check.h"

namespace vt::data {
namespace {

// An error message without the leading "<path>: " that the issue's file field already gives.
std::string reason_of(const std::exception& e, const std::string& path) {
  std::string msg = e.what();
  const std::string prefix = path + ": ";
  if (msg.compare(0, prefix.size(), prefix) == 0) msg.erase(0, prefix.size());
  return msg;
}

Sample convert_one(const Source& src, int64_t i, const WriteOptions& opt) {
  const SourceImage& im = src.images[static_cast<size_t>(i)];
  Sample s;
  std::vector<uint8_t> bytes;
  Image img;
  Labels labels;
  try {
    bytes = read_file(im.path);
    img = decode_image(bytes.data(), bytes.size(), im.path);
    labels = src.labels(i, img.w, img.h);
  } catch (const Error& e) {
    s.skipped = true;
    s.skip = {im.path, 0, reason_of(e, im.path)};
    return s;
  }
  s.record.file_name = im.file_name;
  s.record.image_id = im.image_id;
  s.record.orig_h = img.h;
  s.record.orig_w = img.w;
  s.invalid_boxes = labels.invalid;
  s.crowd_boxes = labels.crowd;
  s.box_issues = std::move(labels.issues);
  s.record.boxes = std::move(labels.boxes);
  s.stats = clip_boxes(s.record.boxes, img.w, img.h);
  if (s.stats.invalid)
    s.box_issues.push_back(
        {im.path, 0, cat(s.stats.invalid, " box(es) with non-finite coordinates or x2 < x1 / y2 < y1")});
  if (s.stats.dropped)
    s.box_issues.push_back(
        {im.path, 0, cat(s.stats.dropped, " box(es) of zero area after clipping to the image, dropped")});

  if (opt.storage == Storage::kEncoded) {
    s.payload = std::move(bytes);  // the original file, not re-encoded
    return s;
  }
  Letterbox lb;
  const Image canvas = letterbox(img, opt.imgsz, &lb);
  s.payload = canvas.rgb;
  s.record.letterbox = lb;
  const float side = float(opt.imgsz);
  for (Box& b : s.record.boxes) {
    b = lb.apply(b);
    // The mapping puts image edges on the canvas edges up to float rounding; keep it inside.
    b.x1 = std::clamp(b.x1, 0.f, side);
    b.y1 = std::clamp(b.y1, 0.f, side);
    b.x2 = std::clamp(b.x2, b.x1, side);
    b.y2 = std::clamp(b.y2, b.y1, side);
  }
  return s;
}

}  // namespace

Manifest convert(const Source& src, const WriteOptions& opt) {
  VT_CHECK(!src.class_names.empty(), src.description, ": no class names");
  ConvertReport report;
  report.format = src.format;
  report.source = src.description;
  report.images_seen = static_cast<int64_t>(src.skipped.size());
  report.images_skipped = static_cast<int64_t>(src.skipped.size());
  report.skipped = src.skipped;
  report.boxes_orphaned = src.orphan_boxes;
  for (const Issue& is : src.orphans) report.add_box_issue(is);
  return write_dataset(
      static_cast<int64_t>(src.images.size()), src.class_names,
      [&](int64_t i) { return convert_one(src, i, opt); }, std::move(report), opt);
}

bool is_supported_image(const std::string& path, bool* other_image) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool ok = ext == ".jpg" || ext == ".jpeg" || ext == ".png";
  if (other_image)
    *other_image =
        !ok && (ext == ".bmp" || ext == ".tif" || ext == ".tiff" || ext == ".webp" || ext == ".gif" ||
                ext == ".dng" || ext == ".mpo" || ext == ".pfm" || ext == ".heic");
  return ok;
}

int64_t image_id_from_stem(const std::string& path, int64_t fallback) {
  const std::string stem = std::filesystem::path(path).stem().string();
  if (stem.empty() || stem.size() > 18) return fallback;
  for (char c : stem)
    if (!std::isdigit(static_cast<unsigned char>(c))) return fallback;
  return std::stoll(stem);
}

}  // namespace vt::data
