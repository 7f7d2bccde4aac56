#!/usr/bin/env python3
"""ONNX Runtime side of `visiontrain export --verify` (trainer/export_verify.cpp).

Reads request.json (written by the C++ command): the exported file, the letterboxed images
as raw uint8 (n, S, S, 3), the expected sizes and whether the file has a dynamic batch and
NonMaxSuppression. Checks the model with onnx.checker (full check, shape inference) and its
metadata (format, imgsz, nc, class_names: docs/formats/export.md), runs it
on the CPU provider with the default graph optimisations (what a server runs), and writes

  raw.f32          (n, no, A) float32 little-endian, the intermediate "detect.raw" (the
                              head's logits before the decode, no = 4 reg_max + nc), from a
                              second session of the same graph with that value added as an
                              output (the file itself is run untouched for the rest)
  boxes.f32        (n, A, 4)  float32, the "boxes" output
  scores.f32       (n, A, nc) float32, the "scores" output
  detections.f64   (K, 8)     float64 rows (image, class, anchor, x1, y1, x2, y2, score), from
                              "selected_indices" by gather_detections (with_nms only)

into out_dir. The C++ side compares them with the native pass. Exit code 3: a package is
missing (onnx, onnxruntime or numpy).
"""
import json
import os
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:
    print(f"verify_onnx.py: {e} in {sys.executable}; pip install -r tests/requirements.txt", file=sys.stderr)
    sys.exit(3)


def preprocess(canvas_u8):
    """(n, S, S, 3) uint8 RGB letterboxed canvases -> (n, 3, S, S) float32 in [0, 1]."""
    return np.ascontiguousarray(canvas_u8.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)


def gather_detections(boxes, scores, selected, max_det, width, height):
    """The detections of `detect` from the NonMaxSuppression output (docs/serving.md).

    boxes (B, A, 4) and scores (B, A, nc) are the model's outputs, selected (K, 3) its
    selected_indices rows (image b, class c, anchor a). Per image: the rows' scores
    scores[b, a, c], sorted by descending score, ties by lower anchor, cut to max_det; boxes
    clipped to [0, width] x [0, height] (here the S x S input; for the original image, map
    (v - pad) / scale first, then clip to its size). Returns rows
    (image, class, anchor, x1, y1, x2, y2, score) as float64.
    """
    rows = []
    for b in range(boxes.shape[0]):
        sel = selected[selected[:, 0] == b]
        c, a = sel[:, 1], sel[:, 2]
        s = scores[b, a, c]
        order = np.lexsort((a, -s))[:max_det]  # last key first: score descending, then anchor
        for k in order:
            x1, y1, x2, y2 = boxes[b, a[k]]
            clip = lambda v, hi: min(max(v, np.float32(0)), np.float32(hi))
            rows.append((b, c[k], a[k], clip(x1, width), clip(y1, height), clip(x2, width), clip(y2, height), s[k]))
    return np.array(rows, dtype=np.float64).reshape(-1, 8)


def with_raw_output(model):
    """A copy of `model` that also outputs its intermediate "detect.raw" (export_onnx.h)."""
    names = {o for node in model.graph.node for o in node.output}
    assert "detect.raw" in names, "the graph has no detect.raw value (exported by an older visiontrain?)"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_tensor_value_info("detect.raw", onnx.TensorProto.FLOAT, None))
    return copy


def run_chunks(sess, x, dynamic_batch, outputs=None):
    """Runs `sess` on x (n, 3, S, S): all at once with a dynamic batch, else image by image.
    Returns the list of per-call output lists."""
    chunks = [x] if dynamic_batch else [x[i:i + 1] for i in range(x.shape[0])]
    return [sess.run(outputs, {"images": chunk}) for chunk in chunks]


def main():
    with open(sys.argv[1]) as f:
        req = json.load(f)
    n, size, anchors, nc = req["n"], req["imgsz"], req["anchors"], req["nc"]
    onnx.checker.check_model(req["onnx"], full_check=True)
    model = onnx.load(req["onnx"])
    print(f"  onnx {onnx.__version__}: checker passed (opset {model.opset_import[0].version}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers); "
          f"onnxruntime {ort.__version__}")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta.get("format") == "visiontrain.onnx.v1", meta.get("format")
    assert meta.get("imgsz") == str(size) and meta.get("nc") == str(nc), (meta.get("imgsz"), meta.get("nc"))
    assert len(json.loads(meta["class_names"])) == nc, meta["class_names"]
    images = np.fromfile(req["images"], dtype=np.uint8).reshape(n, size, size, 3)
    x = preprocess(images)
    sess = ort.InferenceSession(req["onnx"], providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = ["boxes", "scores"] + (["selected_indices"] if req["with_nms"] else [])
    assert names == want, f"outputs {names}, expected {want}"
    # A dynamic-batch file gets every image in one call; a batch-1 file one image per call.
    outs = run_chunks(sess, x, req["dynamic_batch"])
    boxes, scores, selected = [], [], []
    first = 0
    for out in outs:
        boxes.append(out[0])
        scores.append(out[1])
        if req["with_nms"]:
            sel = out[2].copy()
            sel[:, 0] += first
            selected.append(sel)
        first += out[0].shape[0]
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    assert boxes.shape == (n, anchors, 4) and scores.shape == (n, anchors, nc), (boxes.shape, scores.shape)
    print(f"  onnxruntime ran {len(outs)} call(s) of batch {outs[0][0].shape[0]}")
    raw_sess = ort.InferenceSession(with_raw_output(model).SerializeToString(), providers=["CPUExecutionProvider"])
    raw = np.concatenate([o[0] for o in run_chunks(raw_sess, x, req["dynamic_batch"], ["detect.raw"])])
    assert raw.shape == (n, req["no"], anchors), (raw.shape, req["no"], anchors)
    out_dir = req["out_dir"]
    raw.astype("<f4").tofile(os.path.join(out_dir, "raw.f32"))
    boxes.astype("<f4").tofile(os.path.join(out_dir, "boxes.f32"))
    scores.astype("<f4").tofile(os.path.join(out_dir, "scores.f32"))
    if req["with_nms"]:
        selected = np.concatenate(selected)
        dets = gather_detections(boxes, scores, selected, req["max_det"], size, size)
        dets.astype("<f8").tofile(os.path.join(out_dir, "detections.f64"))


if __name__ == "__main__":
    main()
