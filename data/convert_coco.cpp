// COCO source: an instances JSON (images, annotations with bbox [x, y, w, h] in pixels,
// categories) and its image directory (see convert.h).
#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "data/convert.h"
#include "data/fileio.h"
#include "layers/check.h"

namespace vt::data {
namespace {

using nlohmann::json;

// Every annotation is read at listing time; labels() only hands out an image's share.
class CocoSource : public Source {
 public:
  std::vector<Labels> per_image;
  std::vector<std::pair<int, int>> declared_size;  // (w, h) from the JSON, 0 if absent

  Labels labels(int64_t i, int w, int h) const override {
    Labels out = per_image[static_cast<size_t>(i)];
    const auto [dw, dh] = declared_size[static_cast<size_t>(i)];
    if (dw > 0 && dh > 0 && (dw != w || dh != h))
      out.issues.push_back({images[static_cast<size_t>(i)].path, 0,
                            cat("annotations declare ", dw, "x", dh, " but the image decodes to ", w, "x", h,
                                "; boxes are clipped to the decoded size")});
    return out;
  }
};

template <class T>
T field(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) throw Error(cat(where, ": missing \"", key, "\""));
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw Error(cat(where, ": \"", key, "\" has the wrong type (", e.what(), ")"));
  }
}

}  // namespace

std::unique_ptr<Source> coco_source(const std::string& annotations, const std::string& images) {
  VT_CHECK(std::filesystem::is_directory(images), images, ": image directory not found");
  json doc;
  try {
    doc = json::parse(read_text_file(annotations));
  } catch (const json::exception& e) {
    throw Error(cat(annotations, ": not valid JSON (", e.what(), ")"));
  }
  auto src = std::make_unique<CocoSource>();
  src->format = "coco";
  src->description = cat(annotations, " + ", images);

  // Categories: contiguous ids in increasing category-id order.
  std::map<int64_t, std::string> cats;
  for (const json& c : field<json>(doc, "categories", annotations)) {
    const int64_t id = field<int64_t>(c, "id", cat(annotations, ": category"));
    VT_CHECK(cats.emplace(id, field<std::string>(c, "name", cat(annotations, ": category ", id))).second,
             annotations, ": category id ", id, " appears twice");
  }
  VT_CHECK(!cats.empty(), annotations, ": no categories");
  std::unordered_map<int64_t, int32_t> cls_of;
  for (const auto& [id, name] : cats) {
    cls_of[id] = static_cast<int32_t>(src->class_names.size());
    src->class_names.push_back(name);
  }

  // Images in the order the JSON lists them; images without annotations are kept.
  std::unordered_map<int64_t, size_t> index_of;
  for (const json& im : field<json>(doc, "images", annotations)) {
    const int64_t id = field<int64_t>(im, "id", cat(annotations, ": image"));
    const std::string where = cat(annotations, ": image ", id);
    const std::string name = field<std::string>(im, "file_name", where);
    VT_CHECK(index_of.emplace(id, src->images.size()).second, annotations, ": image id ", id,
             " appears twice");
    src->images.push_back({(std::filesystem::path(images) / name).string(), name, id});
    const int w = im.contains("width") ? field<int>(im, "width", where) : 0;
    const int h = im.contains("height") ? field<int>(im, "height", where) : 0;
    src->declared_size.emplace_back(w, h);
  }
  src->per_image.resize(src->images.size());

  for (const json& a : field<json>(doc, "annotations", annotations)) {
    const std::string where = cat("annotation ", a.value("id", json(-1)).dump());
    const int64_t image_id = field<int64_t>(a, "image_id", cat(annotations, ": ", where));
    const auto img = index_of.find(image_id);
    if (img == index_of.end()) {
      ++src->orphan_boxes;
      src->orphans.push_back(
          {annotations, 0, cat(where, ": image_id ", image_id, " is not among the images")});
      continue;
    }
    Labels& lab = src->per_image[img->second];
    const std::string& file = src->images[img->second].path;
    auto bad = [&](const std::string& why) {
      ++lab.invalid;
      lab.issues.push_back({file, 0, cat(where, ": ", why)});
    };
    if (a.value("iscrowd", 0) != 0) {
      ++lab.crowd;
      continue;
    }
    const auto cls = cls_of.find(a.value("category_id", int64_t(-1)));
    if (cls == cls_of.end()) {
      bad(cat("category_id ", a.value("category_id", json(nullptr)).dump(), " is not a category"));
      continue;
    }
    const json bbox = a.value("bbox", json());
    if (!bbox.is_array() || bbox.size() != 4 ||
        !std::all_of(bbox.begin(), bbox.end(), [](const json& v) { return v.is_number(); })) {
      bad(cat("bbox ", bbox.dump(), " is not [x, y, w, h]"));
      continue;
    }
    const double x = bbox[0], y = bbox[1], w = bbox[2], h = bbox[3];
    if (w < 0 || h < 0) {
      bad(cat("bbox ", bbox.dump(), " has a negative width or height"));
      continue;
    }
    lab.boxes.push_back({float(x), float(y), float(x + w), float(y + h), cls->second});
  }
  return src;
}

}  // namespace vt::data
