// YOLO (Ultralytics) sources: data.yaml or image/label directories; label files with one
// `class cx cy w h` line per object, normalised to [0, 1] by the image size (see convert.h).
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

#include "data/convert.h"
#include "data/fileio.h"
#include "layers/check.h"

namespace vt::data {
namespace {

namespace fs = std::filesystem;

class YoloSource : public Source {
 public:
  std::vector<std::string> label_paths;  // per image; a missing file means no objects

  Labels labels(int64_t i, int w, int h) const override {
    Labels out;
    const std::string& path = label_paths[static_cast<size_t>(i)];
    if (!file_exists(path)) return out;
    std::istringstream text(read_text_file(path));
    std::string line;
    const int ncls = static_cast<int>(class_names.size());
    for (int64_t lineno = 1; std::getline(text, line); ++lineno) {
      std::istringstream fields(line);
      std::vector<std::string> tok;
      for (std::string t; fields >> t;) tok.push_back(t);
      if (tok.empty()) continue;
      auto bad = [&](const std::string& why) {
        ++out.invalid;
        out.issues.push_back({path, lineno, why});
      };
      std::vector<double> v(tok.size());
      bool numeric = true;
      for (size_t k = 0; k < tok.size(); ++k) {
        char* end = nullptr;
        v[k] = std::strtod(tok[k].c_str(), &end);
        numeric = numeric && *end == '\0' && std::isfinite(v[k]);
      }
      if (!numeric) {
        bad(cat("not a list of finite numbers: \"", line, "\""));
        continue;
      }
      // 5 values: a box. Class plus 3 or more x y pairs: a polygon (Ultralytics segment
      // labels), whose bounding box is used.
      if (tok.size() != 5 && (tok.size() < 7 || tok.size() % 2 == 0)) {
        bad(cat("expected 5 values (class cx cy w h) or a polygon, got ", tok.size()));
        continue;
      }
      if (v[0] != std::floor(v[0]) || v[0] < 0 || v[0] >= ncls) {
        bad(cat("class id ", tok[0], " is not an integer in 0..", ncls - 1));
        continue;
      }
      double x1, y1, x2, y2;
      if (tok.size() == 5) {
        if (v[3] < 0 || v[4] < 0) {
          bad("negative width or height");
          continue;
        }
        x1 = v[1] - v[3] / 2, x2 = v[1] + v[3] / 2, y1 = v[2] - v[4] / 2, y2 = v[2] + v[4] / 2;
      } else {
        x1 = y1 = INFINITY, x2 = y2 = -INFINITY;
        for (size_t k = 1; k + 1 < tok.size(); k += 2) {
          x1 = std::min(x1, v[k]), x2 = std::max(x2, v[k]);
          y1 = std::min(y1, v[k + 1]), y2 = std::max(y2, v[k + 1]);
        }
      }
      out.boxes.push_back(
          {float(x1 * w), float(y1 * h), float(x2 * w), float(y2 * h), static_cast<int32_t>(v[0])});
    }
    return out;
  }
};

// Every file under `dir`, sorted; images kept, other image types reported as skipped.
void scan_images(const fs::path& dir, std::vector<std::string>& images, std::vector<Issue>& skipped) {
  VT_CHECK(fs::is_directory(dir), dir.string(), ": image directory not found");
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    bool other = false;
    if (is_supported_image(f, &other))
      images.push_back(f);
    else if (other)
      skipped.push_back({f, 0, "unsupported image format (only JPEG and PNG are read)"});
  }
}

// Ultralytics' rule: the last "/images/" in the path becomes "/labels/", extension ".txt".
std::string label_path_for(const std::string& image) {
  std::string p = fs::path(image).replace_extension(".txt").string();
  const size_t k = p.rfind("/images/");
  if (k != std::string::npos) p.replace(k, 8, "/labels/");
  return p;
}

// The label directory that mirrors an image directory ("" when the rule does not apply).
std::string label_dir_for(const fs::path& image_dir) {
  std::string d = image_dir.string() + "/";
  const size_t k = d.rfind("/images/");
  if (k == std::string::npos) return "";
  return d.replace(k, 8, "/labels/");
}

// The name to record: relative to `root` when inside it.
std::string relative_name(const std::string& path, const fs::path& root) {
  const std::string rel = fs::path(path).lexically_relative(root).string();
  return rel.empty() || rel.compare(0, 2, "..") == 0 ? path : rel;
}

std::vector<std::string> names_from_yaml(const YAML::Node& names, const std::string& where) {
  std::vector<std::string> out;
  if (names.IsSequence()) {
    for (const YAML::Node& n : names) out.push_back(n.as<std::string>());
  } else if (names.IsMap()) {
    std::vector<std::pair<long, std::string>> pairs;
    for (const auto& kv : names) pairs.emplace_back(kv.first.as<long>(), kv.second.as<std::string>());
    std::sort(pairs.begin(), pairs.end());
    for (size_t k = 0; k < pairs.size(); ++k) {
      VT_CHECK(pairs[k].first == long(k), where, ": names must use the ids 0..", pairs.size() - 1, " (found ",
               pairs[k].first, ")");
      out.push_back(pairs[k].second);
    }
  } else {
    throw Error(cat(where, ": names must be a list or a map of id: name"));
  }
  VT_CHECK(!out.empty(), where, ": names is empty");
  return out;
}

YAML::Node load_yaml(const std::string& path) {
  try {
    return YAML::Load(read_text_file(path));
  } catch (const YAML::Exception& e) {
    throw Error(cat(path, ": not valid YAML (", e.what(), ")"));
  }
}

// One split entry of data.yaml: a directory, a .txt list of images, or a list of either.
// Image directories also give their mirroring label directory, searched for orphans.
void add_split_entry(const YAML::Node& node, const fs::path& root, const std::string& yaml,
                     std::vector<std::string>& images, std::vector<Issue>& skipped,
                     std::vector<std::string>& label_dirs) {
  if (node.IsSequence()) {
    for (const YAML::Node& n : node) add_split_entry(n, root, yaml, images, skipped, label_dirs);
    return;
  }
  const fs::path p = (root / node.as<std::string>()).lexically_normal();
  if (fs::is_directory(p)) {
    scan_images(p, images, skipped);
    const std::string labels = label_dir_for(p);
    if (!labels.empty()) label_dirs.push_back(labels);
  } else if (p.extension() == ".txt" && fs::is_regular_file(p)) {
    // Lines are image paths; relative ones are taken from the list file's directory.
    std::istringstream text(read_text_file(p.string()));
    std::vector<std::string> listed;
    for (std::string line; std::getline(text, line);) {
      line.erase(
          std::find_if(line.rbegin(), line.rend(), [](unsigned char c) { return !std::isspace(c); }).base(),
          line.end());
      if (line.empty()) continue;
      const fs::path f = fs::path(line).is_absolute() ? fs::path(line) : p.parent_path() / line;
      listed.push_back(f.lexically_normal().string());
    }
    for (const std::string& f : listed) {
      bool other = false;
      if (is_supported_image(f, &other))
        images.push_back(f);
      else
        skipped.push_back(
            {f, 0, other ? "unsupported image format (only JPEG and PNG are read)" : "not an image file"});
    }
  } else {
    throw Error(cat(yaml, ": split path ", p.string(), " is neither a directory nor a .txt list of images"));
  }
}

// Label files under `label_dirs` that no listed image uses: their boxes have no image.
void find_orphans(YoloSource& src, const std::vector<std::string>& label_dirs) {
  std::set<std::string> used;
  for (const std::string& p : src.label_paths) used.insert(fs::path(p).lexically_normal().string());
  for (const std::string& dir : label_dirs) {
    if (!fs::is_directory(dir)) continue;
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".txt" &&
          !used.count(e.path().lexically_normal().string()))
        files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) {
      std::istringstream text(read_text_file(f));
      int64_t lines = 0;
      for (std::string line; std::getline(text, line);)
        lines += line.find_first_not_of(" \t\r") != std::string::npos;
      src.orphan_boxes += lines;
      src.orphans.push_back(
          {f, 0, cat("label file has no image: its ", lines, " label line(s) are left out")});
    }
  }
}

std::unique_ptr<YoloSource> make_source(const std::vector<std::string>& images, std::vector<Issue> skipped,
                                        const fs::path& root, const std::vector<std::string>& class_names,
                                        const std::string& description,
                                        const std::function<std::string(const std::string&)>& label_of,
                                        const std::vector<std::string>& label_dirs) {
  auto src = std::make_unique<YoloSource>();
  src->format = "yolo";
  src->description = description;
  src->class_names = class_names;
  src->skipped = std::move(skipped);
  for (size_t k = 0; k < images.size(); ++k) {
    src->images.push_back(
        {images[k], relative_name(images[k], root), image_id_from_stem(images[k], int64_t(k))});
    src->label_paths.push_back(label_of(images[k]));
  }
  find_orphans(*src, label_dirs);
  return src;
}

}  // namespace

std::vector<std::string> read_class_names(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".yaml" || ext == ".yml") {
    const YAML::Node doc = load_yaml(path);
    VT_CHECK(doc["names"], path, ": no names: entry");
    return names_from_yaml(doc["names"], path);
  }
  std::vector<std::string> out;
  std::istringstream text(read_text_file(path));
  for (std::string line; std::getline(text, line);) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  VT_CHECK(!out.empty(), path, ": no class names");
  return out;
}

std::vector<std::pair<std::string, std::unique_ptr<Source>>> yolo_from_data_yaml(
    const std::string& yaml_path) {
  const YAML::Node doc = load_yaml(yaml_path);
  VT_CHECK(doc.IsMap(), yaml_path, ": expected a map with path, train, val and names");
  VT_CHECK(doc["names"], yaml_path, ": no names: entry");
  const std::vector<std::string> names = names_from_yaml(doc["names"], yaml_path);
  if (doc["nc"])
    VT_CHECK(doc["nc"].as<size_t>() == names.size(), yaml_path, ": nc is ", doc["nc"].as<size_t>(),
             " but names has ", names.size(), " entries");
  // `path` is the dataset root; relative to the YAML file's directory (absent: that directory).
  const fs::path yaml_dir = fs::absolute(yaml_path).parent_path();
  fs::path root = yaml_dir;
  if (doc["path"] && !doc["path"].IsNull()) {
    const fs::path p = doc["path"].as<std::string>();
    root = (p.is_absolute() ? p : yaml_dir / p).lexically_normal();
  }
  std::vector<std::pair<std::string, std::unique_ptr<Source>>> out;
  for (const char* split : {"train", "val", "test"}) {
    const YAML::Node node = doc[split];
    if (!node || node.IsNull() || (node.IsScalar() && node.as<std::string>().empty())) continue;
    std::vector<std::string> images, label_dirs;
    std::vector<Issue> skipped;
    add_split_entry(node, root, yaml_path, images, skipped, label_dirs);
    out.emplace_back(split, make_source(images, std::move(skipped), root, names,
                                        cat(yaml_path, " (", split, ")"), label_path_for, label_dirs));
  }
  VT_CHECK(!out.empty(), yaml_path, ": no train, val or test split");
  return out;
}

std::unique_ptr<Source> yolo_from_dirs(const std::string& images, const std::string& labels,
                                       const std::vector<std::string>& class_names) {
  VT_CHECK(fs::is_directory(labels), labels, ": label directory not found");
  std::vector<std::string> files;
  std::vector<Issue> skipped;
  scan_images(images, files, skipped);
  const fs::path image_root = fs::path(images), label_root = fs::path(labels);
  return make_source(
      files, std::move(skipped), image_root, class_names, cat(images, " + ", labels),
      [&](const std::string& img) {
        return (label_root / fs::path(img).lexically_relative(image_root)).replace_extension(".txt").string();
      },
      {labels});
}

}  // namespace vt::data
