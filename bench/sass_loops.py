#!/usr/bin/env python3
"""Static instruction counts of kernels' main loops (no GPU needed).

Compiles a .cu file for one architecture (nvcc), disassembles it (cuobjdump -sass), and
counts the SASS instructions of each kernel's main loop, taken branches and not (rare paths
included, so an upper bound of what one iteration issues).

Tensor-core convolutions (the default, layers/conv2d_igemm.cu): for every igemm_kernel
instantiation, the innermost backward branch that encloses all its HMMA instructions, one K
step of one thread. A tile's step issues warps x count instructions for the HMMA column's
count a warp; the fewer the other instructions, the closer the warps get to keeping the
tensor cores busy. kernel is "forward", "dgrad" or "wgrad", tile "128x128", "128x64" or
"128x32", loads "async" (cp.async walks) or "registers".

Memory-bound kernels (--source layers/batchnorm.cu --match elementwise_kernel, say): the
largest loop of every function whose name contains the --match text, one grid-stride
iteration of one thread (for the packed elementwise kernels, one 16-byte pack: 8 bf16 or 4
f32 elements); those must stay few enough for the loads to run at the copy rate.

    python3 bench/sass_loops.py [--arch sm_90a] [--source layers/conv2d_igemm.cu] [--match TEXT]

cuobjdump comes with the CUDA toolkit; where the toolkit is trimmed (nvcc only), the
`nvidia-cuda-cuobjdump` wheel from PyPI has it (bin/cuobjdump: pass --cuobjdump PATH).
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def functions(sass):
    """(name, [(address, instruction text)]) per function of a cuobjdump -sass listing."""
    for chunk in re.split(r"\n\s*Function : ", sass)[1:]:
        name = chunk.split("\n", 1)[0].strip()
        code = []
        for line in chunk.split("\n"):
            m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
            if m:
                code.append((int(m.group(1), 16), m.group(2).strip()))
        yield name, code


def main_loop(code):
    """The instructions of the innermost loop around every HMMA, or None."""
    hmma = [a for a, t in code if "HMMA" in t]
    if not hmma:
        return None
    best = None
    for a, t in code:
        m = re.search(r"BRA\s+0x([0-9a-f]+)", t)
        if m:
            target = int(m.group(1), 16)
            if target <= hmma[0] and a >= hmma[-1] and (best is None or target > best[0]):
                best = (target, a)
    if best is None:
        return None
    return [t for a, t in code if best[0] <= a <= best[1]]


def largest_loop(code):
    """The instructions of the function's largest loop (backward branch), or None."""
    best = None
    for a, t in code:
        m = re.search(r"BRA\s+0x([0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a and (best is None or a - int(m.group(1), 16) > best[1] - best[0]):
            best = (int(m.group(1), 16), a)
    return None if best is None else [t for a, t in code if best[0] <= a <= best[1]]


def opcode(text):
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def describe(name):
    kernel = "forward" if "ConvFwd" in name else "dgrad" if "ConvDgrad" in name else "wgrad"
    tile = next(t for key, t in (("Li128ELi128E", "128x128"), ("Li128ELi64E", "128x64"),
                                 ("Li128ELi32E", "128x32")) if key in name)
    loads = "async" if name.endswith("Lb1EEEvT_i") else "registers"
    return kernel, tile, loads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--source", default=os.path.join(ROOT, "layers", "conv2d_igemm.cu"))
    ap.add_argument("--nvcc", default="nvcc")
    ap.add_argument("--cuobjdump", default="cuobjdump")
    ap.add_argument("--match", default="", help="count the largest loop of the functions whose names contain this")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "igemm.cubin")
        subprocess.run([args.nvcc, "-std=c++17", "-O3", "-I", ROOT, f"-arch={args.arch}",
                        "--expt-relaxed-constexpr", "-cubin", "-o", cubin, args.source], check=True)
        sass = subprocess.run([args.cuobjdump, "-sass", cubin], check=True, capture_output=True,
                              text=True).stdout
    if args.match:
        print(f"{args.source} for {args.arch}: static SASS of the largest loop of each '{args.match}' function")
        for name, code in functions(sass):
            if args.match not in name:
                continue
            loop = largest_loop(code)
            if loop is None:
                continue
            ops = collections.Counter(opcode(t) for t in loop)
            print(f"  {len(loop):5d}  (LDG {ops['LDG']}, STG {ops['STG']}, MUFU {ops['MUFU']}, CALL {ops['CALL']})  "
                  f"{name}")
        return
    rows = []
    for name, code in functions(sass):
        if "igemm_kernel" not in name:
            continue
        loop = main_loop(code)
        if loop is None:
            sys.exit(f"sass_loops: no main loop found in {name}")
        ops = collections.Counter(opcode(t) for t in loop)
        rows.append((*describe(name), len(loop), ops["HMMA"], ops["LDSM"], ops["LDGSTS"],
                     ops["LDG"], len(code)))
    print(f"{args.source} for {args.arch}: static SASS per main-loop iteration (one K step of 32, one thread)")
    print(f"  {'kernel':8} {'tile':7} {'loads':10} {'loop':>5} {'HMMA':>5} {'LDSM':>5} {'LDGSTS':>6} "
          f"{'LDG':>4} {'kernel':>7}")
    for r in sorted(rows):
        print(f"  {r[0]:8} {r[1]:7} {r[2]:10} {r[3]:5d} {r[4]:5d} {r[5]:5d} {r[6]:6d} {r[7]:4d} {r[8]:7d}")


if __name__ == "__main__":
    main()
