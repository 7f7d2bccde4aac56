// The training loop (see train.h).
#include "trainer/train.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "layers/check.h"
#include "layers/detect_loss.h"
#include "layers/memory_plan.h"
#include "layers/model.h"
#include "layers/reduce.h"
#include "optim/update.h"
#include "trainer/progress.h"
#include "trainer/run_state.h"
#include "trainer/validate.h"

namespace vt {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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

data::LoaderConfig train_loader_config(const TrainOptions& opt, Device dev) {
  data::LoaderConfig cfg;
  cfg.dir = opt.data + "/train";
  cfg.global_batch = opt.batch;
  cfg.seed = opt.seed;
  cfg.threads = opt.threads;
  cfg.augment = opt.augment;
  cfg.augment.imgsz = static_cast<int>(opt.imgsz);
  cfg.augment.train = true;
  cfg.max_boxes = opt.max_boxes;
  cfg.device = dev;
  return cfg;
}

double fitness(const MapResult& m) { return 0.1 * std::max(0.0, m.map50) + 0.9 * std::max(0.0, m.map); }

}  // namespace

int run_training(TrainOptions opt) {
  VT_CHECK(!opt.data.empty(), "train: --data is required (a folder with train/ and val/ datasets)");
  VT_CHECK(opt.epochs >= 1 && opt.batch >= 1, "train: --epochs and --batch must be >= 1");
  const Device dev = pick_device(opt.device);
  const DType dt = pick_dtype(opt.precision, dev);
  std::filesystem::create_directories(opt.out);

  // Data first: a bad dataset fails before anything else is built.
  auto loader = std::make_unique<data::Loader>(train_loader_config(opt, dev));
  const std::vector<std::string> names = loader->dataset().class_names();
  const int nc = static_cast<int>(names.size());
  const int64_t nb = loader->num_batches();

  RunInfo info;
  info.model_path = opt.model;
  {
    std::ifstream f(opt.model);
    VT_CHECK(f.good(), "train: cannot read the model spec ", opt.model);
    info.model_yaml.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  info.class_names = names;
  info.imgsz = opt.imgsz;
  const ModelSpec spec = parse_model_spec(info.model_yaml, opt.model, nc);
  Model model(spec, {dev, dt, opt.batch, opt.imgsz, opt.seed});
  std::unique_ptr<Model> val_model;
  std::unique_ptr<Validator> validator;
  if (opt.val) {
    val_model = std::make_unique<Model>(spec, ModelOptions{dev, dt, opt.batch, opt.imgsz, opt.seed});
    validator = std::make_unique<Validator>(*val_model, opt.data + "/val", opt.threads);
  }

  // Schedule and optimizer, as Ultralytics resolves them.
  ScheduleConfig sched = opt.schedule;
  sched.batch = opt.batch;
  if (opt.optimizer == "auto") {
    sched = resolve_auto_optimizer(sched, loader->dataset().size(), opt.epochs, nc);
  } else {
    VT_CHECK(opt.optimizer == "sgd" || opt.optimizer == "adamw", "--optimizer must be auto, sgd or adamw");
    sched.optimizer = opt.optimizer == "sgd" ? OptimizerKind::kSGD : OptimizerKind::kAdamW;
  }

  // Everything else the step needs, planned once.
  const int64_t p = model.flat_size();
  DetectLossConfig loss_cfg;
  loss_cfg.nc = nc;
  loss_cfg.reg_max = model.reg_max();
  loss_cfg.strides = model.strides();
  loss_cfg.imgsz = static_cast<int>(opt.imgsz);
  MemoryPlan plan(dev);
  const size_t loss_ws = detect_loss_workspace_bytes(loss_cfg, opt.batch, opt.max_boxes, dt, dev);
  const BufferId id_loss = plan.request("loss", {4}, DType::kF32);
  const BufferId id_loss_ws = plan.request("loss.workspace", {static_cast<int64_t>(loss_ws / 4 + 1)}, DType::kF32);
  const BufferId id_sumsq = plan.request("grad.sumsq", {1}, DType::kF32);
  const BufferId id_red_ws = plan.request("reduce.workspace", {std::max<int64_t>(1, reduce_workspace_elems(p, dev))},
                                          DType::kF32);
  const BufferId id_state0 = plan.request("optim.state0", {p}, DType::kF32);
  const BufferId id_state1 = plan.request("optim.state1", {sched.optimizer == OptimizerKind::kAdamW ? p : 1},
                                          DType::kF32);
  const BufferId id_ema = plan.request("ema.params", {p}, DType::kF32);
  const BufferId id_ema_bn = plan.request("ema.bn_stats", {model.bn_stats().numel()}, DType::kF32);
  plan.allocate();
  const Tensor loss = plan.get(id_loss), loss_work = plan.get(id_loss_ws), sumsq = plan.get(id_sumsq);
  const Tensor red_ws = dev == Device::kCUDA ? plan.get(id_red_ws) : Tensor{};
  const Tensor state0 = plan.get(id_state0), state1 = plan.get(id_state1);
  const Tensor ema = plan.get(id_ema), ema_bn = plan.get(id_ema_bn);
  copy(model.params(), ema);
  copy(model.bn_stats(), ema_bn);

  std::printf("train: %s, %lld images in %lld steps of %lld per epoch, %lld epochs, %s %s, optimizer %s lr0 %g\n",
              opt.model.c_str(), (long long)loader->dataset().size(), (long long)nb, (long long)opt.batch,
              (long long)opt.epochs, device_name(dev), dtype_name(dt), optimizer_name(sched.optimizer), sched.lr0);
  std::printf("model: %lld parameters, %d classes, memory %.1f MiB (+ %.1f MiB for the step)\n",
              (long long)model.num_params(), nc, model.memory().total_bytes() / 1048576.0,
              plan.total_bytes() / 1048576.0);

  MetricsLog log(opt.out + "/metrics.jsonl");
  int64_t opt_steps = 0, last_opt = -1, skipped = 0;
  double best = -1;
  bool zero_all = true;
  const auto t_run = Clock::now();
  for (int64_t epoch = 0; epoch < opt.epochs; ++epoch) {
    if (opt.close_mosaic > 0 && epoch == opt.epochs - opt.close_mosaic && opt.augment.mosaic > 0) {
      const data::LoaderState at = loader->state();
      data::LoaderConfig cfg = train_loader_config(opt, dev);
      cfg.augment.mosaic = 0;
      cfg.verify = data::Verify::kStructure;  // verified at start
      loader.reset();
      loader = std::make_unique<data::Loader>(cfg, at);
      std::printf("epoch %lld: mosaic closed for the last %lld epochs\n", (long long)epoch + 1,
                  (long long)opt.close_mosaic);
    }
    std::unique_ptr<ProgressBar> bar;
    if (opt.progress)
      bar = std::make_unique<ProgressBar>("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(opt.epochs), nb,
                                          "step");
    double sum[4] = {0, 0, 0, 0}, wait_s = 0;
    const auto t_epoch = Clock::now();
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t ni = i + nb * epoch;
      const auto t_step = Clock::now();
      if (zero_all) model.zero_grads();
      else model.zero_activation_grads();
      const data::Batch* batch = loader->next();
      wait_s += loader->stats().last_wait_s;
      batch->wait({});
      copy(batch->images, model.input());
      model.forward(true);
      detect_loss(loss_cfg, model.outputs(), batch->targets, model.output_grads(), loss, loss_work);
      model.backward();

      StepHyper hyper = schedule_at(sched, ni, epoch, nb, opt.epochs);
      zero_all = ni - last_opt >= accumulate_at(sched, ni, nb);
      if (zero_all) {
        reduce_sum_squares(model.grads(), sumsq, red_ws);
        const float norm2 = sumsq.to(Device::kCPU).data<float>()[0];
        if (std::isfinite(norm2)) {
          hyper.step = ++opt_steps;
          const GradClip clip{&sumsq, opt.max_norm, 1.0};
          if (sched.optimizer == OptimizerKind::kSGD)
            sgd_step(hyper, clip, model.params(), model.grads(), model.groups(), state0);
          else
            adamw_step(hyper, clip, model.params(), model.grads(), model.groups(), state0, state1);
          const double d = ema_decay(opt_steps);
          ema_update(ema, model.params(), d);
          ema_update(ema_bn, model.bn_stats(), d);
          model.refresh_weights();
        } else {
          ++skipped;
          std::fprintf(stderr, "\nstep %lld: gradient norm is not finite; optimizer step skipped\n", (long long)ni);
        }
        last_opt = ni;
      }
      const Tensor l = loss.to(Device::kCPU);  // also the step's sync point
      const float* lv = l.data<float>();
      for (int k = 0; k < 4; ++k) sum[k] += lv[k];
      const double step_s = since(t_step);
      const double n = double(i + 1);
      char suffix[200];
      std::snprintf(suffix, sizeof(suffix), "box %.3f cls %.3f dfl %.3f  lr %.2g  %.0f img/s  data %.0f%%",
                    sum[1] / n, sum[2] / n, sum[3] / n, hyper.lr[0], opt.batch / step_s,
                    100.0 * wait_s / std::max(1e-9, since(t_epoch)));
      if (bar) {
        bar->set_suffix(suffix);
        bar->update(i + 1);
      }
      log.write({{"step", ni}, {"epoch", epoch}, {"loss", lv[0]}, {"box", lv[1]}, {"cls", lv[2]}, {"dfl", lv[3]},
                 {"lr", hyper.lr[0]}, {"images_per_s", opt.batch / step_s},
                 {"data_wait_s", loader->stats().last_wait_s}, {"step_s", step_s}});
    }
    if (bar) bar->finish();
    std::printf("epoch %lld/%lld: box %.3f cls %.3f dfl %.3f  %.1f img/s  data-wait %.1f%%  (%.1f s)\n",
                (long long)epoch + 1, (long long)opt.epochs, sum[1] / nb, sum[2] / nb, sum[3] / nb,
                nb * opt.batch / since(t_epoch), 100.0 * wait_s / std::max(1e-9, since(t_epoch)), since(t_epoch));

    info.epoch = epoch + 1;
    info.step = (epoch + 1) * nb;
    nlohmann::json metrics = {{"epoch", epoch + 1},
                              {"box", sum[1] / nb}, {"cls", sum[2] / nb}, {"dfl", sum[3] / nb},
                              {"data_wait", wait_s / std::max(1e-9, since(t_epoch))},
                              {"skipped_steps", skipped}};
    double fit = -1;
    if (validator) {
      copy(ema, val_model->params());
      copy(ema_bn, val_model->bn_stats());
      val_model->refresh_weights();
      const ValidationResult v = validator->run(opt.progress);
      fit = fitness(v.map);
      metrics["val"] = {{"map", v.map.map}, {"map50", v.map.map50}, {"map75", v.map.map75}, {"seconds", v.seconds}};
      std::printf("  val: mAP@.5:.95 %.4f  mAP@.5 %.4f  mAP@.75 %.4f  (%lld images, %.1f s)\n", v.map.map,
                  v.map.map50, v.map.map75, (long long)v.map.num_images, v.seconds);
      log.write(metrics);
    }
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
  std::printf("done: %lld epochs in %s; weights in %s/{last,best}.h5, metrics in %s/metrics.jsonl\n",
              (long long)opt.epochs, human_duration(since(t_run)).c_str(), opt.out.c_str(), opt.out.c_str());
  return 0;
}

}  // namespace vt
