"""scripts/plot_metrics.py: a fake metrics JSONL in, a PNG out; and clear failures on bad input.

Run with the project's venv (scripts/test.sh makes it): .venv/bin/python3 -m unittest
tests/python/test_plot_metrics.py. Skips, saying why, where matplotlib is not installed.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "plot_metrics.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_module():
    spec = importlib.util.spec_from_file_location("plot_metrics", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_metrics(path, epochs=3, steps_per_epoch=20, with_val=True):
    with open(path, "w", encoding="utf-8") as f:
        step = 0
        for epoch in range(epochs):
            for _ in range(steps_per_epoch):
                step += 1
                box, cls, dfl = 2.0 / math.sqrt(step), 3.0 / math.sqrt(step), 1.5 / math.sqrt(step)
                rec = {"step": step, "epoch": epoch, "loss": box + cls + dfl, "box": box, "cls": cls, "dfl": dfl,
                       "lr": 0.01 * step / (epochs * steps_per_epoch), "images_per_s": 100.0}
                f.write(json.dumps(rec) + "\n")
            if with_val:
                f.write(json.dumps({"epoch": epoch, "val": {"map": 0.1 * (epoch + 1), "map50": 0.2 * (epoch + 1)}}) + "\n")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)


@unittest.skipIf(importlib.util.find_spec("matplotlib") is None, "matplotlib is not installed in this Python")
class PlotMetricsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def assert_png(self, path):
        self.assertTrue(os.path.exists(path), path)
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[:8], PNG_MAGIC)
        self.assertGreater(len(data), 10000)  # four panels of curves, not an empty canvas

    def test_writes_png_next_to_the_metrics_by_default(self):
        metrics = os.path.join(self.dir, "metrics.jsonl")
        fake_metrics(metrics)
        r = run(metrics)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_png(os.path.join(self.dir, "metrics.png"))
        self.assertIn("60 steps, 3 validations", r.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "metrics.png.tmp.png")))

    def test_explicit_output_and_no_validation_records(self):
        metrics = os.path.join(self.dir, "m.jsonl")
        fake_metrics(metrics, epochs=1, with_val=False)
        out = os.path.join(self.dir, "curves.png")
        r = run(metrics, "-o", out, "--smooth", "0.5", "--title", "exp")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_png(out)

    def test_bad_input_fails_naming_the_line(self):
        metrics = os.path.join(self.dir, "bad.jsonl")
        fake_metrics(metrics, epochs=1)
        with open(metrics, "a", encoding="utf-8") as f:
            f.write("{not json\n")
        r = run(metrics)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.jsonl:22: not JSON", r.stderr)
        empty = os.path.join(self.dir, "empty.jsonl")
        open(empty, "w").close()
        r = run(empty)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no step or validation records", r.stderr)
        r = run(os.path.join(self.dir, "missing.jsonl"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.jsonl", r.stderr)

    def test_smoothing_is_a_debiased_moving_average(self):
        mod = load_module()
        self.assertEqual(mod.smooth([4.0, 4.0, 4.0], 0.9), [4.0, 4.0, 4.0])  # no pull towards 0
        got = mod.smooth([1.0, 3.0], 0.5)  # (0.5 * 1 * 0.5 + 0.5 * 3) / (0.75)
        self.assertAlmostEqual(got[1], (0.25 + 1.5) / 0.75)
        self.assertTrue(math.isnan(mod.smooth([float("nan")], 0.9)[0]))


if __name__ == "__main__":
    unittest.main()
