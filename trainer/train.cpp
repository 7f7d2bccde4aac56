// The training loop (see train.h).
#include "trainer/train.h"

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/handshake.h"
#include "comm/world.h"
#include "data/fileio.h"
#include "data/loader.h"
#include "layers/add.h"
#include "layers/check.h"
#include "layers/cuda_graph.h"
#include "layers/detect_loss.h"
#include "layers/memory_plan.h"
#include "layers/model.h"
#include "layers/reduce.h"
#include "optim/update.h"
#include "trainer/checkpointing.h"
#include "trainer/progress.h"
#include "trainer/run_state.h"
#include "trainer/trace.h"
#include "trainer/validate.h"
#include "trainer/version.h"

namespace vt {
namespace {

double now() { return comm::trace_clock(); }

Device pick_device(const std::string& d) {
  if (d == "cpu") return Device::kCPU;
  if (d == "cuda") {
    VT_CHECK(cuda_device_count() > 0, "--device cuda: no CUDA device found (visiontrain info lists them)");
    return Device::kCUDA;
  }
  VT_CHECK(d == "auto", "--device must be auto, cpu or cuda, not '", d, "'");
  return cuda_device_count() > 0 ? Device::kCUDA : Device::kCPU;
}

DType pick_dtype(const std::string& p, Device dev) {
  if (p == "fp32") return DType::kF32;
  if (p == "bf16") {
    VT_CHECK(dev == Device::kCUDA, "--precision bf16 needs a GPU; the CPU path is fp32");
    return DType::kBF16;
  }
  VT_CHECK(p == "auto", "--precision must be auto, fp32 or bf16, not '", p, "'");
  return dev == Device::kCUDA ? DType::kBF16 : DType::kF32;
}

// Appends one JSON object per line and flushes it, so a crash loses no logged step.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : out_(path, std::ios::app) {
    VT_CHECK(out_.good(), "cannot write the metrics file ", path);
  }
  void write(const nlohmann::json& j) { out_ << j.dump() << "\n" << std::flush; }

 private:
  std::ofstream out_;
};

data::LoaderConfig train_loader_config(const TrainOptions& opt, Device dev, const comm::World& w) {
  data::LoaderConfig cfg;
  cfg.dir = opt.data + "/train";
  cfg.global_batch = opt.batch;
  cfg.world_size = w.size;
  cfg.rank = w.rank;
  cfg.micro_steps = opt.accumulate;
  cfg.seed = opt.seed;
  // Ranks on one node share its cores.
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cfg.threads = opt.threads > 0 ? opt.threads : std::max(1, hw / w.local_size);
  cfg.augment = opt.augment;
  cfg.augment.imgsz = static_cast<int>(opt.imgsz);
  cfg.augment.train = true;
  cfg.max_boxes = opt.max_boxes;
  cfg.device = dev;
  return cfg;
}

double fitness(const MapResult& m) { return 0.1 * std::max(0.0, m.map50) + 0.9 * std::max(0.0, m.map); }

// The parameter layout every rank must share: names, shapes, offsets and groups, in order.
std::string layout_text(const Model& m) {
  std::ostringstream os;
  for (const ParamInfo& p : m.param_table()) os << p.name << p.shape.str() << p.offset << ':' << int(p.group) << ';';
  os << "bn" << m.bn_stats().numel();
  return os.str();
}

// Test hook (tests/comm, tests/trainer): VT_TEST_FAULT=<hang|throw|nangrad>:<rank>:<step>
// makes that rank hang (sleep, outside any collective) or throw at the start of that step,
// or (nangrad; the return value) put a NaN into its gradient sum before the step's update.
bool inject_fault(int rank, int64_t step) {
  static const char* spec = std::getenv("VT_TEST_FAULT");
  if (!spec) return false;
  char kind[16] = {};
  int r = -1;
  long long s = -1;
  if (std::sscanf(spec, "%15[a-z]:%d:%lld", kind, &r, &s) != 3 || r != rank || s != step) return false;
  if (std::string(kind) == "nangrad") return true;
  if (std::string(kind) == "hang") {
    std::fprintf(stderr, "[rank %d] VT_TEST_FAULT: hanging at step %lld\n", rank, s);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  VT_CHECK(std::string(kind) != "throw", "VT_TEST_FAULT: rank ", rank, " fails at step ", s);
  return false;
}

// SIGTERM and SIGINT ask for a clean stop: the step in progress finishes, a checkpoint is
// written, and the program exits 0. The previous handlers come back at the end of training.
class StopSignals {
 public:
  StopSignals() {
    struct sigaction sa {};
    sa.sa_handler = [](int sig) { raised_ = sig; };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGINT, &sa, &old_int_);
  }
  ~StopSignals() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
  }
  bool raised() const { return raised_ != 0; }
  const char* name() const { return raised_ == SIGINT ? "SIGINT" : raised_ == SIGTERM ? "SIGTERM" : "another rank"; }

 private:
  static inline volatile std::sig_atomic_t raised_ = 0;
  struct sigaction old_term_ {}, old_int_ {};
};

// --resume auto|PATH on rank 0: loads and verifies the checkpoint and restores the state into
// the model and buffers. auto without any good checkpoint starts from scratch, saying so.
TrainCounters resume_from(const TrainOptions& opt, const ckpt::CheckpointStore& store, Model& model,
                          const StateBuffers& state) {
  std::string path;
  std::optional<ckpt::Checkpoint> c;
  if (opt.resume == "auto") {
    std::vector<std::string> notes;
    auto found = store.load_newest_good(&notes);
    for (const std::string& n : notes) std::fprintf(stderr, "resume: %s\n", n.c_str());
    if (!found) {
      std::printf("resume: no checkpoint in %s to resume from; starting from scratch\n", store.dir().c_str());
      return {};
    }
    path = found->first;
    c = std::move(found->second);
  } else {
    path = opt.resume;
    c = ckpt::Checkpoint::load(path);
  }
  VT_CHECK(!c->has_attr("global_batch") || c->get_int("global_batch") == opt.batch, "train: --resume ", path,
           " was trained with a global batch of ", c->get_int("global_batch"), ", not ", opt.batch,
           ": the sample stream continues only with the same --batch");
  VT_CHECK(!c->has_attr("seed") || c->get_int("seed") == static_cast<int64_t>(opt.seed), "train: --resume ", path,
           " was trained with --seed ", c->get_int("seed"), ", not ", opt.seed);
  const TrainCounters k = restore_state(*c, path, model, state);
  std::printf("resume: from %s: step %lld (epoch %lld, sample %lld), %lld optimizer steps, trained on %lld rank%s\n",
              path.c_str(), (long long)k.step, (long long)k.loader.epoch, (long long)k.loader.cursor,
              (long long)k.opt_steps, (long long)c->get_int("world_size"), c->get_int("world_size") > 1 ? "s" : "");
  return k;
}

// On resume, metrics.jsonl keeps only what happened up to the checkpoint: lines of later steps
// (written before a crash) would otherwise appear twice. (--resume auto that finds no
// checkpoint starts at step 0 and keeps none.)
void trim_metrics(const std::string& path, int64_t step, int64_t nb) {
  std::ifstream in(path);
  if (!in.good()) return;
  std::string kept, line;
  int64_t dropped = 0;
  while (std::getline(in, line)) {
    bool keep = true;
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("step") && j["step"].is_number()) keep = j["step"].get<int64_t>() < step;
      else if (j.contains("checkpoint_step")) keep = j["checkpoint_step"].get<int64_t>() <= step;
      else if (j.contains("epoch")) keep = j["epoch"].get<int64_t>() * nb <= step;
    } catch (const std::exception&) {
      keep = false;  // a line cut by a crash
    }
    if (keep) kept += line + "\n";
    else ++dropped;
  }
  in.close();
  if (dropped == 0) return;
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  VT_CHECK(out.good(), "cannot rewrite ", path);
  std::printf("resume: %lld lines of metrics.jsonl after step %lld dropped\n", (long long)dropped, (long long)step);
}

// A new run (no --resume) does not mix with a previous run's files in --out: the old
// checkpoints would compete with the new ones (retention keeps the highest steps, --resume
// auto takes the newest) and metrics.jsonl would run on from the old curves. They stop the
// run unless --overwrite deletes them.
void claim_out_dir(const std::string& out, bool overwrite) {
  namespace fs = std::filesystem;
  std::vector<fs::path> found;
  for (const char* name : {"checkpoints", "metrics.jsonl", "last.h5", "best.h5"}) {
    const fs::path p = fs::path(out) / name;
    if (fs::is_directory(p) ? !fs::is_empty(p) : fs::exists(p)) found.push_back(p);
  }
  if (found.empty()) return;
  std::string names;
  for (const fs::path& p : found) names += (names.empty() ? "" : ", ") + p.filename().string();
  VT_CHECK(overwrite, "train: ", out, " holds a previous run (", names,
           "): continue it with --resume auto, start over with --overwrite (deletes them), or choose another "
           "--out");
  for (const fs::path& p : found) fs::remove_all(p);
  std::printf("train: --overwrite: deleted the previous run's %s in %s\n", names.c_str(), out.c_str());
}

}  // namespace

std::vector<std::pair<std::string, std::string>> config_fields(const TrainOptions& o) {
  auto str = [](auto v) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
  };
  const ScheduleConfig& s = o.schedule;
  const data::AugmentConfig& a = o.augment;
  return {{"epochs", str(o.epochs)},
          {"steps", str(o.steps)},
          {"batch", str(o.batch)},
          {"accumulate", str(o.accumulate)},
          {"imgsz", str(o.imgsz)},
          {"seed", str(o.seed)},
          {"device", o.device},
          {"precision", o.precision},
          {"optimizer", o.optimizer},
          {"lr0", str(s.lr0)},
          {"lrf", str(s.lrf)},
          {"momentum", str(s.momentum)},
          {"weight_decay", str(s.weight_decay)},
          {"warmup_epochs", str(s.warmup_epochs)},
          {"warmup_momentum", str(s.warmup_momentum)},
          {"warmup_bias_lr", str(s.warmup_bias_lr)},
          {"cos_lr", str(s.cos_lr)},
          {"nbs", str(s.nbs)},
          {"mosaic", str(a.mosaic)},
          {"translate", str(a.translate)},
          {"scale", str(a.scale)},
          {"fliplr", str(a.fliplr)},
          {"hsv", str(a.hsv_h) + "," + str(a.hsv_s) + "," + str(a.hsv_v)},
          {"close_mosaic", str(o.close_mosaic)},
          {"max_norm", str(o.max_norm)},
          {"max_boxes", str(o.max_boxes)},
          {"val", str(o.val)},
          {"comm", o.comm},
          {"bucket_mb", str(o.bucket_mb)},
          {"first_bucket_mb", str(o.first_bucket_mb)}};
}

namespace {

// Running sums over an epoch's steps on this rank: the progress line, the epoch line and the
// epoch's metrics.
struct EpochStats {
  double loss[4] = {0, 0, 0, 0};  // total, box, cls, dfl: sums of the steps' global means
  double wait_s = 0, comm_s = 0, exposed_s = 0;
  int64_t steps = 0;
  double start = 0;
};

// One rank's training run: the constructor builds and plans everything and agrees with the
// other ranks on the starting state; run() is the epoch loop.
class Trainer {
 public:
  explicit Trainer(TrainOptions opt);
  int run();

 private:
  void plan_buffers();
  void handshake();
  void start_state();
  void open_loader(int64_t epoch, const data::LoaderState& at);
  void step(int64_t epoch, int64_t ni, EpochStats& e);
  void accumulate_grads(int64_t offset, int64_t count);
  void queue_forward(int j, const Tensor& targets, int64_t ni);
  void queue_backward(int j, bool update, int64_t ni);
  void finish_comm(bool update);
  void queue_step_end(bool update, int64_t ni);
  void run_queued(int key, const std::function<void()>& queue);
  void end_epoch(int64_t epoch, const EpochStats& e);
  void save(double fitness, std::vector<std::string> copies, const nlohmann::json& metrics);
  void set_progress(const EpochStats& e, double lr, double step_s);
  // Host timestamps of a traced phase are only meaningful once the GPU has caught up.
  double mark(int64_t step) {
    if (trace_.on(step) && dev_ == Device::kCUDA) synchronize(s_);
    return now();
  }

  TrainOptions opt_;
  const comm::World& w_;
  const bool lead_;
  const int k_;           // micro-steps per step
  const int64_t micro_;   // b: images per micro-step and rank
  Device dev_;
  DType dt_;
  // --cuda-graph: the step's own stream (the legacy default stream cannot be captured).
  // Declared before everything that queues work on it, so that it is destroyed after them:
  // the loader, stopping, releases its last batch with an event recorded on this stream.
  std::unique_ptr<CudaStream> graph_stream_;
  std::unique_ptr<data::Loader> loader_;
  int nc_ = 0;
  int64_t nb_ = 0;  // steps per epoch
  RunInfo info_;
  std::unique_ptr<Model> model_, val_model_;
  std::unique_ptr<Validator> validator_;
  ScheduleConfig sched_;
  DetectLossConfig loss_cfg_;
  bool average_bn_ = false;
  std::unique_ptr<MemoryPlan> plan_;
  // loss (4) f32; its workspace; grad-norm^2 (1) and its workspace; gradient sum (P) and its
  // checkpoint copy; BN statistics at the step's start and their sum over micro-steps;
  // optimizer state (P, P or 1); EMA of the params (P) and BN statistics.
  Tensor loss_, loss_work_, sumsq_, red_ws_, gsum_, gsum_save_, bn_start_, bn_sum_, state0_, state1_, ema_, ema_bn_;
  std::unique_ptr<comm::Watchdog> watchdog_;
  std::unique_ptr<comm::Communicator> comm_;
  std::unique_ptr<comm::GradBuckets> buckets_;
  std::unique_ptr<ckpt::CheckpointStore> store_;  // rank 0
  std::unique_ptr<MetricsLog> log_;               // rank 0
  std::unique_ptr<Checkpointer> checkpointer_;    // rank 0
  TrainCounters counters_;
  nlohmann::json config_ = nlohmann::json::object();
  std::vector<double> stalls_;
  int64_t saved_at_ = 0, total_steps_ = 0;
  bool stop_ = false;
  std::string progress_suffix_;  // set_progress()
  StopSignals signals_;
  Trace trace_;
  // The optimizer's per-step values (optim/update.h), set before each updating step.
  std::unique_ptr<StepValues> values_;
  // --cuda-graph: the graphs by micro-step kind (run_queued), the fixed targets buffer they
  // read, and the kinds that have run once eagerly (the stream: graph_stream_).
  bool graphs_on_ = false;
  std::map<int, std::unique_ptr<CudaGraph>> graphs_;
  std::set<int> warm_;
  Tensor graph_targets_;
  Stream s_{};  // the legacy default stream, or graph_stream_'s
};

Trainer::Trainer(TrainOptions opt)
    : opt_(std::move(opt)),
      w_(comm::init_world()),
      lead_(w_.rank == 0),
      k_(opt_.accumulate),
      micro_(opt_.accumulate >= 1 ? opt_.batch / (int64_t(w_.size) * opt_.accumulate) : 0),
      trace_(opt_.trace, opt_.trace_steps) {
  VT_CHECK(!opt_.data.empty(), "train: --data is required (a folder with train/ and val/ datasets)");
  VT_CHECK(opt_.epochs >= 1 && opt_.batch >= 1 && opt_.accumulate >= 1 && opt_.steps >= 0,
           "train: --epochs, --batch and --accumulate must be >= 1, --steps >= 0");
  VT_CHECK(opt_.batch % (int64_t(w_.size) * k_) == 0, "train: --batch ", opt_.batch, " (global) must split evenly over ",
           w_.size, " ranks x ", k_, " micro-steps (--accumulate)");
  dev_ = pick_device(opt_.device);
  if (dev_ == Device::kCUDA) cuda_set_device(w_.local_rank % cuda_device_count());
  dt_ = pick_dtype(opt_.precision, dev_);
  if (opt_.cuda_graph) {
    VT_CHECK(dev_ == Device::kCUDA && opt_.trace.empty(), "train: --cuda-graph needs the GPU and no --trace (got ",
             device_name(dev_), opt_.trace.empty() ? "" : ", --trace", ")");
    graphs_on_ = true;
    graph_stream_ = std::make_unique<CudaStream>();
    s_ = graph_stream_->get();
  }
  if (lead_) {
    if (opt_.resume.empty()) claim_out_dir(opt_.out, opt_.overwrite);
    std::filesystem::create_directories(opt_.out);
  }

  // Data first: a bad dataset fails before anything else is built.
  loader_ = std::make_unique<data::Loader>(train_loader_config(opt_, dev_, w_));
  info_.class_names = loader_->dataset().class_names();
  nc_ = static_cast<int>(info_.class_names.size());
  nb_ = loader_->num_batches();
  total_steps_ = opt_.steps > 0 ? std::min(opt_.steps, nb_ * opt_.epochs) : nb_ * opt_.epochs;

  info_.model_path = opt_.model;
  info_.model_yaml = data::read_text_file(opt_.model);
  info_.imgsz = opt_.imgsz;
  const ModelSpec spec = parse_model_spec(info_.model_yaml, opt_.model, nc_);
  ModelOptions model_options{dev_, dt_, micro_, opt_.imgsz, opt_.seed};
  disable_features(model_options, opt_.disable);
  model_ = std::make_unique<Model>(spec, model_options);
  if (opt_.val) {  // every rank validates its share of the split
    val_model_ = std::make_unique<Model>(spec, model_options);
    validator_ = std::make_unique<Validator>(*val_model_, opt_.data + "/val", opt_.threads,
                                             Validator::validation_nms(), w_.size, w_.rank);
  }

  // Schedule and optimizer, as Ultralytics resolves them (from the global batch).
  sched_ = opt_.schedule;
  sched_.batch = opt_.batch;
  if (opt_.optimizer == "auto") {
    sched_ = resolve_auto_optimizer(sched_, loader_->dataset().size(), opt_.epochs, nc_);
  } else {
    VT_CHECK(opt_.optimizer == "sgd" || opt_.optimizer == "adamw", "--optimizer must be auto, sgd or adamw");
    sched_.optimizer = opt_.optimizer == "sgd" ? OptimizerKind::kSGD : OptimizerKind::kAdamW;
  }
  plan_buffers();

  // Communication: the watchdog, the backend, the buckets, the handshake, the start state.
  watchdog_ = std::make_unique<comm::Watchdog>(w_.size > 1 ? opt_.comm_timeout : 0);
  const size_t staging = static_cast<size_t>(gsum_.numel() + model_->bn_stats().numel()) * dtype_size(gsum_.dtype()) +
                         (64u << 10);
  comm_ = make_communicator(opt_.comm, dev_, staging, watchdog_.get());
  buckets_ = std::make_unique<comm::GradBuckets>(*comm_, gsum_, static_cast<int64_t>(opt_.bucket_mb * 1048576),
                                                 static_cast<int64_t>(opt_.first_bucket_mb * 1048576));
  handshake();
  start_state();

  for (const auto& [name, value] : config_fields(opt_)) config_[name] = value;
  config_["data"] = opt_.data;
  config_["model"] = opt_.model;
  if (lead_) {
    std::printf("train: %s, %lld images in %lld steps of %lld per epoch, %lld epochs, %s %s, optimizer %s lr0 %g\n",
                opt_.model.c_str(), (long long)loader_->dataset().size(), (long long)nb_, (long long)opt_.batch,
                (long long)opt_.epochs, device_name(dev_), dtype_name(dt_), optimizer_name(sched_.optimizer),
                sched_.lr0);
    std::printf("ranks: %d (%s backend, %d gradient buckets), %d micro-step%s of %lld images per rank and step\n",
                w_.size, comm_->name(), buckets_->num_buckets(), k_, k_ > 1 ? "s" : "", (long long)micro_);
    std::printf("model: %lld parameters, %d classes, memory %.1f MiB (+ %.1f MiB for the step)\n",
                (long long)model_->num_params(), nc_, model_->memory().total_bytes() / 1048576.0,
                plan_->total_bytes() / 1048576.0);
  }
}

// Everything the step needs beyond the model, planned once.
void Trainer::plan_buffers() {
  const int64_t p = model_->flat_size(), nstats = model_->bn_stats().numel();
  average_bn_ = int64_t(w_.size) * k_ > 1;
  loss_cfg_.nc = nc_;
  loss_cfg_.reg_max = model_->reg_max();
  loss_cfg_.strides = model_->strides();
  loss_cfg_.imgsz = static_cast<int>(opt_.imgsz);
  plan_ = std::make_unique<MemoryPlan>(dev_);
  MemoryPlan& plan = *plan_;
  const DType pdt = model_->params().dtype();
  const size_t loss_ws = detect_loss_workspace_bytes(loss_cfg_, micro_, opt_.max_boxes, dt_, dev_);
  const BufferId id_loss = plan.request("loss", {4}, DType::kF32);
  const BufferId id_loss_ws = plan.request("loss.workspace", {static_cast<int64_t>(loss_ws / 4 + 1)}, DType::kF32);
  const BufferId id_sumsq = plan.request("grad.sumsq", {1}, DType::kF32);
  const BufferId id_red_ws =
      plan.request("reduce.workspace", {std::max<int64_t>(1, reduce_workspace_elems(p, dev_))}, DType::kF32);
  const BufferId id_gsum = plan.request("grad.sum", {p}, pdt);
  const BufferId id_gsum_save = plan.request("grad.sum.checkpoint", {p}, pdt);
  const BufferId id_bn_start = plan.request("bn.start", {average_bn_ ? nstats : 1}, DType::kF32);
  const BufferId id_bn_sum = plan.request("bn.sum", {average_bn_ ? nstats : 1}, DType::kF32);
  const BufferId id_state0 = plan.request("optim.state0", {p}, DType::kF32);
  const BufferId id_state1 =
      plan.request("optim.state1", {sched_.optimizer == OptimizerKind::kAdamW ? p : 1}, DType::kF32);
  const BufferId id_ema = plan.request("ema.params", {p}, DType::kF32);
  const BufferId id_ema_bn = plan.request("ema.bn_stats", {nstats}, DType::kF32);
  plan.allocate();
  loss_ = plan.get(id_loss), loss_work_ = plan.get(id_loss_ws), sumsq_ = plan.get(id_sumsq);
  red_ws_ = dev_ == Device::kCUDA ? plan.get(id_red_ws) : Tensor{};
  gsum_ = plan.get(id_gsum), gsum_save_ = plan.get(id_gsum_save);
  bn_start_ = plan.get(id_bn_start), bn_sum_ = plan.get(id_bn_sum);
  state0_ = plan.get(id_state0), state1_ = plan.get(id_state1);
  ema_ = plan.get(id_ema), ema_bn_ = plan.get(id_ema_bn);
  values_ = std::make_unique<StepValues>(dev_, pdt);
}

void Trainer::handshake() {
  std::vector<comm::HandshakeField> fields;
  for (const auto& [name, value] : config_fields(opt_)) fields.push_back({"config." + name, value});
  fields.push_back({"model spec", comm::digest(info_.model_yaml)});
  fields.push_back({"parameter layout", comm::digest(layout_text(*model_))});
  fields.push_back({"dataset manifest", comm::digest(data::read_text_file(opt_.data + "/train/manifest.json"))});
  fields.push_back({"program version", program_version()});
  comm::handshake(fields, watchdog_.get());
}

// The starting state on every rank: rank 0's initial weights, or the checkpoint it resumes
// from. A checkpoint holds the gradient sum of an accumulation in progress summed over the
// ranks (gsum_save_); a resume gives it to rank 0 and zeros to the others.
void Trainer::start_state() {
  Model& model = *model_;
  const StateBuffers state{model.params(), model.bn_stats(), ema_, ema_bn_, state0_, state1_, gsum_save_};
  copy(model.params(), ema_);
  copy(model.bn_stats(), ema_bn_);
  zero(gsum_save_);
  if (lead_) {
    store_ = std::make_unique<ckpt::CheckpointStore>(opt_.out + "/checkpoints", opt_.retention);
    // Temporaries of last.h5 and best.h5 left by a killed writer (only this program makes them).
    for (const auto& e : std::filesystem::directory_iterator(opt_.out)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("last.h5.tmp.", 0) == 0 || name.rfind("best.h5.tmp.", 0) == 0) std::filesystem::remove(e.path());
    }
    if (!opt_.resume.empty()) counters_ = resume_from(opt_, *store_, model, state);
  }
  {
    comm::Watchdog::Scope scope(watchdog_.get(), "the broadcast of rank 0's state", 0);
    comm::broadcast_bytes(&counters_, sizeof(counters_), 0);
    for (const Tensor& t : {state.params, state.bn_stats, state.ema, state.ema_bn, state.state0, state.state1})
      comm_->broadcast(t, 0);
    model.refresh_weights();
    if (lead_) copy(gsum_save_, gsum_);
    else zero(gsum_);
  }
  const data::LoaderState expected_at{counters_.step / nb_, (counters_.step % nb_) * opt_.batch};
  VT_CHECK(counters_.step == 0 || counters_.loader == expected_at, "train: the checkpoint's sample position (epoch ",
           counters_.loader.epoch, ", sample ", counters_.loader.cursor, ") does not match its step ", counters_.step,
           " at ", nb_, " steps of ", opt_.batch,
           " per epoch: resume with the global --batch and dataset it was trained with");
  saved_at_ = counters_.step;  // nothing new to save before the first step
  if (counters_.step > 0) open_loader(counters_.step / nb_, counters_.loader);
  if (lead_) {
    if (!opt_.resume.empty()) trim_metrics(opt_.out + "/metrics.jsonl", counters_.step, nb_);
    log_ = std::make_unique<MetricsLog>(opt_.out + "/metrics.jsonl");
    checkpointer_ = std::make_unique<Checkpointer>(model, state, *store_);
  }
}

// The loader of `epoch` (mosaic closed for the last close_mosaic epochs), starting at `at`.
void Trainer::open_loader(int64_t epoch, const data::LoaderState& at) {
  data::LoaderConfig cfg = train_loader_config(opt_, dev_, w_);
  if (opt_.close_mosaic > 0 && epoch >= opt_.epochs - opt_.close_mosaic) cfg.augment.mosaic = 0;
  cfg.verify = data::Verify::kStructure;  // verified at start
  loader_.reset();
  loader_ = std::make_unique<data::Loader>(cfg, at);
}

int Trainer::run() {
  const double t_run = now();
  for (int64_t epoch = counters_.step / nb_; epoch < opt_.epochs && counters_.step < total_steps_ && !stop_;
       ++epoch) {
    if (opt_.close_mosaic > 0 && epoch == opt_.epochs - opt_.close_mosaic && opt_.augment.mosaic > 0 &&
        counters_.step == epoch * nb_) {
      open_loader(epoch, loader_->state());
      if (lead_)
        std::printf("epoch %lld: mosaic closed for the last %lld epochs\n", (long long)epoch + 1,
                    (long long)opt_.close_mosaic);
    }
    const int64_t first = counters_.step - epoch * nb_, last = std::min(nb_, total_steps_ - epoch * nb_);
    std::unique_ptr<ProgressBar> bar;
    if (opt_.progress && lead_)
      bar = std::make_unique<ProgressBar>("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(opt_.epochs),
                                          last - first, "step");
    EpochStats e;
    e.start = now();
    for (int64_t i = first; i < last && !stop_; ++i) {
      step(epoch, i + nb_ * epoch, e);
      if (bar) {
        bar->set_suffix(progress_suffix_);
        bar->update(e.steps);
      }
      if (opt_.save_every > 0 && counters_.step % opt_.save_every == 0 && counters_.step < total_steps_ && !stop_)
        save(std::nan(""), {}, {{"step", counters_.step}});
    }
    if (bar) bar->finish();
    end_epoch(epoch, e);
    if (counters_.step != (epoch + 1) * nb_) break;  // stopped inside the epoch: the final save below
  }
  if (saved_at_ != counters_.step) save(std::nan(""), {opt_.out + "/last.h5"}, {{"step", counters_.step}});
  if (checkpointer_) checkpointer_->finish();
  trace_.write();
  if (lead_) {
    double mean = 0, worst = 0;
    for (double x : stalls_) mean += x / stalls_.size(), worst = std::max(worst, x);
    std::printf("checkpoints: %zu written to %s/checkpoints (latest: %s); training stalled %.1f ms per save on "
                "average, %.1f ms at most, while the writer took %.1f ms on average, %.1f ms at most\n",
                stalls_.size(), opt_.out.c_str(), store_->latest().c_str(), mean * 1e3, worst * 1e3,
                checkpointer_->mean_write_s() * 1e3, checkpointer_->max_write_s() * 1e3);
    if (stop_)
      std::printf("stopped by %s after step %lld; continue with --resume auto\n", signals_.name(),
                  (long long)counters_.step);
    else
      std::printf("done: %lld steps in %s; weights in %s/{last,best}.h5, metrics in %s/metrics.jsonl\n",
                  (long long)counters_.step, human_duration(now() - t_run).c_str(), opt_.out.c_str(),
                  opt_.out.c_str());
  }
  return 0;
}

// gsum_ += the micro-step's gradient over flat range [offset, offset + count), as backward
// finishes it.
void Trainer::accumulate_grads(int64_t offset, int64_t count) {
  const Tensor g = comm::slice(model_->grads(), offset, count), acc = comm::slice(gsum_, offset, count);
  add_backward(g, &acc, nullptr, s_);
}

// Queues micro-step j's forward (of k_) on s_: the gradients zeroed, the BN statistics'
// starting point (several micro-batches; on the last, their sum), forward and the loss on
// `targets`.
void Trainer::queue_forward(int j, const Tensor& targets, int64_t ni) {
  Model& model = *model_;
  model.zero_grads(s_);
  if (average_bn_) {
    // Every micro-batch updates the running statistics from the step's starting point.
    if (j == 0) {
      copy_async(model.bn_stats(), bn_start_, s_);
      zero(bn_sum_, s_);
    } else {
      copy_async(bn_start_, model.bn_stats(), s_);
    }
  }
  const double t0 = mark(ni);
  model.forward(true, s_);
  if (average_bn_) {
    add_backward(model.bn_stats(), &bn_sum_, nullptr, s_);
    if (j == k_ - 1) copy_async(bn_sum_, model.bn_stats(), s_);
  }
  detect_loss(loss_cfg_, model.outputs(), targets, model.output_grads(), loss_, loss_work_, s_);
  trace_.add("forward", Trace::kStep, t0, mark(ni), ni);
}

// Queues micro-step j's backward into gsum_, the gradient buckets' all-reduces started as it
// finishes them (several ranks, the step's last micro-step, an updating step).
void Trainer::queue_backward(int j, bool update, int64_t ni) {
  Model& model = *model_;
  const bool communicate = update && j == k_ - 1 && w_.size > 1;
  const double t0 = mark(ni);
  if (communicate) buckets_->begin(ni);
  model.backward(s_, [&](int64_t offset, int64_t count) {
    accumulate_grads(offset, count);
    if (communicate) buckets_->ready(offset + count, s_);
  });
  trace_.add("backward", Trace::kStep, t0, mark(ni), ni);
}

// Several ranks, after the step's last backward: every all-reduce started (the buckets left)
// and made visible to s_.
void Trainer::finish_comm(bool update) {
  if (update) buckets_->finish(s_);
  else if (average_bn_) comm_->wait_all(s_);
}

// Queues the step's end after its last micro-step (and finish_comm): the BN statistics
// averaged over the micro-batches of all ranks; when the step updates, the gradient norm, the
// optimizer, the EMA and the bf16 weights with the values set in values_ (all skipped on the
// device when the norm is not finite), and gsum_ zeroed.
void Trainer::queue_step_end(bool update, int64_t ni) {
  Model& model = *model_;
  if (average_bn_) scale(model.bn_stats(), 1.0 / double(int64_t(w_.size) * k_), s_);
  if (!update) return;
  const double t0 = mark(ni);
  reduce_sum_squares(gsum_, sumsq_, red_ws_, s_);
  if (sched_.optimizer == OptimizerKind::kSGD)
    sgd_step(*values_, model.params(), gsum_, model.groups(), state0_, s_);
  else
    adamw_step(*values_, model.params(), gsum_, model.groups(), state0_, state1_, s_);
  ema_update(*values_, ema_, model.params(), s_);
  ema_update(*values_, ema_bn_, model.bn_stats(), s_);
  model.refresh_weights(s_);
  zero(gsum_, s_);
  trace_.add("optimizer", Trace::kStep, t0, mark(ni), ni);
}

// Runs what `queue` queues on s_: eagerly, or under --cuda-graph as a graph per kind of
// work (`key`: first, last, updating micro-step, and which segment of it). A kind's first
// occurrence runs eagerly, so that lazy initialisations stay outside any capture; its second
// is recorded, then launched, as is every later one. Everything the work reads that changes
// per step is in fixed buffers refreshed before: the images, graph_targets_, the step values.
void Trainer::run_queued(int key, const std::function<void()>& queue) {
  if (!graphs_on_ || warm_.insert(key).second) {
    queue();
    return;
  }
  std::unique_ptr<CudaGraph>& g = graphs_[key];
  if (!g) {
    g = std::make_unique<CudaGraph>();
    g->capture(s_, queue);
  }
  g->launch(s_);
}

// One global step `ni`: k micro-steps of forward, loss and backward on this rank, the
// gradient buckets all-reduced as backward finishes them when the step updates, the BN
// statistics averaged, the optimizer and EMA (eagerly, or replayed as CUDA graphs); then,
// after the step's one host sync, whether the update happened and the step's numbers.
void Trainer::step(int64_t epoch, int64_t ni, EpochStats& e) {
  Model& model = *model_;
  const bool poison = inject_fault(w_.rank, ni);
  VT_CHECK(!poison || !graphs_on_, "VT_TEST_FAULT=nangrad: not with --cuda-graph");
  const double t_step = now();
  StepHyper hyper = schedule_at(sched_, ni, epoch, nb_, opt_.epochs);
  const bool update = ni - counters_.last_opt >= accumulate_at(sched_, ni, nb_);
  if (update) {
    // The values of update number opt_steps + 1; a skipped update does not count, and the
    // next step sets the same number again.
    hyper.step = counters_.opt_steps + 1;
    values_->set(hyper, GradClip{&sumsq_, opt_.max_norm, 1.0}, ema_decay(hyper.step), "train");
  }
  double step_wait = 0, local[5] = {0, 0, 0, 0, 0};
  for (int j = 0; j < k_; ++j) {
    const bool last = j == k_ - 1;
    const double t0 = now();
    const data::Batch* batch = loader_->next();
    step_wait += loader_->stats().last_wait_s;
    // Stream-ordered copies on s_, after the batch's arrival (wait) and before the loader may
    // refill its buffer (it waits for what s_ has queued by the next next()).
    batch->wait(s_);
    copy_async(batch->images, model.input(), s_);
    const Tensor* targets = &batch->targets;
    if (graphs_on_) {
      if (!graph_targets_.defined())
        graph_targets_ = Tensor::empty(batch->targets.shape(), batch->targets.dtype(), dev_);
      copy_async(batch->targets, graph_targets_, s_);
      targets = &graph_targets_;
    }
    trace_.add("data", Trace::kStep, t0, mark(ni), ni);
    const int key = (j == 0 ? 1 : 0) | (last ? 2 : 0) | (update && last ? 4 : 0);
    // VT_TEST_FAULT=nangrad, eager only (checked above): a synchronous copy after backward.
    auto poison_grads = [&] {
      const Tensor nan = Tensor::empty({1}, DType::kF32, Device::kCPU);
      nan.data<float>()[0] = std::nanf("");
      copy(nan, comm::slice(gsum_, 0, 1));
    };
    if (w_.size == 1) {
      // One rank: the whole micro-step is one graph.
      run_queued(key, [&] {
        queue_forward(j, *targets, ni);
        queue_backward(j, update, ni);
        if (poison && last) poison_grads();
        if (last) queue_step_end(update, ni);
      });
    } else {
      // Several ranks: forward and loss, and the step's end, are graphs; backward runs
      // eagerly, its bucket callbacks starting the all-reduces (host work a replay would not
      // repeat), as do the BN statistics' all-reduce and the wait for them all.
      run_queued(key | 8, [&] { queue_forward(j, *targets, ni); });
      if (average_bn_ && last) comm_->start_allreduce(model.bn_stats(), s_, "bn stats", ni);
      queue_backward(j, update, ni);
      if (poison && last) poison_grads();
      if (last) {
        finish_comm(update);
        run_queued(key | 16, [&] { queue_step_end(update, ni); });
      }
    }
    const Tensor l = loss_.to(Device::kCPU);  // also the micro-step's sync point
    for (int q = 0; q < 4; ++q) local[q] += l.data<float>()[q];
  }
  synchronize(s_);
  if (update) {
    if (std::isfinite(sumsq_.to(Device::kCPU).data<float>()[0])) {
      ++counters_.opt_steps;
    } else {
      ++counters_.skipped;
      if (lead_)
        std::fprintf(stderr, "\nstep %lld: gradient norm is not finite; optimizer step skipped\n", (long long)ni);
    }
    counters_.last_opt = ni;
  }
  counters_.step = ni + 1;
  counters_.loader = loader_->state();

  // The step's numbers: losses averaged over ranks and micro-steps, times from this rank; and
  // whether any rank was asked to stop (all ranks then stop after this same step).
  double exposed = 0, comm_s = 0;
  for (const comm::CollectiveRecord& r : comm_->take_records(&exposed)) {
    comm_s += r.end_s - r.start_s;
    trace_.add("all-reduce " + r.what, Trace::kComm, r.start_s, r.end_s, r.step);
  }
  local[4] = signals_.raised() ? 1 : 0;
  comm::allreduce_sum(local, 5);
  stop_ = local[4] > 0;
  double lv[4];
  for (int q = 0; q < 4; ++q) lv[q] = local[q] / double(int64_t(w_.size) * k_);
  for (int q = 0; q < 4; ++q) e.loss[q] += lv[q];
  const double step_s = now() - t_step;
  e.wait_s += step_wait;
  e.comm_s += comm_s;
  e.exposed_s += exposed;
  ++e.steps;
  if (!lead_) return;
  set_progress(e, hyper.lr[0], step_s);
  log_->write({{"step", ni}, {"epoch", epoch}, {"loss", lv[0]}, {"box", lv[1]}, {"cls", lv[2]}, {"dfl", lv[3]},
               {"lr", hyper.lr[0]}, {"images_per_s", opt_.batch / step_s}, {"step_s", step_s},
               {"data_wait_s", step_wait}, {"comm_s", comm_s}, {"exposed_comm_s", exposed},
               {"compute_s", std::max(0.0, step_s - step_wait - exposed)}});
}

// progress_suffix_, the text after the progress bar: the epoch's mean losses so far, lr, speed, data-wait,
// exposed communication (several ranks) and GPU memory (CUDA).
void Trainer::set_progress(const EpochStats& e, double lr, double step_s) {
  const double n = double(e.steps);
  char suffix[240];
  std::snprintf(suffix, sizeof(suffix), "box %.3f cls %.3f dfl %.3f  lr %.2g  %.0f img/s  data %.0f%%%s%s",
                e.loss[1] / n, e.loss[2] / n, e.loss[3] / n, lr, opt_.batch / step_s,
                100.0 * e.wait_s / std::max(1e-9, now() - e.start),
                w_.size > 1 ? cat("  comm exposed ", int(100.0 * e.exposed_s / std::max(1e-9, e.comm_s)), "%").c_str()
                            : "",
                dev_ == Device::kCUDA ? cat("  gpu mem ", cuda_memory_in_use() >> 20, " MiB").c_str() : "");
  progress_suffix_ = suffix;
}

// The epoch's line; at a complete epoch's end validation (rank 0), last.h5, best.h5 and a
// checkpoint.
void Trainer::end_epoch(int64_t epoch, const EpochStats& e) {
  const double epoch_s = now() - e.start;
  const int64_t ns = std::max<int64_t>(1, e.steps);
  if (lead_)
    std::printf("epoch %lld/%lld: box %.3f cls %.3f dfl %.3f  %.1f img/s  data-wait %.1f%%%s  (%.1f s)\n",
                (long long)epoch + 1, (long long)opt_.epochs, e.loss[1] / ns, e.loss[2] / ns, e.loss[3] / ns,
                e.steps * opt_.batch / epoch_s, 100.0 * e.wait_s / std::max(1e-9, epoch_s),
                w_.size > 1 ? cat("  comm ", int(e.comm_s * 1e3), " ms, exposed ", int(e.exposed_s * 1e3), " ms").c_str()
                            : "",
                epoch_s);
  if (counters_.step != (epoch + 1) * nb_) return;
  nlohmann::json metrics = {{"epoch", epoch + 1},
                            {"box", e.loss[1] / ns}, {"cls", e.loss[2] / ns}, {"dfl", e.loss[3] / ns},
                            {"data_wait", e.wait_s / std::max(1e-9, epoch_s)},
                            {"comm_s", e.comm_s}, {"exposed_comm_s", e.exposed_s},
                            {"skipped_steps", counters_.skipped}, {"world_size", w_.size}};
  double fit = std::nan("");
  std::vector<std::string> copies = {opt_.out + "/last.h5"};
  if (validator_) {
    copy(ema_, val_model_->params());
    copy(ema_bn_, val_model_->bn_stats());
    val_model_->refresh_weights();
    const ValidationResult v = validator_->run(opt_.progress && lead_);
    fit = fitness(v.map);
    metrics["val"] = {{"map", v.map.map}, {"map50", v.map.map50}, {"map75", v.map.map75}, {"seconds", v.seconds}};
    if (lead_)
      std::printf("  val: mAP@.5:.95 %.4f  mAP@.5 %.4f  mAP@.75 %.4f  (%lld images, %.1f s)\n", v.map.map,
                  v.map.map50, v.map.map75, (long long)v.map.num_images, v.seconds);
  }
  if (lead_) {
    if (!(fit <= counters_.best_fitness)) {  // better, or the first epoch, or no validation
      counters_.best_fitness = std::isnan(fit) ? counters_.best_fitness : fit;
      copies.push_back(opt_.out + "/best.h5");
    }
    log_->write(metrics);
  }
  save(fit, copies, metrics);
}

// A checkpoint of the state after counters_.step steps, queued on rank 0's writer. Every rank
// calls it at the same steps: the gradient sum's all-reduce is collective.
void Trainer::save(double fitness, std::vector<std::string> copies, const nlohmann::json& metrics) {
  const double t0 = now();
  saved_at_ = counters_.step;
  if (counters_.last_opt == counters_.step - 1) {
    zero(gsum_save_);  // the last step updated: nothing accumulated
  } else {
    copy(gsum_, gsum_save_);
    if (w_.size > 1) {
      comm_->start_allreduce(gsum_save_, s_, "checkpoint grad sum", counters_.step);
      comm_->wait_all(s_);
      comm_->take_records(nullptr);
    }
  }
  if (!lead_) return;
  SaveRequest r;
  r.counters = counters_;
  r.info = info_;
  r.info.step = counters_.step;
  r.info.epoch = counters_.step / nb_;
  r.info.metrics_json = metrics.dump();
  r.config_json = config_.dump();
  r.world_size = w_.size;
  r.global_batch = opt_.batch;
  r.seed = opt_.seed;
  r.optimizer = optimizer_name(sched_.optimizer);
  r.fitness = fitness;
  r.copies = std::move(copies);
  checkpointer_->save(std::move(r));
  stalls_.push_back(now() - t0);  // the gradient sum's copy, the wait for the last write, the snapshot
  log_->write({{"checkpoint_step", counters_.step}, {"stall_s", stalls_.back()}});
}

}  // namespace

int run_training(TrainOptions opt) { return Trainer(std::move(opt)).run(); }

}  // namespace vt
