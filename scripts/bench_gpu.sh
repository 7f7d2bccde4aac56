#!/usr/bin/env bash
# The GPU evidence of issue 8 in one command, for a machine with a GPU (built elsewhere with
# a CUDA build folder, e.g. the recipe of ../shared/device/README.md):
#   1. every GPU parity test (layers, optim; GPU-vs-CPU, tensor-core convs included),
#      `visiontrain selftest` (a block of every op, CPU against each GPU), training as CUDA
#      graphs against eager training, bit for bit (tests/trainer/cuda_graph_train.sh), the
#      learning test trained on the GPU and that model's detections on the GPU against the
#      CPU's (tests/integration/learn_synth.sh, tests/trainer/detect_gpu_vs_cpu.sh);
#   2. bench/kernel_bench: conv kernels vs cuBLAS, memory-bound kernels vs copy bandwidth;
#      bench/step_profile: a yolov8n and a yolov8s step at batch 64, 640, op by op;
#   3. end to end, training images/s at 640, batch 64, bf16: visiontrain (synthetic raw
#      shards, no validation; eager and --cuda-graph) vs the PyTorch implementation of the same model
#      (bench/torch_train_bench.py, eager and torch.compile), for yolov8n and yolov8s.
# Everything is written to OUT_DIR (logs and JSON); the summary is printed at the end.
#   scripts/bench_gpu.sh BUILD_DIR OUT_DIR [PYTHON]      (PYTHON: one with torch, default python3)
# BUILD_DIR is a CUDA build folder or what scripts/stage_gpu_run.sh made of one (for machines
# that get a copied folder). The tests read configs/ under the source path the build was
# configured in; when that path is not this checkout, it is made a link to it.
#   PARTS="parity kernels"  (environment) runs only some of: parity kernels e2e ablation
#   (default: the first three), to fit a time limit per call;
#   4. ablation (only when asked for): yolov8n trained with each model speed feature turned
#      off in turn (train --disable), images/s against all of them on.
# Steps that fail are reported and the rest still runs; the exit code is the number of
# failed steps.
set -uo pipefail
build="$(cd "$1" && pwd)"
out="$(mkdir -p "$2" && cd "$2" && pwd)"
py="${3:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
src="$(cat "$build/source_dir.txt" 2>/dev/null || sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")"
if [ -n "$src" ] && [ ! -e "$src/configs" ]; then
  mkdir -p "$(dirname "$src")" && ln -sfn "$root" "$src" && echo "bench_gpu: linked $src -> $root (the build's source path)"
fi
failed=0
step() {  # step NAME LOG COMMAND...: runs it with its output in LOG, reports the outcome
  local name="$1" log="$2"
  shift 2
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    echo "== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "== $name: FAILED (exit $?, $((SECONDS - t0)) s; tail of $log:)"
    tail -15 "$log"
    failed=$((failed + 1))
  fi
}

parts="${PARTS:-parity kernels e2e}"
want() { [[ " $parts " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if want parity; then
  step "parity: layers" "$out/parity_layers.txt" "$build/tests/layers_tests" --gtest_brief=1
  step "parity: optim" "$out/parity_optim.txt" "$build/tests/optim_tests" --gtest_brief=1
  step "parity: selftest" "$out/parity_selftest.txt" "$build/visiontrain" selftest
  step "parity: cuda graph training" "$out/parity_cuda_graph.txt" tests/trainer/cuda_graph_train.sh \
    "$build/visiontrain" "$root"
  # The learning test on the GPU (mAP@.5 >= 0.7), then its model's detections against the CPU's.
  trained="$(mktemp -d /tmp/vt-trained-XXXXXX)"
  step "parity: learn_synth on the GPU" "$out/parity_learn.txt" tests/integration/learn_synth.sh \
    "$build/visiontrain" "$root" "$trained"
  step "parity: detections, GPU vs CPU" "$out/parity_detect.txt" tests/trainer/detect_gpu_vs_cpu.sh \
    "$build/visiontrain" "$trained" "$py"
  rm -rf "$trained"
  grep -hE "^\[  (PASSED|FAILED|SKIPPED)" "$out"/parity_*.txt
fi

if want kernels; then
  step "kernel_bench" "$out/kernel_bench.txt" "$build/bench/kernel_bench" --out "$out/kernel_bench.json"
  grep -E "all three passes|^\(b\)|GB/s|ratio|fusion|residual:|loads check" "$out/kernel_bench.txt" | head -40
  for model in yolov8n yolov8s; do
    step "step_profile $model" "$out/step_profile_$model.txt" "$build/bench/step_profile" \
      --model "configs/$model.yaml" --batch 64 --imgsz 640 --device cuda --out "$out/step_profile_$model.json"
    sed -n '1,20p' "$out/step_profile_$model.txt"
  done
fi

want e2e || want ablation || { echo "bench_gpu: $failed failed step(s); results in $out"; exit "$failed"; }
data="$(mktemp -d /tmp/vt-bench-XXXXXX)"
trap 'rm -rf "$data"' EXIT
step "synthetic raw shards at 640" "$out/synth.txt" "$build/visiontrain" synth --out "$data/synth" --train 1024 \
  --val 16 --imgsz 640 --store raw --quiet
# Ablation: what each feature buys, yolov8n eager (metrics_ablation_<feature>.jsonl; "none": all on).
if want ablation; then
  for feature in none fusion concat-in-place conv-stats overwrite-grads; do
    disable=()
    [ "$feature" = none ] || disable=(--disable "$feature")
    step "ablation: yolov8n without $feature" "$out/ablation_$feature.txt" "$build/visiontrain" train \
      --data "$data/synth" --model configs/yolov8n.yaml --out "$data/ablation_$feature" --batch 64 --imgsz 640 \
      --precision bf16 --steps 30 --no-val --quiet --device cuda "${disable[@]}"
    [ -f "$data/ablation_$feature/metrics.jsonl" ] &&
      cp "$data/ablation_$feature/metrics.jsonl" "$out/metrics_ablation_$feature.jsonl"
  done
  "$py" - "$out" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
def ips(feature):
    path = os.path.join(out, f"metrics_ablation_{feature}.jsonl")
    if not os.path.exists(path):
        return None
    rows = [json.loads(l) for l in open(path) if '"step_s"' in l]
    return statistics.median(r["images_per_s"] for r in rows if r["step"] >= 10)
base = ips("none")
for feature in ("fusion", "concat-in-place", "conv-stats", "overwrite-grads"):
    v = ips(feature)
    if base and v:
        print(f"ablation: yolov8n without {feature}: {v:.1f} images/s, all on {base:.1f} (it buys x{base / v:.3f})")
EOF
fi
want e2e || { echo "bench_gpu: $failed failed step(s); results in $out"; exit "$failed"; }
for model in yolov8n yolov8s; do
  for graph in "" --cuda-graph; do
    run="${model}${graph:+_graph}"
    step "visiontrain train $model $graph" "$out/train_$run.txt" "$build/visiontrain" train --data "$data/synth" \
      --model "configs/$model.yaml" --out "$data/run_$run" --batch 64 --imgsz 640 --precision bf16 --steps 40 \
      --no-val --quiet --device cuda $graph
    [ -f "$data/run_$run/metrics.jsonl" ] && cp "$data/run_$run/metrics.jsonl" "$out/metrics_$run.jsonl"
  done
  for mode in eager compile; do
    step "pytorch $model $mode" "$out/torch_${model}_$mode.txt" "$py" bench/torch_train_bench.py \
      --model "configs/$model.yaml" --batch 64 --imgsz 640 --mode "$mode" --out "$out/torch_${model}_$mode.json"
  done
done

# Summary: visiontrain's median images/s over steps 10.. against PyTorch's.
"$py" - "$out" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
for model in ("yolov8n", "yolov8s"):
  for run in (model, model + "_graph"):
    path = os.path.join(out, f"metrics_{run}.jsonl")
    if not os.path.exists(path):
        continue
    steps = [json.loads(l) for l in open(path) if '"step_s"' in l]
    rows = [s for s in steps if s["step"] >= 10]
    ips = statistics.median(s["images_per_s"] for s in rows)
    wait = sum(s["data_wait_s"] for s in rows) / sum(s["step_s"] for s in rows)
    line = f"{run}: visiontrain {ips:.1f} images/s (data-wait {100 * wait:.2f}%)"
    flops = None  # (forward GFLOPs per image, peak TFLOP/s), from the PyTorch run of the same model
    for mode in ("eager", "compile"):
        p = os.path.join(out, f"torch_{model}_{mode}.json")
        if os.path.exists(p):
            t = json.load(open(p))
            line += f"; pytorch {mode} {t['images_per_s']:.1f} (ours x{ips / t['images_per_s']:.2f})"
            flops = (t["forward_gflops_per_image"], t["peak_tflops"])
    if flops:
        tflops = 3 * flops[0] * ips / 1e3  # a training step: 3 x the forward
        line += f"; {flops[0]:.2f} GFLOPs/image forward, ours {tflops:.1f} TFLOP/s = {100 * tflops / flops[1]:.1f}% of peak {flops[1]:.0f}"
    print(line)
EOF
echo "bench_gpu: $failed failed step(s); results in $out"
exit "$failed"
