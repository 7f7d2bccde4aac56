// Validation with COCO mAP (see validate.h).
#include "trainer/validate.h"

#include <chrono>
#include <cstring>
#include <type_traits>

#include "comm/world.h"
#include "data/resize.h"
#include "layers/check.h"
#include "trainer/progress.h"

namespace vt {
namespace {

// Every rank's `mine`, concatenated in rank order on rank 0; empty elsewhere (T: trivially
// copyable).
template <class T>
std::vector<T> gather(const std::vector<T>& mine) {
  static_assert(std::is_trivially_copyable_v<T>);
  const auto all = comm::gather_string(std::string(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(T)), 0);
  std::vector<T> out;
  for (const std::string& part : all) {
    const size_t n = part.size() / sizeof(T);
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, part.data(), n * sizeof(T));
  }
  return out;
}

}  // namespace

NmsParams Validator::validation_nms() {
  NmsParams p;
  p.conf = 0.001f;
  p.iou = 0.7f;
  p.max_det = 300;
  p.multi_label = true;
  return p;
}

Validator::Validator(Model& model, const std::string& dir, int threads, NmsParams nms, int world_size, int rank)
    : model_(model), world_size_(world_size), rank_(rank), nms_(nms), plan_(model.options().device) {
  data::LoaderConfig cfg;
  cfg.dir = dir;
  cfg.global_batch = model.options().batch * world_size;
  cfg.world_size = world_size;
  cfg.rank = rank;
  cfg.threads = threads;
  cfg.augment.train = false;
  cfg.augment.imgsz = static_cast<int>(model.options().imgsz);
  cfg.device = model.options().device;
  loader_ = std::make_unique<data::Loader>(cfg);
  VT_CHECK(static_cast<int>(loader_->dataset().class_names().size()) == model.nc(), "validation set ", dir, " has ",
           loader_->dataset().class_names().size(), " classes, the model ", model.nc());
  const int64_t b = model.options().batch, a = detect_num_anchors(model.outputs());
  const BufferId boxes = plan_.request("val.boxes", {b, a, 4}, DType::kF32);
  const BufferId scores = plan_.request("val.scores", {b, a, model.nc()}, DType::kF32);
  const int64_t ws = static_cast<int64_t>(detect_nms_workspace_bytes(b, a, model.nc(), nms_, plan_.device()));
  const BufferId work = plan_.request("val.nms_workspace", {std::max<int64_t>(1, ws)}, DType::kU8);
  plan_.allocate();
  boxes_ = plan_.get(boxes);
  scores_ = plan_.get(scores);
  workspace_ = ws ? plan_.get(work) : Tensor{};
}

ValidationResult Validator::run(bool progress) {
  const auto t0 = std::chrono::steady_clock::now();
  const data::Dataset& ds = loader_->dataset();
  const int size = static_cast<int>(model_.options().imgsz);
  ValidationResult r;
  std::vector<int64_t> image_ids;
  loader_->seek({});
  std::unique_ptr<ProgressBar> bar;
  if (progress) bar = std::make_unique<ProgressBar>("val", loader_->num_batches(), "batch");
  int64_t done = 0;
  while (const data::Batch* batch = loader_->next()) {
    batch->wait({});
    copy(batch->images, model_.input());
    model_.forward(false);
    detect_decode(model_.outputs(), model_.strides(), boxes_, scores_);
    // Where each slot's boxes go: back through its letterbox into the stored image.
    std::vector<ImageMap> maps(batch->index.size(), ImageMap{1, 0, 0, size, size});
    for (size_t i = 0; i < batch->index.size(); ++i) {
      const int64_t idx = batch->index[i];
      if (idx < 0) continue;
      const data::Record rec = ds.meta(idx);
      const int h = ds.storage() == data::Storage::kRaw ? ds.imgsz() : rec.orig_h;
      const int w = ds.storage() == data::Storage::kRaw ? ds.imgsz() : rec.orig_w;
      const data::Letterbox lb = data::letterbox_mapping(h, w, size);
      maps[i] = {lb.scale, lb.pad_x, lb.pad_y, w, h};
      image_ids.push_back(idx);
      for (const data::Box& b : rec.boxes) r.ground_truth.push_back({idx, b.cls, b.x1, b.y1, b.x2, b.y2});
    }
    const auto dets = detect_nms(boxes_, scores_, nms_, maps, workspace_);
    for (size_t i = 0; i < dets.size(); ++i) {
      if (batch->index[i] < 0) continue;
      for (const DetectedBox& d : dets[i])
        r.detections.push_back({batch->index[i], d.cls, d.x1, d.y1, d.x2, d.y2, d.score});
    }
    if (bar) bar->update(++done);
  }
  if (bar) bar->finish();
  if (world_size_ > 1) {
    r.detections = gather(r.detections);
    r.ground_truth = gather(r.ground_truth);
    image_ids = gather(image_ids);
  }
  if (rank_ == 0) r.map = evaluate_coco(r.ground_truth, r.detections, model_.nc(), image_ids);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace vt
