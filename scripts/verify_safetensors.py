#!/usr/bin/env python3
"""Checks a safetensors export against its checkpoint (`visiontrain export --verify`, tests).

    verify_safetensors.py FILE.safetensors CHECKPOINT.h5 ema|model

Reads the export with the `safetensors` package and the checkpoint with h5py, and demands:
the same tensor names as the checkpoint's <ema|model>/ group, float32, every tensor
bit-identical (conv weights, OHWI in the checkpoint, transposed to PyTorch's OIHW), the
header padded so that the data start 8-byte aligned, and the metadata of
docs/formats/export.md (the checkpoint's SHA-256 recomputed here). Exit code 3: a package is
missing.
"""
import hashlib
import json
import struct
import sys

try:
    import h5py
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"verify_safetensors.py: {e} in {sys.executable}; pip install -r tests/requirements.txt", file=sys.stderr)
    sys.exit(3)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def main():
    path, ckpt, which = sys.argv[1:4]
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    assert (8 + header_len) % 8 == 0, f"data start at {8 + header_len}, not 8-byte aligned"
    tensors = load_file(path)
    with safe_open(path, "np") as f:
        meta = f.metadata()
    with open(ckpt, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    values = 0
    with h5py.File(ckpt, "r") as h:
        group = h[which]
        assert sorted(group.keys()) == sorted(tensors.keys()), (
            f"names differ: only in checkpoint {sorted(set(group.keys()) - set(tensors))[:5]}, "
            f"only in export {sorted(set(tensors) - set(group.keys()))[:5]}")
        for name, t in tensors.items():
            ref = group[name][()]
            if ref.ndim == 4:
                ref = ref.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            assert t.dtype == np.float32, f"{name}: dtype {t.dtype}"
            assert t.shape == ref.shape, f"{name}: shape {t.shape}, checkpoint {ref.shape}"
            assert np.array_equal(t.view(np.uint32), ref.astype(np.float32).view(np.uint32)), f"{name}: values differ"
            values += t.size
        attrs = h.attrs
        expected = {
            "format": "visiontrain.weights.v1",
            "weights": which,
            "source_sha256": sha,
            "class_names": json.dumps(json.loads(text(attrs["class_names"]))),
            "imgsz": str(int(attrs["imgsz"])),
            "model_yaml": text(attrs["model_yaml"]),
            "conv_weight_layout": "OIHW",
        }
        if "config" in attrs:
            expected["config"] = text(attrs["config"])
        if "step" in attrs:
            expected["step"] = str(int(attrs["step"]))
    for k, v in expected.items():
        got = meta.get(k)
        if k == "class_names" and got is not None:
            got = json.dumps(json.loads(got))
        assert got == v, f"metadata {k}: {str(got)[:80]!r}, expected {str(v)[:80]!r}"
    for k in ("source", "program_version", "nc"):
        assert k in meta, f"metadata lacks {k}"
    print(f"  safetensors: {len(tensors)} tensors, {values} float32 values, bit-identical to {which}/ of the "
          f"checkpoint; header {header_len} bytes; {len(meta)} metadata entries as expected")


if __name__ == "__main__":
    main()
