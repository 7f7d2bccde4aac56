#!/usr/bin/env python3
"""Rewrites CUDA sources for the CUDA emulator (tests/cuda_emu, see include/cuda_runtime.h).

    rewrite.py SRC_ROOT OUT_ROOT FILE...     (FILE relative to SRC_ROOT; written to OUT_ROOT)

Two constructs of the kernel language are not C++, and are rewritten, and one is amended:
  kernel<T><<<grid, block, smem, stream>>>(args)
      -> ::vt_emu::launch("kernel<T>", key, ::vt_emu::Config(grid, block, smem, stream),
                          [](auto... a) { kernel<T>(a...); }, args)
     (a generic lambda, so that template arguments the call deduces are still deduced; key is
     the kernel's address where the launch asks for dynamic shared memory, which
     cudaFuncSetAttribute may have raised, else null);
  extern __shared__ T name[];  ->  T* name = static_cast<T*>(::vt_emu::dynamic_shared());
  __shared__ T a[n], b;  (static variables here, include/cuda_runtime.h) is followed, on the
      same line, by calls that fill each with 0xff when the first thread of each block
      reaches it, as the dynamic shared memory is: a block never sees what the block before
      it left there.
Everything else is left to the emulator's headers. A launch the scanner cannot take apart
stops the build with the file and line.
"""
import os
import re
import sys


def fail(path, text, pos, why):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: cuda_emu rewrite: {why}")


def kernel_start(text, end, path):
    """Start of the kernel expression (name, optional template arguments) ending at end."""
    i = end
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":  # template arguments: back to the matching "<"
        depth = 0
        while i > 0:
            i -= 1
            c = text[i]
            if c == ">":
                depth += 1
            elif c == "<":
                depth -= 1
                if depth == 0:
                    break
        else:
            fail(path, text, end, "unbalanced template arguments before <<<")
        while i > 0 and text[i - 1].isspace():
            i -= 1
    j = i
    while j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_:"):
        j -= 1
    if j == i:
        fail(path, text, end, "no kernel name before <<<")
    return j


def matching_paren(text, open_pos, path):
    depth = 0
    for i in range(open_pos, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    fail(path, text, open_pos, "unbalanced launch arguments")


def rewrite_launches(text, path):
    out, pos = [], 0
    while True:
        lt = text.find("<<<", pos)
        if lt < 0:
            break
        gt = text.find(">>>", lt)
        if gt < 0:
            fail(path, text, lt, "<<< without >>>")
        start = kernel_start(text, lt, path)
        kernel = text[start:lt].strip()
        config = text[lt + 3:gt]
        open_pos = gt + 3
        while text[open_pos].isspace():
            open_pos += 1
        if text[open_pos] != "(":
            fail(path, text, gt, "no argument list after >>>")
        close = matching_paren(text, open_pos, path)
        args = text[open_pos + 1:close]
        parts = [p.strip() for p in split_top(config)]
        uses_smem = len(parts) >= 3 and parts[2] != "0"
        key = f"reinterpret_cast<const void*>(&{kernel})" if uses_smem else "nullptr"
        name = " ".join(kernel.split())
        call = (f'::vt_emu::launch("{name}", {key}, ::vt_emu::Config({config}), '
                f"[](auto... vt_emu_a) {{ {kernel}(vt_emu_a...); }}")
        call += f", {args})" if args.strip() else ")"
        out.append(text[pos:start])
        out.append(call)
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def split_top(s):
    """Splits s at the commas outside parentheses and angle brackets."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "(<[":
            depth += 1
        elif c in ")>]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:\s]+?)\s+(\w+)\[\];")


STATIC_SHARED = re.compile(r"(?<!extern )__shared__\s+([^;]+);")


def fresh_shared(m):
    # Each declarator's name: its last word once the array bounds are gone.
    names = [re.sub(r"\[[^\]]*\]", "", d).split()[-1] for d in split_top(m.group(1))]
    calls = "".join(f" static unsigned long long vt_emu_seen_{n} = ~0ull;"
                    f" ::vt_emu::fresh_shared(&vt_emu_seen_{n}, &{n}, sizeof({n}));" for n in names)
    return m.group(0) + calls


def rewrite(text, path):
    text = EXTERN_SHARED.sub(lambda m: f"{m.group(1)}* {m.group(2)} = static_cast<{m.group(1)}*>"
                             f"(::vt_emu::dynamic_shared());", text)
    text = STATIC_SHARED.sub(fresh_shared, text)
    return rewrite_launches(text, path)


def main():
    src_root, out_root, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    for rel in files:
        path = os.path.join(src_root, rel)
        with open(path) as f:
            text = f.read()
        out = os.path.join(out_root, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        new = rewrite(text, path)
        if os.path.exists(out) and open(out).read() == new:
            continue  # unchanged: keep the timestamp, no rebuild
        with open(out, "w") as f:
            f.write(new)


if __name__ == "__main__":
    main()
