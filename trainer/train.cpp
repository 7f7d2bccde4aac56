// The training loop (see train.h).
#include "trainer/train.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
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
  const Tensor gsum = plan.get(id_gsum), bn_start = plan.get(id_bn_start), bn_sum = plan.get(id_bn_sum);
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
  {
    comm::Watchdog::Scope scope(&watchdog, "the broadcast of rank 0's weights", 0);
    communicator->broadcast(model.params(), 0);
    communicator->broadcast(model.bn_stats(), 0);
    model.refresh_weights();
  }
  copy(model.params(), ema);
  copy(model.bn_stats(), ema_bn);
  zero(gsum);

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
  if (lead) log = std::make_unique<MetricsLog>(opt.out + "/metrics.jsonl");
  Trace trace(opt.trace, opt.trace_steps);
  const Stream s{};
  int64_t opt_steps = 0, last_opt = -1, skipped = 0, done_steps = 0;
  double best = -1;
  const double t_run = now();
  const int64_t total_steps = opt.steps > 0 ? std::min(opt.steps, nb * opt.epochs) : nb * opt.epochs;
  // Host timestamps of a traced phase are only meaningful once the GPU has caught up.
  auto mark = [&](int64_t step) {
    if (trace.on(step) && dev == Device::kCUDA) synchronize(s);
    return now();
  };

  for (int64_t epoch = 0; epoch < opt.epochs && done_steps < total_steps; ++epoch) {
    if (opt.close_mosaic > 0 && epoch == opt.epochs - opt.close_mosaic && opt.augment.mosaic > 0) {
      const data::LoaderState at = loader->state();
      data::LoaderConfig cfg = train_loader_config(opt, dev, w);
      cfg.augment.mosaic = 0;
      cfg.verify = data::Verify::kStructure;  // verified at start
      loader.reset();
      loader = std::make_unique<data::Loader>(cfg, at);
      if (lead)
        std::printf("epoch %lld: mosaic closed for the last %lld epochs\n", (long long)epoch + 1,
                    (long long)opt.close_mosaic);
    }
    const int64_t steps_this_epoch = std::min(nb, total_steps - done_steps);
    std::unique_ptr<ProgressBar> bar;
    if (opt.progress && lead)
      bar = std::make_unique<ProgressBar>("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(opt.epochs),
                                          steps_this_epoch, "step");
    double sum[4] = {0, 0, 0, 0}, wait_s = 0, comm_total = 0, exposed_total = 0;
    const double t_epoch = now();
    for (int64_t i = 0; i < steps_this_epoch; ++i) {
      const int64_t ni = i + nb * epoch;
      inject_fault(w.rank, ni);
      const double t_step = now();
      StepHyper hyper = schedule_at(sched, ni, epoch, nb, opt.epochs);
      const bool update = ni - last_opt >= accumulate_at(sched, ni, nb);
      const bool communicate = update && w.size > 1;
      double step_wait = 0, local_loss[4] = {0, 0, 0, 0};
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
        for (int q = 0; q < 4; ++q) local_loss[q] += l.data<float>()[q];
      }
      if (communicate) buckets.finish(s);
      else if (average_bn && w.size > 1) communicator->wait_all(s);
      if (average_bn) scale(model.bn_stats(), 1.0 / double(int64_t(w.size) * k), s);

      if (update) {
        const double t0 = mark(ni);
        reduce_sum_squares(gsum, sumsq, red_ws, s);
        const float norm2 = sumsq.to(Device::kCPU).data<float>()[0];
        if (std::isfinite(norm2)) {
          hyper.step = ++opt_steps;
          const GradClip clip{&sumsq, opt.max_norm, 1.0};
          if (sched.optimizer == OptimizerKind::kSGD)
            sgd_step(hyper, clip, model.params(), gsum, model.groups(), state0, s);
          else
            adamw_step(hyper, clip, model.params(), gsum, model.groups(), state0, state1, s);
          const double d = ema_decay(opt_steps);
          ema_update(ema, model.params(), d, s);
          ema_update(ema_bn, model.bn_stats(), d, s);
          model.refresh_weights(s);
        } else {
          ++skipped;
          if (lead)
            std::fprintf(stderr, "\nstep %lld: gradient norm is not finite; optimizer step skipped\n", (long long)ni);
        }
        zero(gsum, s);
        last_opt = ni;
        trace.add("optimizer", Trace::kStep, t0, mark(ni), ni);
      }
      synchronize(s);

      // The step's numbers: losses averaged over ranks and micro-steps, times from this rank.
      double exposed = 0, comm_s = 0;
      for (const comm::CollectiveRecord& r : communicator->take_records(&exposed)) {
        comm_s += r.end_s - r.start_s;
        trace.add("all-reduce " + r.what, Trace::kComm, r.start_s, r.end_s, r.step);
      }
      comm::allreduce_sum(local_loss, 4);
      double lv[4];
      for (int q = 0; q < 4; ++q) lv[q] = local_loss[q] / double(int64_t(w.size) * k);
      for (int q = 0; q < 4; ++q) sum[q] += lv[q];
      const double step_s = now() - t_step;
      wait_s += step_wait;
      comm_total += comm_s;
      exposed_total += exposed;
      ++done_steps;
      if (!lead) continue;
      const double n = double(i + 1);
      char suffix[240];
      std::snprintf(suffix, sizeof(suffix), "box %.3f cls %.3f dfl %.3f  lr %.2g  %.0f img/s  data %.0f%%%s",
                    sum[1] / n, sum[2] / n, sum[3] / n, hyper.lr[0], opt.batch / step_s,
                    100.0 * wait_s / std::max(1e-9, now() - t_epoch),
                    w.size > 1 ? cat("  comm exposed ", int(100.0 * exposed_total / std::max(1e-9, comm_total)), "%")
                                     .c_str()
                               : "");
      if (bar) {
        bar->set_suffix(suffix);
        bar->update(i + 1);
      }
      log->write({{"step", ni}, {"epoch", epoch}, {"loss", lv[0]}, {"box", lv[1]}, {"cls", lv[2]}, {"dfl", lv[3]},
                  {"lr", hyper.lr[0]}, {"images_per_s", opt.batch / step_s}, {"step_s", step_s},
                  {"data_wait_s", step_wait}, {"comm_s", comm_s}, {"exposed_comm_s", exposed},
                  {"compute_s", std::max(0.0, step_s - step_wait - exposed)}});
    }
    if (bar) bar->finish();
    const double epoch_s = now() - t_epoch;
    const int64_t ns = std::max<int64_t>(1, steps_this_epoch);
    if (lead)
      std::printf("epoch %lld/%lld: box %.3f cls %.3f dfl %.3f  %.1f img/s  data-wait %.1f%%%s  (%.1f s)\n",
                  (long long)epoch + 1, (long long)opt.epochs, sum[1] / ns, sum[2] / ns, sum[3] / ns,
                  steps_this_epoch * opt.batch / epoch_s, 100.0 * wait_s / std::max(1e-9, epoch_s),
                  w.size > 1 ? cat("  comm ", comm_total, " s, exposed ", exposed_total, " s").c_str() : "", epoch_s);

    const bool epoch_done = steps_this_epoch == nb;
    info.epoch = epoch + (epoch_done ? 1 : 0);
    info.step = done_steps;
    nlohmann::json metrics = {{"epoch", epoch + 1},
                              {"box", sum[1] / ns}, {"cls", sum[2] / ns}, {"dfl", sum[3] / ns},
                              {"data_wait", wait_s / std::max(1e-9, epoch_s)},
                              {"comm_s", comm_total}, {"exposed_comm_s", exposed_total},
                              {"skipped_steps", skipped}, {"world_size", w.size}};
    if (lead) {
      double fit = -1;
      if (validator && epoch_done) {
        copy(ema, val_model->params());
        copy(ema_bn, val_model->bn_stats());
        val_model->refresh_weights();
        const ValidationResult v = validator->run(opt.progress);
        fit = fitness(v.map);
        metrics["val"] = {{"map", v.map.map}, {"map50", v.map.map50}, {"map75", v.map.map75}, {"seconds", v.seconds}};
        std::printf("  val: mAP@.5:.95 %.4f  mAP@.5 %.4f  mAP@.75 %.4f  (%lld images, %.1f s)\n", v.map.map,
                    v.map.map50, v.map.map75, (long long)v.map.num_images, v.seconds);
      }
      log->write(metrics);
      info.metrics_json = metrics.dump();
      ckpt::Checkpoint c;
      put_info(c, info);
      put_named(c, "model", model, model.state());
      put_named(c, "ema", model, model.state_of(ema, ema_bn));
      c.save(opt.out + "/last.h5");
      if (fit > best) {
        best = fit;
        c.save(opt.out + "/best.h5");
      }
    }
    // The other ranks wait (outside the watchdog) while rank 0 validates and saves.
    comm::barrier();
  }
  trace.write();
  if (lead)
    std::printf("done: %lld steps in %s; weights in %s/{last,best}.h5, metrics in %s/metrics.jsonl\n",
                (long long)done_steps, human_duration(now() - t_run).c_str(), opt.out.c_str(), opt.out.c_str());
  return 0;
}

}  // namespace vt
