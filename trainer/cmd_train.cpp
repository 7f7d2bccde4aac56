// `visiontrain train`: options -> TrainOptions -> run_training. Under mpirun or srun every
// rank runs this with the same options.
#include <cxxopts.hpp>
#include <iostream>

#include "layers/model.h"
#include "trainer/commands.h"
#include "trainer/train.h"

namespace vt {

int cmd_train(int argc, char** argv) {
  TrainOptions d;  // defaults shown in --help
  cxxopts::Options opts(argv[0],
                        "Train a detector on HDF5 shards (visiontrain convert/synth make them). Writes "
                        "metrics.jsonl, last.h5 and best.h5 to --out; validates every epoch with COCO mAP.\n"
                        "Data-parallel: mpirun -np N visiontrain train ... (one rank per GPU; --batch is global).");
  // clang-format off
  opts.add_options()
    ("data", "dataset root with train/ and val/ (e.g. from visiontrain synth --out)", cxxopts::value<std::string>())
    ("model", "model spec (Ultralytics-style YAML)", cxxopts::value<std::string>()->default_value(d.model))
    ("out", "run directory", cxxopts::value<std::string>()->default_value(d.out))
    ("epochs", "epochs", cxxopts::value<int64_t>()->default_value(std::to_string(d.epochs)))
    ("steps", "stop after this many steps (0: all epochs)", cxxopts::value<int64_t>()->default_value("0"))
    ("batch", "images per step, all ranks together", cxxopts::value<int64_t>()->default_value(std::to_string(d.batch)))
    ("accumulate", "micro-steps per step and rank (batch / (ranks x accumulate) images each)", cxxopts::value<int>()->default_value("1"))
    ("nbs", "nominal batch: the optimizer steps every max(round(nbs / batch), 1) steps", cxxopts::value<int64_t>()->default_value(std::to_string(d.schedule.nbs)))
    ("imgsz", "training image size (a multiple of 32)", cxxopts::value<int64_t>()->default_value(std::to_string(d.imgsz)))
    ("workers", "loader threads (0: one per hardware thread)", cxxopts::value<int>()->default_value("0"))
    ("seed", "seed of the weights, the sample order and every augmentation draw", cxxopts::value<uint64_t>()->default_value("0"))
    ("device", "auto, cpu or cuda", cxxopts::value<std::string>()->default_value(d.device))
    ("precision", "auto (bf16 on the GPU, fp32 on the CPU), fp32 or bf16", cxxopts::value<std::string>()->default_value(d.precision))
    ("optimizer", "auto (Ultralytics' rule), sgd or adamw", cxxopts::value<std::string>()->default_value(d.optimizer))
    ("lr0", "initial learning rate (ignored by --optimizer auto)", cxxopts::value<double>()->default_value(std::to_string(d.schedule.lr0)))
    ("lrf", "final learning rate as a fraction of lr0", cxxopts::value<double>()->default_value(std::to_string(d.schedule.lrf)))
    ("momentum", "SGD momentum / AdamW beta1", cxxopts::value<double>()->default_value(std::to_string(d.schedule.momentum)))
    ("weight-decay", "weight decay (scaled by batch / 64 as Ultralytics does)", cxxopts::value<double>()->default_value(std::to_string(d.schedule.weight_decay)))
    ("warmup-epochs", "warmup length in epochs (at least 100 steps)", cxxopts::value<double>()->default_value(std::to_string(d.schedule.warmup_epochs)))
    ("cos-lr", "cosine learning-rate decay instead of linear")
    ("close-mosaic", "last epochs trained without mosaic", cxxopts::value<int64_t>()->default_value(std::to_string(d.close_mosaic)))
    ("mosaic", "mosaic probability", cxxopts::value<float>()->default_value(std::to_string(d.augment.mosaic)))
    ("scale", "random zoom range +-", cxxopts::value<float>()->default_value(std::to_string(d.augment.scale)))
    ("translate", "random shift range +- (fraction of the image)", cxxopts::value<float>()->default_value(std::to_string(d.augment.translate)))
    ("fliplr", "horizontal flip probability", cxxopts::value<float>()->default_value(std::to_string(d.augment.fliplr)))
    ("max-norm", "clip gradients to this global norm", cxxopts::value<double>()->default_value(std::to_string(d.max_norm)))
    ("no-val", "skip validation")
    ("comm", "gradient all-reduce backend: auto (nccl on GPUs when built, else mpi), nccl or mpi", cxxopts::value<std::string>()->default_value(d.comm))
    ("bucket-mb", "gradient bucket size, MB", cxxopts::value<double>()->default_value("25"))
    ("first-bucket-mb", "size of the first (earliest-ready) bucket, MB", cxxopts::value<double>()->default_value("1"))
    ("comm-timeout", "seconds a collective may take before the watchdog aborts the job (0: never)", cxxopts::value<double>()->default_value("300"))
    ("cuda-graph", "replay each training step (forward, loss, backward, optimizer, EMA) as CUDA graphs "
                   "(GPU, no --trace; with several ranks backward and the all-reduces stay eager)")
    ("disable", "model speed features to turn off, comma-separated: fusion, concat-in-place, conv-stats, "
                "overwrite-grads (to bisect a GPU problem, or measure what each buys)", cxxopts::value<std::string>()->default_value(""))
    ("trace", "write a Chrome trace (Perfetto) of the first --trace-steps steps of every rank", cxxopts::value<std::string>())
    ("trace-steps", "steps to trace", cxxopts::value<int64_t>()->default_value("20"))
    ("resume", "continue a run: auto (the newest checkpoint of --out that verifies) or a checkpoint file", cxxopts::value<std::string>())
    ("overwrite", "start over in an --out that holds a previous run (its checkpoints, metrics.jsonl, last.h5 and best.h5 are deleted first); without it such an --out stops the run")
    ("save-every", "also checkpoint every N steps (0: at epoch ends and on exit only)", cxxopts::value<int64_t>()->default_value("0"))
    ("keep", "checkpoints kept: the last N (plus the best and the milestones)", cxxopts::value<int>()->default_value("3"))
    ("milestone-every", "also keep every checkpoint of a step that is a multiple of N (0: none)", cxxopts::value<int64_t>()->default_value("0"))
    ("no-keep-best", "do not keep the best checkpoint by validation fitness beyond the last --keep")
    ("quiet", "no progress bars")
    ("h,help", "show this help");
  // clang-format on
  const auto a = opts.parse(argc, argv);
  if (a.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  TrainOptions o;
  o.data = a.count("data") ? a["data"].as<std::string>() : "";
  o.model = a["model"].as<std::string>();
  o.out = a["out"].as<std::string>();
  o.epochs = a["epochs"].as<int64_t>();
  o.steps = a["steps"].as<int64_t>();
  o.batch = a["batch"].as<int64_t>();
  o.accumulate = a["accumulate"].as<int>();
  o.schedule.nbs = a["nbs"].as<int64_t>();
  o.imgsz = a["imgsz"].as<int64_t>();
  o.threads = a["workers"].as<int>();
  o.seed = a["seed"].as<uint64_t>();
  o.device = a["device"].as<std::string>();
  o.precision = a["precision"].as<std::string>();
  o.optimizer = a["optimizer"].as<std::string>();
  o.schedule.lr0 = a["lr0"].as<double>();
  o.schedule.lrf = a["lrf"].as<double>();
  o.schedule.momentum = a["momentum"].as<double>();
  o.schedule.weight_decay = a["weight-decay"].as<double>();
  o.schedule.warmup_epochs = a["warmup-epochs"].as<double>();
  o.schedule.cos_lr = a.count("cos-lr") > 0;
  o.close_mosaic = a["close-mosaic"].as<int64_t>();
  o.augment.mosaic = a["mosaic"].as<float>();
  o.augment.scale = a["scale"].as<float>();
  o.augment.translate = a["translate"].as<float>();
  o.augment.fliplr = a["fliplr"].as<float>();
  o.max_norm = a["max-norm"].as<double>();
  o.val = a.count("no-val") == 0;
  o.progress = a.count("quiet") == 0;
  o.comm = a["comm"].as<std::string>();
  o.bucket_mb = a["bucket-mb"].as<double>();
  o.first_bucket_mb = a["first-bucket-mb"].as<double>();
  o.comm_timeout = a["comm-timeout"].as<double>();
  o.cuda_graph = a.count("cuda-graph") > 0;
  o.disable = a["disable"].as<std::string>();
  ModelOptions check;
  disable_features(check, o.disable);  // an unknown name fails here, before any data is read
  o.trace = a.count("trace") ? a["trace"].as<std::string>() : "";
  o.trace_steps = a["trace-steps"].as<int64_t>();
  o.resume = a.count("resume") ? a["resume"].as<std::string>() : "";
  o.overwrite = a.count("overwrite") > 0;
  VT_CHECK(!o.overwrite || o.resume.empty(),
           "train: --overwrite starts over, --resume continues: give one of them");
  o.save_every = a["save-every"].as<int64_t>();
  o.retention.keep_last = a["keep"].as<int>();
  o.retention.milestone_every = a["milestone-every"].as<int64_t>();
  o.retention.keep_best = a.count("no-keep-best") == 0;
  return run_training(o);
}

}  // namespace vt
