"""The training-speed benchmark: a real (short) run per precision, in a subprocess because it
sets Keras' global dtype policy."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_train_prints_a_row_per_precision():
    proc = subprocess.run(
        [sys.executable, "-m", "training.bench_train", "--steps", "2", "--warmup", "1",
         "--batch-size", "8", "--precision", "off", "--precision", "bfloat16"],
        cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\| (off|bfloat16) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+)x \|$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["off", "bfloat16"], proc.stdout
    assert all(float(ms) > 0 for _, ms, _, _ in rows)
    assert rows[0][3] == "1.00"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX not installed")
def test_bench_train_runs_on_the_jax_backend():
    """JAX compiles every step with XLA (pretraining's "auto"); its arrays have no ``.numpy()``."""
    proc = subprocess.run(
        [sys.executable, "-m", "training.bench_train", "--steps", "2", "--warmup", "1",
         "--batch-size", "8", "--precision", "off"],
        cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 steps, Keras backend jax, XLA on" in proc.stdout
    row = re.search(r"^\| off \| ([\d.]+) \| ([\d,]+) \| 1\.00x \|$", proc.stdout, re.M)
    assert row and float(row[1]) > 0, proc.stdout


def test_bench_train_refuses_an_unknown_precision():
    proc = subprocess.run([sys.executable, "-m", "training.bench_train", "--precision", "int8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown precision 'int8'" in proc.stderr
    assert "Traceback" not in proc.stderr
