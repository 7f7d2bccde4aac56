// Verification of exported files through the Python reference scripts (see export_verify.h).
#include "trainer/export_verify.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/codec.h"
#include "data/fileio.h"
#include "data/resize.h"
#include "data/synth.h"
#include "layers/check.h"

extern char** environ;

namespace vt {
namespace {

namespace fs = std::filesystem;

// Raw outputs: the head's logits before the decode ("detect.raw", export_onnx.h), 1e-4
// absolute, the bound. The decoded outputs: scores are probabilities in [0, 1], 1e-4
// absolute. Box corners are (anchor -+ distance) * stride: an error e in a distance (in bins)
// moves a corner by e * stride px, and a float32 corner near 640 px has an ulp of 6.1e-5 px,
// so 1e-4 px absolute would demand under two ulps of any reimplementation. Corners are
// compared in grid units instead, |d| / stride <= 1e-4 of a cell (3.2e-3 px at stride 32);
// the absolute pixel figure is printed too.
constexpr double kRawTol = 1e-4, kScoreTol = 1e-4, kBoxCellTol = 1e-4;
// Detections after NMS: the same list (images, classes, order), corners within 1e-3 px and
// scores within 1e-5 (the bounds).
constexpr double kDetBoxTol = 1e-3, kDetScoreTol = 1e-5;

std::string find_python() {
  if (const char* p = std::getenv("VT_PYTHON"); p && *p) return p;
  const fs::path venv = fs::path(VT_SOURCE_DIR) / ".venv" / "bin" / "python3";
  if (fs::exists(venv)) return venv.string();
  return "python3";
}

// Runs `python script args...`, its output passing through; throws when it fails.
void run_script(const std::string& script, const std::vector<std::string>& args) {
  const std::string python = find_python();
  const std::string path = (fs::path(VT_SOURCE_DIR) / "scripts" / script).string();
  VT_CHECK(fs::exists(path), "verify: the script ", path, " is missing (it ships with the source tree)");
  std::vector<std::string> all = {python, path};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, python.c_str(), nullptr, nullptr, argv.data(), environ);
  VT_CHECK(rc == 0, "verify: cannot run ", python, ": ", std::strerror(rc),
           " (set VT_PYTHON to a Python with tests/requirements.txt installed)");
  int status = 0;
  VT_CHECK(waitpid(pid, &status, 0) == pid, "verify: waiting for ", python, " failed");
  VT_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 3), "verify: ", python,
           " lacks a package the check needs (message above); install tests/requirements.txt into it "
           "(scripts/test.sh makes .venv) or set VT_PYTHON");
  VT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "verify: ", path, " failed (",
           WIFEXITED(status) ? cat("exit code ", WEXITSTATUS(status)) : cat("signal ", WTERMSIG(status)),
           ")");
}

// A scratch directory removed with everything in it when the check ends.
struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "vt-export-verify-XXXXXX").string();
    VT_CHECK(mkdtemp(t.data()) != nullptr, "verify: cannot create a directory ", t, ": ",
             std::strerror(errno));
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(path) / name).string(); }
  std::string path;
};

template <class T>
std::vector<T> read_array(const std::string& path, size_t count) {
  const std::vector<uint8_t> bytes = data::read_file(path);
  VT_CHECK(count == 0 || bytes.size() == count * sizeof(T), "verify: ", path, " holds ", bytes.size(),
           " bytes, expected ", count * sizeof(T));
  VT_CHECK(bytes.size() % sizeof(T) == 0, "verify: ", path, " is not a whole number of values");
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

struct DetRow {
  int image, cls;
  double x1, y1, x2, y2, score;
};

std::vector<DetRow> rows_of(const std::vector<std::vector<DetectedBox>>& per_image) {
  std::vector<DetRow> out;
  for (size_t i = 0; i < per_image.size(); ++i)
    for (const DetectedBox& d : per_image[i])
      out.push_back({static_cast<int>(i), d.cls, d.x1, d.y1, d.x2, d.y2, d.score});
  return out;
}

// Compares two detection lists (same images, classes and order; boxes and scores within the
// tolerances); prints the figures and returns "" or what differs.
std::string compare_detections(const std::string& what, const std::vector<DetRow>& want,
                               const std::vector<DetRow>& got) {
  double box = 0, score = 0;
  const size_t n = std::min(want.size(), got.size());
  std::string first_bad;
  for (size_t k = 0; k < n; ++k) {
    const DetRow &a = want[k], &b = got[k];
    const double db = std::max(
        {std::fabs(a.x1 - b.x1), std::fabs(a.y1 - b.y1), std::fabs(a.x2 - b.x2), std::fabs(a.y2 - b.y2)});
    const double ds = std::fabs(a.score - b.score);
    box = std::max(box, db), score = std::max(score, ds);
    if (first_bad.empty() && (a.image != b.image || a.cls != b.cls || db > kDetBoxTol || ds > kDetScoreTol))
      first_bad = cat("detection ", k, ": image ", a.image, " class ", a.cls, " score ", a.score, " box (",
                      a.x1, ", ", a.y1, ", ", a.x2, ", ", a.y2, ") vs image ", b.image, " class ", b.cls,
                      " score ", b.score, " box (", b.x1, ", ", b.y1, ", ", b.x2, ", ", b.y2, ")");
  }
  std::printf("  %-58s %4zu vs %4zu; max |d box| %.3g px, max |d score| %.3g\n", what.c_str(), want.size(),
              got.size(), box, score);
  if (want.size() != got.size()) return cat(what, ": ", want.size(), " vs ", got.size(), " detections");
  return first_bad.empty() ? "" : cat(what, ": ", first_bad);
}

// Greedy NMS is discontinuous in the order of the scores: two candidates whose scores differ
// by less than the float32 noise between implementations may swap, and then keep different
// boxes. Counts the candidate pairs (each anchor's best class, score > conf) closer than `gap`.
std::string near_ties(const std::vector<float>& scores, int64_t n, int64_t A, int64_t nc, float conf,
                      double gap) {
  int64_t pairs = 0;
  double closest = INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> best;
    for (int64_t a = 0; a < A; ++a) {
      const float* s = scores.data() + (i * A + a) * nc;
      const float m = *std::max_element(s, s + nc);
      if (m > conf) best.push_back(m);
    }
    std::sort(best.begin(), best.end());
    for (size_t k = 1; k < best.size(); ++k) {
      closest = std::min(closest, double(best[k]) - best[k - 1]);
      pairs += double(best[k]) - best[k - 1] <= gap;
    }
  }
  if (pairs == 0) return "";
  return cat(
      " (", pairs, " pairs of candidate scores lie within ", gap, " of each other, the closest ", closest,
      " apart: float32 rounding may reorder them and greedy NMS then keeps other boxes; the raw outputs "
      "agree; a higher --conf or a trained model avoids such ties)");
}

data::Image crop(const data::Image& src, int h, int w) {
  data::Image out(h, w);
  for (int y = 0; y < h; ++y) std::copy_n(src.px(y, 0), w * 3, out.px(y, 0));
  return out;
}

}  // namespace

std::vector<VerifyImage> verify_images(const std::string& dir, int imgsz) {
  std::vector<std::pair<std::string, data::Image>> raw;
  if (dir.empty()) {
    const int s = imgsz;
    raw.push_back({"synth square", data::synth_image(0, 1, 0, s, 4).image});
    raw.push_back({"synth tall", crop(data::synth_image(0, 1, 1, s * 3 / 2, 4).image, s * 3 / 2, s)});
    raw.push_back({"synth wide", crop(data::synth_image(0, 1, 2, s / 2, 4).image, s / 3, s / 2)});
  } else {
    VT_CHECK(fs::is_directory(dir), "verify: --images ", dir, " is not a directory");
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png"))
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    VT_CHECK(!files.empty(), "verify: no .jpg, .jpeg or .png images in ", dir);
    for (const std::string& f : files) {
      const std::vector<uint8_t> bytes = data::read_file(f);
      raw.push_back({f, data::decode_image(bytes.data(), bytes.size(), f)});
    }
  }
  std::vector<VerifyImage> out;
  for (auto& [name, img] : raw) out.push_back({name, data::letterbox(img, imgsz, nullptr)});
  return out;
}

void verify_onnx(Model& model, const std::vector<VerifyImage>& images, const OnnxVerifySpec& spec) {
  VT_CHECK(model.options().device == Device::kCPU && model.options().dtype == DType::kF32 &&
               model.options().batch == 1,
           "verify_onnx: the reference model must be CPU, f32, batch 1");
  const int64_t n = static_cast<int64_t>(images.size()), S = model.options().imgsz, nc = model.nc();
  const int64_t A = detect_num_anchors(model.outputs()), no = model.outputs()[0].dim(3);

  // The native reference, image by image: the head's raw outputs as (no, A), the decoded
  // boxes/scores, and detect_nms in input pixels.
  std::vector<float> raw(n * no * A), boxes(n * A * 4), scores(n * A * nc);
  std::vector<uint8_t> pixels;
  const ImageMap identity{1, 0, 0, static_cast<int>(S), static_cast<int>(S)};
  std::vector<std::vector<DetectedBox>> native_dets;
  for (int64_t i = 0; i < n; ++i) {
    const data::Image& c = images[i].canvas;
    VT_CHECK(c.h == S && c.w == S, "verify: image ", images[i].name, " is not ", S, " x ", S);
    pixels.insert(pixels.end(), c.rgb.begin(), c.rgb.end());
    copy(Tensor::view(const_cast<uint8_t*>(c.rgb.data()), {1, S, S, 3}, DType::kU8, Device::kCPU),
         model.input());
    model.forward(false);
    int64_t a0 = 0;  // the level's first anchor
    for (const Tensor& level : model.outputs()) {  // (1, H, W, no) -> raw[i] (no, A)
      const float* p = level.data<float>();
      const int64_t hw = level.dim(1) * level.dim(2);
      for (int64_t a = 0; a < hw; ++a)
        for (int64_t c = 0; c < no; ++c) raw[(i * no + c) * A + a0 + a] = p[a * no + c];
      a0 += hw;
    }
    const Tensor b = Tensor::view(boxes.data() + i * A * 4, {1, A, 4}, DType::kF32, Device::kCPU);
    const Tensor s = Tensor::view(scores.data() + i * A * nc, {1, A, nc}, DType::kF32, Device::kCPU);
    detect_decode(model.outputs(), model.strides(), b, s);
    native_dets.push_back(detect_nms(b, s, spec.nms, {identity}, Tensor{})[0]);
  }

  // ONNX Runtime on the same pixels.
  TempDir tmp;
  std::ofstream(tmp.file("images.u8"), std::ios::binary)
      .write(reinterpret_cast<const char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()));
  const nlohmann::json req = {{"onnx", spec.onnx_path},
                              {"images", tmp.file("images.u8")},
                              {"n", n},
                              {"imgsz", S},
                              {"anchors", A},
                              {"nc", nc},
                              {"no", no},
                              {"dynamic_batch", spec.dynamic_batch},
                              {"with_nms", spec.with_nms},
                              {"max_det", spec.nms.max_det},
                              {"out_dir", tmp.path}};
  std::ofstream(tmp.file("request.json")) << req.dump(1) << "\n";
  std::printf("verify: %lld image(s) at %lld x %lld, native CPU f32 vs ONNX Runtime\n", (long long)n,
              (long long)S, (long long)S);
  run_script("verify_onnx.py", {tmp.file("request.json")});
  const std::vector<float> ort_raw = read_array<float>(tmp.file("raw.f32"), raw.size());
  const std::vector<float> ort_boxes = read_array<float>(tmp.file("boxes.f32"), boxes.size());
  const std::vector<float> ort_scores = read_array<float>(tmp.file("scores.f32"), scores.size());

  // Raw outputs, then the decoded ones.
  double raw_d = 0, raw_max = 0;
  for (size_t k = 0; k < raw.size(); ++k) {
    raw_d = std::max(raw_d, std::fabs(double(raw[k]) - ort_raw[k]));
    raw_max = std::max(raw_max, std::fabs(double(raw[k])));
  }
  std::printf("  raw head outputs (%lld x %lld x %lld, |values| <= %.3g): max |d| %.3g (<= %g)\n",
              (long long)n, (long long)no, (long long)A, raw_max, raw_d, kRawTol);
  VT_CHECK(!std::isnan(raw_d) && raw_d <= kRawTol, "verify: the ONNX head's raw outputs (detect.raw) differ from "
           "the native ones by ", raw_d);
  std::vector<int> anchor_stride;
  for (size_t l = 0; l < model.outputs().size(); ++l)
    anchor_stride.insert(anchor_stride.end(), model.outputs()[l].dim(1) * model.outputs()[l].dim(2),
                         model.strides()[l]);
  double box_px = 0, box_cell = 0, score = 0;
  for (size_t k = 0; k < boxes.size(); ++k) {
    const double d = std::fabs(double(boxes[k]) - ort_boxes[k]);
    box_px = std::max(box_px, d);
    box_cell = std::max(box_cell, d / anchor_stride[(k / 4) % A]);
  }
  for (size_t k = 0; k < scores.size(); ++k)
    score = std::max(score, std::fabs(double(scores[k]) - ort_scores[k]));
  std::printf("  boxes  (%lld x %lld x 4): max |d| %.3g px = %.3g cells (<= %g cells)\n", (long long)n,
              (long long)A, box_px, box_cell, kBoxCellTol);
  std::printf("  scores (%lld x %lld x %lld): max |d| %.3g (<= %g)\n", (long long)n, (long long)A,
              (long long)nc, score, kScoreTol);
  VT_CHECK(!std::isnan(box_cell) && box_cell <= kBoxCellTol,
           "verify: ONNX boxes differ from the native decode by ", box_cell, " cells (", box_px, " px)");
  VT_CHECK(!std::isnan(score) && score <= kScoreTol, "verify: ONNX scores differ from the native decode by ",
           score);

  // Detections: detect_nms on both raw outputs, and the file's own NMS against both.
  std::vector<std::vector<DetectedBox>> from_raw;
  for (int64_t i = 0; i < n; ++i) {
    const Tensor b =
        Tensor::view(const_cast<float*>(ort_boxes.data()) + i * A * 4, {1, A, 4}, DType::kF32, Device::kCPU);
    const Tensor s = Tensor::view(const_cast<float*>(ort_scores.data()) + i * A * nc, {1, A, nc}, DType::kF32,
                                  Device::kCPU);
    from_raw.push_back(detect_nms(b, s, spec.nms, {identity}, Tensor{})[0]);
  }
  const std::vector<DetRow> native = rows_of(native_dets), onnx_raw = rows_of(from_raw);
  std::printf("  detections (conf %g, iou %g, max_det %d; boxes <= %g px, scores <= %g):\n", spec.nms.conf,
              spec.nms.iou, spec.nms.max_det, kDetBoxTol, kDetScoreTol);
  std::vector<std::string> failures = {
      compare_detections("native pass + detect_nms vs ONNX outputs + detect_nms", native, onnx_raw)};
  if (spec.with_nms) {
    // Rows (image, class, anchor, x1, y1, x2, y2, score) gathered by the script.
    const std::vector<double> g = read_array<double>(tmp.file("detections.f64"), 0);
    std::vector<DetRow> nms;
    for (size_t k = 0; k + 8 <= g.size(); k += 8)
      nms.push_back({static_cast<int>(g[k]), static_cast<int>(g[k + 1]), g[k + 3], g[k + 4], g[k + 5],
                     g[k + 6], g[k + 7]});
    failures.push_back(compare_detections("native pass + detect_nms vs ONNX NonMaxSuppression", native, nms));
    failures.push_back(
        compare_detections("ONNX outputs: detect_nms vs ONNX NonMaxSuppression", onnx_raw, nms));
  }
  for (const std::string& f : failures)
    VT_CHECK(f.empty(), "verify: detections differ: ", f,
             near_ties(scores, n, A, nc, spec.nms.conf, 2 * std::max(score, 1e-7)));
  std::printf("verify: passed\n");
}

void verify_safetensors(const std::string& safetensors_path, const std::string& checkpoint_path,
                        const std::string& which) {
  std::printf("verify: %s against %s (%s weights)\n", safetensors_path.c_str(), checkpoint_path.c_str(),
              which.c_str());
  run_script("verify_safetensors.py", {safetensors_path, checkpoint_path, which});
  std::printf("verify: passed\n");
}

}  // namespace vt
