// Pascal VOC source: one XML file per image with <object><name> and a 1-based, inclusive
// <bndbox> (see convert.h). Boxes become 0-based pixel edges: (xmin - 1, ymin - 1, xmax,
// ymax). Objects marked <difficult> are kept like any other.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <pugixml.hpp>
#include <sstream>

#include "data/convert.h"
#include "data/fileio.h"
#include "layers/check.h"

namespace vt::data {
namespace {

namespace fs = std::filesystem;

class VocSource : public Source {
 public:
  std::vector<Labels> per_image;
  Labels labels(int64_t i, int, int) const override { return per_image[static_cast<size_t>(i)]; }
};

bool parse_number(const pugi::xml_node& node, double* out) {
  const std::string text = node.text().as_string();
  char* end = nullptr;
  *out = std::strtod(text.c_str(), &end);
  return !text.empty() && end && *end == '\0';
}

// Reads one annotation file into `lab`; returns the <filename> it names ("" if none).
// Throws vt::Error when the file cannot be read or parsed (the image is then skipped).
std::string parse_xml(const std::string& path, const std::vector<std::string>& names, Labels& lab) {
  const std::vector<uint8_t> bytes = read_file(path);
  pugi::xml_document doc;
  const pugi::xml_parse_result r = doc.load_buffer(bytes.data(), bytes.size());
  if (!r) throw Error(cat(path, ": not valid XML (", r.description(), " at byte ", r.offset, ")"));
  const pugi::xml_node root = doc.child("annotation");
  if (!root) throw Error(cat(path, ": no <annotation> element"));
  int k = 0;
  for (const pugi::xml_node obj : root.children("object")) {
    ++k;
    auto bad = [&](const std::string& why) {
      ++lab.invalid;
      lab.issues.push_back({path, 0, cat("object ", k, ": ", why)});
    };
    const std::string name = obj.child("name").text().as_string();
    const auto it = std::find(names.begin(), names.end(), name);
    if (it == names.end()) {
      bad(cat("class \"", name, "\" is not among the class names"));
      continue;
    }
    const pugi::xml_node bb = obj.child("bndbox");
    double xmin, ymin, xmax, ymax;
    if (!parse_number(bb.child("xmin"), &xmin) || !parse_number(bb.child("ymin"), &ymin) ||
        !parse_number(bb.child("xmax"), &xmax) || !parse_number(bb.child("ymax"), &ymax)) {
      bad("<bndbox> lacks numeric xmin, ymin, xmax, ymax");
      continue;
    }
    lab.boxes.push_back({float(xmin - 1), float(ymin - 1), float(xmax), float(ymax),
                         static_cast<int32_t>(it - names.begin())});
  }
  return root.child("filename").text().as_string();
}

std::unique_ptr<VocSource> new_source(const std::string& description, std::vector<std::string> class_names) {
  auto src = std::make_unique<VocSource>();
  src->format = "voc";
  src->description = description;
  src->class_names = class_names.empty() ? voc_class_names() : std::move(class_names);
  return src;
}

// Adds the image described by `xml`; `image` is its file, or "" to take it from <filename>.
void add_image(VocSource& src, const std::string& xml, std::string image, const fs::path& image_dir) {
  Labels lab;
  std::string named;
  try {
    named = parse_xml(xml, src.class_names, lab);
  } catch (const Error& e) {
    src.skipped.push_back({xml, 0, e.what()});
    return;
  }
  if (image.empty())
    image = (image_dir / (named.empty() ? fs::path(xml).stem().string() + ".jpg" : named)).string();
  const int64_t index = static_cast<int64_t>(src.images.size());
  src.images.push_back(
      {image, fs::path(image).lexically_relative(image_dir).string(), image_id_from_stem(image, index)});
  src.per_image.push_back(std::move(lab));
}

}  // namespace

const std::vector<std::string>& voc_class_names() {
  static const std::vector<std::string> names = {"aeroplane",   "bicycle", "bird",  "boat",      "bottle",
                                                 "bus",         "car",     "cat",   "chair",     "cow",
                                                 "diningtable", "dog",     "horse", "motorbike", "person",
                                                 "pottedplant", "sheep",   "sofa",  "train",     "tvmonitor"};
  return names;
}

std::unique_ptr<Source> voc_from_root(const std::string& root, const std::string& split,
                                      std::vector<std::string> class_names) {
  const fs::path r(root);
  const fs::path list = r / "ImageSets" / "Main" / (split + ".txt");
  auto src = new_source(cat(root, " (", split, ")"), std::move(class_names));
  std::istringstream text(read_text_file(list.string()));
  for (std::string line; std::getline(text, line);) {
    std::istringstream fields(line);
    std::string id;
    if (!(fields >> id)) continue;
    const std::string xml = (r / "Annotations" / (id + ".xml")).string();
    if (!file_exists(xml)) {
      src->skipped.push_back(
          {xml, 0, cat("no annotation file for image ", id, " listed in ", list.string())});
      continue;
    }
    add_image(*src, xml, (r / "JPEGImages" / (id + ".jpg")).string(), r / "JPEGImages");
  }
  return src;
}

std::unique_ptr<Source> voc_from_dirs(const std::string& images, const std::string& annotations,
                                      std::vector<std::string> class_names) {
  VT_CHECK(fs::is_directory(images), images, ": image directory not found");
  VT_CHECK(fs::is_directory(annotations), annotations, ": annotation directory not found");
  auto src = new_source(cat(images, " + ", annotations), std::move(class_names));
  std::vector<std::string> xmls;
  for (const auto& e : fs::directory_iterator(annotations))
    if (e.is_regular_file() && e.path().extension() == ".xml") xmls.push_back(e.path().string());
  std::sort(xmls.begin(), xmls.end());
  for (const std::string& xml : xmls) add_image(*src, xml, "", images);
  return src;
}

}  // namespace vt::data
