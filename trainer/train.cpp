// The training loop (see train.h).
#include "trainer/train.h"

#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/handshake.h"
#include "comm/world.h"
#include "data/loader.h"
#include "layers/add.h"
#include "layers/check.h"
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

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  VT_CHECK(f.good(), "train: cannot read ", what, " ", path);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// The parameter layout every rank must share: names, shapes, offsets and groups, in order.
std::string layout_text(const Model& m) {
  std::ostringstream os;
  for (const ParamInfo& p : m.param_table()) os << p.name << p.shape.str() << p.offset << ':' << int(p.group) << ';';
  os << "bn" << m.bn_stats().numel();
  return os.str();
}

// Test hook (tests/comm): VT_TEST_FAULT=<hang|throw>:<rank>:<step> makes that rank hang
// (sleep, outside any collective) or throw at the start of that step.
void inject_fault(int rank, int64_t step) {
  static const char* spec = std::getenv("VT_TEST_FAULT");
  if (!spec) return;
  char kind[16] = {};
  int r = -1;
  long long s = -1;
  if (std::sscanf(spec, "%15[a-z]:%d:%lld", kind, &r, &s) != 3 || r != rank || s != step) return;
  if (std::string(kind) == "hang") {
    std::fprintf(stderr, "[rank %d] VT_TEST_FAULT: hanging at step %lld\n", rank, s);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  VT_CHECK(std::string(kind) != "throw", "VT_TEST_FAULT: rank ", rank, " fails at step ", s);
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
// (written before a crash) would otherwise appear twice.
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

int run_training(TrainOptions opt) {
  const comm::World& w = comm::init_world();
  const bool lead = w.rank == 0;
  VT_CHECK(!opt.data.empty(), "train: --data is required (a folder with train/ and val/ datasets)");
  VT_CHECK(opt.epochs >= 1 && opt.batch >= 1 && opt.accumulate >= 1 && opt.steps >= 0,
           "train: --epochs, --batch and --accumulate must be >= 1, --steps >= 0");
  VT_CHECK(opt.batch % (int64_t(w.size) * opt.accumulate) == 0, "train: --batch ", opt.batch,
           " (global) must split evenly over ", w.size, " ranks x ", opt.accumulate, " micro-steps (--accumulate)");
  const int64_t micro = opt.batch / (int64_t(w.size) * opt.accumulate);  // b
  const int k = opt.accumulate;
  const Device dev = pick_device(opt.device);
  if (dev == Device::kCUDA) cuda_set_device(w.local_rank % cuda_device_count());
  const DType dt = pick_dtype(opt.precision, dev);
  if (lead) std::filesystem::create_directories(opt.out);

  // Data first: a bad dataset fails before anything else is built.
  auto loader = std::make_unique<data::Loader>(train_loader_config(opt, dev, w));
  const std::vector<std::string> names = loader->dataset().class_names();
  const int nc = static_cast<int>(names.size());
  const int64_t nb = loader->num_batches();

  RunInfo info;
  info.model_path = opt.model;
  info.model_yaml = read_file(opt.model, "the model spec");
  info.class_names = names;
  info.imgsz = opt.imgsz;
  const ModelSpec spec = parse_model_spec(info.model_yaml, opt.model, nc);
  Model model(spec, {dev, dt, micro, opt.imgsz, opt.seed});
  std::unique_ptr<Model> val_model;
  std::unique_ptr<Validator> validator;
  if (opt.val && lead) {
    val_model = std::make_unique<Model>(spec, ModelOptions{dev, dt, micro, opt.imgsz, opt.seed});
    validator = std::make_unique<Validator>(*val_model, opt.data + "/val", opt.threads);
  }

  // Schedule and optimizer, as Ultralytics resolves them (from the global batch).
  ScheduleConfig sched = opt.schedule;
  sched.batch = opt.batch;
  if (opt.optimizer == "auto") {
    sched = resolve_auto_optimizer(sched, loader->dataset().size(), opt.epochs, nc);
  } else {
    VT_CHECK(opt.optimizer == "sgd" || opt.optimizer == "adamw", "--optimizer must be auto, sgd or adamw");
    sched.optimizer = opt.optimizer == "sgd" ? OptimizerKind::kSGD : OptimizerKind::kAdamW;
  }

  // Everything else the step needs, planned once.
  const int64_t p = model.flat_size(), nstats = model.bn_stats().numel();
  const bool average_bn = int64_t(w.size) * k > 1;
  DetectLossConfig loss_cfg;
  loss_cfg.nc = nc;
  loss_cfg.reg_max = model.reg_max();
  loss_cfg.strides = model.strides();
  loss_cfg.imgsz = static_cast<int>(opt.imgsz);
  MemoryPlan plan(dev);
  const DType pdt = model.params().dtype();
  const size_t loss_ws = detect_loss_workspace_bytes(loss_cfg, micro, opt.max_boxes, dt, dev);
  const BufferId id_loss = plan.request("loss", {4}, DType::kF32);
  const BufferId id_loss_ws = plan.request("loss.workspace", {static_cast<int64_t>(loss_ws / 4 + 1)}, DType::kF32);
  const BufferId id_sumsq = plan.request("grad.sumsq", {1}, DType::kF32);
  const BufferId id_red_ws = plan.request("reduce.workspace", {std::max<int64_t>(1, reduce_workspace_elems(p, dev))},
                                          DType::kF32);
  const BufferId id_gsum = plan.request("grad.sum", {p}, pdt);
  const BufferId id_gsum_save = plan.request("grad.sum.checkpoint", {p}, pdt);
  const BufferId id_bn_start = plan.request("bn.start", {average_bn ? nstats : 1}, DType::kF32);
  const BufferId id_bn_sum = plan.request("bn.sum", {average_bn ? nstats : 1}, DType::kF32);
  const BufferId id_state0 = plan.request("optim.state0", {p}, DType::kF32);
  const BufferId id_state1 = plan.request("optim.state1", {sched.optimizer == OptimizerKind::kAdamW ? p : 1},
                                          DType::kF32);
  const BufferId id_ema = plan.request("ema.params", {p}, DType::kF32);
  const BufferId id_ema_bn = plan.request("ema.bn_stats", {nstats}, DType::kF32);
  plan.allocate();
  const Tensor loss = plan.get(id_loss), loss_work = plan.get(id_loss_ws), sumsq = plan.get(id_sumsq);
  const Tensor red_ws = dev == Device::kCUDA ? plan.get(id_red_ws) : Tensor{};
  const Tensor gsum = plan.get(id_gsum), gsum_save = plan.get(id_gsum_save), bn_start = plan.get(id_bn_start), bn_sum = plan.get(id_bn_sum);
  const Tensor state0 = plan.get(id_state0), state1 = plan.get(id_state1);
  const Tensor ema = plan.get(id_ema), ema_bn = plan.get(id_ema_bn);

  // Communication: the watchdog, the backend, the consistency handshake, rank 0's weights.
  comm::Watchdog watchdog(w.size > 1 ? opt.comm_timeout : 0);
  const size_t staging = static_cast<size_t>(p + nstats) * dtype_size(pdt) + (64u << 10);
  std::unique_ptr<comm::Communicator> communicator = make_communicator(opt.comm, dev, staging, &watchdog);
  comm::GradBuckets buckets(*communicator, gsum, static_cast<int64_t>(opt.bucket_mb * 1048576),
                            static_cast<int64_t>(opt.first_bucket_mb * 1048576));
  {
    std::vector<comm::HandshakeField> fields;
    for (const auto& [name, value] : config_fields(opt)) fields.push_back({"config." + name, value});
    fields.push_back({"model spec", comm::digest(info.model_yaml)});
    fields.push_back({"parameter layout", comm::digest(layout_text(model))});
    fields.push_back({"dataset manifest", comm::digest(read_file(opt.data + "/train/manifest.json", "the manifest"))});
    fields.push_back({"program version", std::string(VT_VERSION) + " " + VT_GIT_COMMIT});
    comm::handshake(fields, &watchdog);
  }
  // The starting state: rank 0's initial weights, or the checkpoint it resumes from.
  // A checkpoint holds the gradient sum of an accumulation in progress summed over the ranks
  // (gsum_save); a resume gives it to rank 0 and zeros to the others.
  const StateBuffers state{model.params(), model.bn_stats(), ema, ema_bn, state0, state1, gsum_save};
  copy(model.params(), ema);
  copy(model.bn_stats(), ema_bn);
  zero(gsum_save);
  std::unique_ptr<ckpt::CheckpointStore> store;
  if (lead) {
    store = std::make_unique<ckpt::CheckpointStore>(opt.out + "/checkpoints", opt.retention);
    // Temporaries of last.h5 and best.h5 left by a killed writer (only this program makes them).
    for (const auto& e : std::filesystem::directory_iterator(opt.out)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("last.h5.tmp.", 0) == 0 || name.rfind("best.h5.tmp.", 0) == 0) std::filesystem::remove(e.path());
    }
  }
  TrainCounters counters;
  if (lead && !opt.resume.empty()) counters = resume_from(opt, *store, model, state);
  {
    comm::Watchdog::Scope scope(&watchdog, "the broadcast of rank 0's state", 0);
    comm::broadcast_bytes(&counters, sizeof(counters), 0);
    for (const Tensor& t : {state.params, state.bn_stats, state.ema, state.ema_bn, state.state0, state.state1})
      communicator->broadcast(t, 0);
    model.refresh_weights();
    if (lead) copy(gsum_save, gsum);
    else zero(gsum);
  }
  const data::LoaderState expected_at{counters.step / nb, (counters.step % nb) * opt.batch};
  VT_CHECK(counters.step == 0 || counters.loader == expected_at,
           "train: the checkpoint's sample position (epoch ", counters.loader.epoch, ", sample ", counters.loader.cursor,
           ") does not match its step ", counters.step, " at ", nb, " steps of ", opt.batch,
           " per epoch: resume with the global --batch and dataset it was trained with");

  if (lead) {
    std::printf("train: %s, %lld images in %lld steps of %lld per epoch, %lld epochs, %s %s, optimizer %s lr0 %g\n",
                opt.model.c_str(), (long long)loader->dataset().size(), (long long)nb, (long long)opt.batch,
                (long long)opt.epochs, device_name(dev), dtype_name(dt), optimizer_name(sched.optimizer), sched.lr0);
    std::printf("ranks: %d (%s backend, %d gradient buckets), %d micro-step%s of %lld images per rank and step\n",
                w.size, communicator->name(), buckets.num_buckets(), k, k > 1 ? "s" : "", (long long)micro);
    std::printf("model: %lld parameters, %d classes, memory %.1f MiB (+ %.1f MiB for the step)\n",
                (long long)model.num_params(), nc, model.memory().total_bytes() / 1048576.0,
                plan.total_bytes() / 1048576.0);
  }

  std::unique_ptr<MetricsLog> log;
  std::unique_ptr<Checkpointer> checkpointer;
  if (lead) {
    if (counters.step > 0) trim_metrics(opt.out + "/metrics.jsonl", counters.step, nb);
    log = std::make_unique<MetricsLog>(opt.out + "/metrics.jsonl");
    checkpointer = std::make_unique<Checkpointer>(model, state, *store);
  }
  nlohmann::json config = nlohmann::json::object();
  for (const auto& [name, value] : config_fields(opt)) config[name] = value;
  config["data"] = opt.data;
  config["model"] = opt.model;
  const Stream s{};
  std::vector<double> stalls;
  int64_t saved_at = counters.step;  // nothing new to save before the first step
  // Rank 0 queues a checkpoint of the state after counters.step steps.
  // Every rank calls it at the same steps (the gradient sum's all-reduce is collective).
  auto save = [&](double fitness, std::vector<std::string> copies, const nlohmann::json& metrics) {
    const double t0 = now();
    saved_at = counters.step;
    if (counters.last_opt == counters.step - 1) {
      zero(gsum_save);  // the last step updated: nothing accumulated
    } else {
      copy(gsum, gsum_save);
      if (w.size > 1) {
        communicator->start_allreduce(gsum_save, s, "checkpoint grad sum", counters.step);
        communicator->wait_all(s);
        communicator->take_records(nullptr);
      }
    }
    if (!lead) return;
    SaveRequest r;
    r.counters = counters;
    r.info = info;
    r.info.step = counters.step;
    r.info.epoch = counters.step / nb;
    r.info.metrics_json = metrics.dump();
    r.config_json = config.dump();
    r.world_size = w.size;
    r.global_batch = opt.batch;
    r.seed = opt.seed;
    r.optimizer = optimizer_name(sched.optimizer);
    r.fitness = fitness;
    r.copies = std::move(copies);
    checkpointer->save(std::move(r));
    stalls.push_back(now() - t0);  // the gradient sum's copy, the wait for the last write, the snapshot
    log->write({{"checkpoint_step", counters.step}, {"stall_s", stalls.back()}});
  };

  StopSignals signals;
  Trace trace(opt.trace, opt.trace_steps);
  const double t_run = now();
  const int64_t total_steps = opt.steps > 0 ? std::min(opt.steps, nb * opt.epochs) : nb * opt.epochs;
  // Host timestamps of a traced phase are only meaningful once the GPU has caught up.
  auto mark = [&](int64_t step) {
    if (trace.on(step) && dev == Device::kCUDA) synchronize(s);
    return now();
  };
  // The loader of `epoch` (mosaic closed for the last close_mosaic epochs) at `at`.
  auto open_loader = [&](int64_t epoch, const data::LoaderState& at) {
    data::LoaderConfig cfg = train_loader_config(opt, dev, w);
    if (opt.close_mosaic > 0 && epoch >= opt.epochs - opt.close_mosaic) cfg.augment.mosaic = 0;
    cfg.verify = data::Verify::kStructure;  // verified at start
    loader.reset();
    loader = std::make_unique<data::Loader>(cfg, at);
  };
  if (counters.step > 0) open_loader(counters.step / nb, counters.loader);
  bool stop = false;

  for (int64_t epoch = counters.step / nb; epoch < opt.epochs && counters.step < total_steps && !stop; ++epoch) {
    if (opt.close_mosaic > 0 && epoch == opt.epochs - opt.close_mosaic && opt.augment.mosaic > 0 &&
        counters.step == epoch * nb) {
      open_loader(epoch, loader->state());
      if (lead)
        std::printf("epoch %lld: mosaic closed for the last %lld epochs\n", (long long)epoch + 1,
                    (long long)opt.close_mosaic);
    }
    const int64_t first = counters.step - epoch * nb;
    const int64_t last_i = std::min(nb, total_steps - epoch * nb);
    std::unique_ptr<ProgressBar> bar;
    if (opt.progress && lead)
      bar = std::make_unique<ProgressBar>("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(opt.epochs),
                                          last_i - first, "step");
    double sum[4] = {0, 0, 0, 0}, wait_s = 0, comm_total = 0, exposed_total = 0;
    int64_t steps_done = 0;
    const double t_epoch = now();
    for (int64_t i = first; i < last_i && !stop; ++i) {
      const int64_t ni = i + nb * epoch;
      inject_fault(w.rank, ni);
      const double t_step = now();
      StepHyper hyper = schedule_at(sched, ni, epoch, nb, opt.epochs);
      const bool update = ni - counters.last_opt >= accumulate_at(sched, ni, nb);
      const bool communicate = update && w.size > 1;
      double step_wait = 0, local[5] = {0, 0, 0, 0, 0};
      for (int j = 0; j < k; ++j) {
        const bool last = j == k - 1;
        model.zero_grads(s);
        double t0 = now();
        const data::Batch* batch = loader->next();
        step_wait += loader->stats().last_wait_s;
        batch->wait(s);
        copy(batch->images, model.input());
        if (average_bn) {
          // Every micro-batch updates the running statistics from the step's starting point.
          if (j == 0) {
            copy(model.bn_stats(), bn_start);
            zero(bn_sum, s);
          } else {
            copy(bn_start, model.bn_stats());
          }
        }
        double t1 = mark(ni);
        trace.add("data", Trace::kStep, t0, t1, ni);
        model.forward(true, s);
        if (average_bn) {
          add_backward(model.bn_stats(), &bn_sum, nullptr, s);
          if (last) {
            copy(bn_sum, model.bn_stats());
            if (w.size > 1) communicator->start_allreduce(model.bn_stats(), s, "bn stats", ni);
          }
        }
        detect_loss(loss_cfg, model.outputs(), batch->targets, model.output_grads(), loss, loss_work, s);
        t0 = mark(ni);
        trace.add("forward", Trace::kStep, t1, t0, ni);
        if (communicate && last) buckets.begin(ni);
        model.backward(s, [&](int64_t offset, int64_t count) {
          const Tensor g = comm::slice(model.grads(), offset, count), acc = comm::slice(gsum, offset, count);
          add_backward(g, &acc, nullptr, s);
          if (communicate && last) buckets.ready(offset + count, s);
        });
        t1 = mark(ni);
        trace.add("backward", Trace::kStep, t0, t1, ni);
        const Tensor l = loss.to(Device::kCPU);  // also the micro-step's sync point
        for (int q = 0; q < 4; ++q) local[q] += l.data<float>()[q];
      }
      if (communicate) buckets.finish(s);
      else if (average_bn && w.size > 1) communicator->wait_all(s);
      if (average_bn) scale(model.bn_stats(), 1.0 / double(int64_t(w.size) * k), s);

      if (update) {
        const double t0 = mark(ni);
        reduce_sum_squares(gsum, sumsq, red_ws, s);
        const float norm2 = sumsq.to(Device::kCPU).data<float>()[0];
        if (std::isfinite(norm2)) {
          hyper.step = ++counters.opt_steps;
          const GradClip clip{&sumsq, opt.max_norm, 1.0};
          if (sched.optimizer == OptimizerKind::kSGD)
            sgd_step(hyper, clip, model.params(), gsum, model.groups(), state0, s);
          else
            adamw_step(hyper, clip, model.params(), gsum, model.groups(), state0, state1, s);
          const double d = ema_decay(counters.opt_steps);
          ema_update(ema, model.params(), d, s);
          ema_update(ema_bn, model.bn_stats(), d, s);
          model.refresh_weights(s);
        } else {
          ++counters.skipped;
          if (lead)
            std::fprintf(stderr, "\nstep %lld: gradient norm is not finite; optimizer step skipped\n", (long long)ni);
        }
        zero(gsum, s);
        counters.last_opt = ni;
        trace.add("optimizer", Trace::kStep, t0, mark(ni), ni);
      }
      synchronize(s);
      counters.step = ni + 1;
      counters.loader = loader->state();

      // The step's numbers: losses averaged over ranks and micro-steps, times from this rank;
      // and whether any rank was asked to stop (all ranks then stop after this same step).
      double exposed = 0, comm_s = 0;
      for (const comm::CollectiveRecord& r : communicator->take_records(&exposed)) {
        comm_s += r.end_s - r.start_s;
        trace.add("all-reduce " + r.what, Trace::kComm, r.start_s, r.end_s, r.step);
      }
      local[4] = signals.raised() ? 1 : 0;
      comm::allreduce_sum(local, 5);
      stop = local[4] > 0;
      double lv[4];
      for (int q = 0; q < 4; ++q) lv[q] = local[q] / double(int64_t(w.size) * k);
      for (int q = 0; q < 4; ++q) sum[q] += lv[q];
      const double step_s = now() - t_step;
      wait_s += step_wait;
      comm_total += comm_s;
      exposed_total += exposed;
      ++steps_done;
      if (lead) {
        const double n = double(steps_done);
        char suffix[240];
        std::snprintf(suffix, sizeof(suffix), "box %.3f cls %.3f dfl %.3f  lr %.2g  %.0f img/s  data %.0f%%%s%s",
                      sum[1] / n, sum[2] / n, sum[3] / n, hyper.lr[0], opt.batch / step_s,
                      100.0 * wait_s / std::max(1e-9, now() - t_epoch),
                      w.size > 1 ? cat("  comm exposed ", int(100.0 * exposed_total / std::max(1e-9, comm_total)), "%")
                                       .c_str()
                                 : "",
                      dev == Device::kCUDA ? cat("  gpu mem ", cuda_memory_in_use() >> 20, " MiB").c_str() : "");
        if (bar) {
          bar->set_suffix(suffix);
          bar->update(i + 1 - first);
        }
        log->write({{"step", ni}, {"epoch", epoch}, {"loss", lv[0]}, {"box", lv[1]}, {"cls", lv[2]}, {"dfl", lv[3]},
                    {"lr", hyper.lr[0]}, {"images_per_s", opt.batch / step_s}, {"step_s", step_s},
                    {"data_wait_s", step_wait}, {"comm_s", comm_s}, {"exposed_comm_s", exposed},
                    {"compute_s", std::max(0.0, step_s - step_wait - exposed)}});
      }
      if (opt.save_every > 0 && counters.step % opt.save_every == 0 && counters.step < total_steps && !stop)
        save(std::nan(""), {}, {{"step", counters.step}});
    }
    if (bar) bar->finish();
    const double epoch_s = now() - t_epoch;
    const int64_t ns = std::max<int64_t>(1, steps_done);
    if (lead)
      std::printf("epoch %lld/%lld: box %.3f cls %.3f dfl %.3f  %.1f img/s  data-wait %.1f%%%s  (%.1f s)\n",
                  (long long)epoch + 1, (long long)opt.epochs, sum[1] / ns, sum[2] / ns, sum[3] / ns,
                  steps_done * opt.batch / epoch_s, 100.0 * wait_s / std::max(1e-9, epoch_s),
                  w.size > 1 ? cat("  comm ", int(comm_total * 1e3), " ms, exposed ", int(exposed_total * 1e3), " ms")
                                   .c_str()
                             : "",
                  epoch_s);
    if (counters.step != (epoch + 1) * nb) break;  // stopped inside the epoch: the final save below

    // The epoch's end: validation (rank 0), last.h5 and best.h5, a checkpoint.
    nlohmann::json metrics = {{"epoch", epoch + 1},
                              {"box", sum[1] / ns}, {"cls", sum[2] / ns}, {"dfl", sum[3] / ns},
                              {"data_wait", wait_s / std::max(1e-9, epoch_s)},
                              {"comm_s", comm_total}, {"exposed_comm_s", exposed_total},
                              {"skipped_steps", counters.skipped}, {"world_size", w.size}};
    double fit = std::nan("");
    std::vector<std::string> copies = {opt.out + "/last.h5"};
    if (validator) {
      copy(ema, val_model->params());
      copy(ema_bn, val_model->bn_stats());
      val_model->refresh_weights();
      const ValidationResult v = validator->run(opt.progress);
      fit = fitness(v.map);
      metrics["val"] = {{"map", v.map.map}, {"map50", v.map.map50}, {"map75", v.map.map75}, {"seconds", v.seconds}};
      std::printf("  val: mAP@.5:.95 %.4f  mAP@.5 %.4f  mAP@.75 %.4f  (%lld images, %.1f s)\n", v.map.map,
                  v.map.map50, v.map.map75, (long long)v.map.num_images, v.seconds);
    }
    if (lead) {
      if (!(fit <= counters.best_fitness)) {  // better, or the first epoch, or no validation
        counters.best_fitness = std::isnan(fit) ? counters.best_fitness : fit;
        copies.push_back(opt.out + "/best.h5");
      }
      log->write(metrics);
    }
    save(fit, copies, metrics);
    // The other ranks wait (outside the watchdog) while rank 0 validates.
    comm::barrier();
  }
  if (saved_at != counters.step) save(std::nan(""), {opt.out + "/last.h5"}, {{"step", counters.step}});
  if (checkpointer) checkpointer->finish();
  trace.write();
  if (lead) {
    double mean = 0, worst = 0;
    for (double x : stalls) mean += x / stalls.size(), worst = std::max(worst, x);
    std::printf("checkpoints: %zu written to %s/checkpoints (latest: %s); training stalled %.1f ms per save on "
                "average, %.1f ms at most, while the writer took %.1f ms on average, %.1f ms at most\n",
                stalls.size(), opt.out.c_str(), store->latest().c_str(), mean * 1e3, worst * 1e3,
                checkpointer->mean_write_s() * 1e3, checkpointer->max_write_s() * 1e3);
    if (stop)
      std::printf("stopped by %s after step %lld; continue with --resume auto\n", signals.name(),
                  (long long)counters.step);
    else
      std::printf("done: %lld steps in %s; weights in %s/{last,best}.h5, metrics in %s/metrics.jsonl\n",
                  (long long)counters.step, human_duration(now() - t_run).c_str(), opt.out.c_str(), opt.out.c_str());
  }
  return 0;
}

}  // namespace vt
