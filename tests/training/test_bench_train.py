"""The training-speed benchmark: a real (short) run per precision. In this process, with the
global dtype policy it sets put back; on the JAX backend in a subprocess (a backend is chosen
once per process)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW = r"^\| ({}) \| (on|off) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+)x \|$"


def _within_print_rounding(images_per_s: str, ms: str, batch: int) -> bool:
    """Whether ``images_per_s`` (printed to the unit) is ``batch`` images per step of ``ms``
    milliseconds (printed to 0.1 ms): the two columns come from one time."""
    low, high = batch * 1000 / (float(ms) + 0.05), batch * 1000 / (float(ms) - 0.05)
    return low - 0.5 <= int(images_per_s.replace(",", "")) <= high + 0.5


def test_bench_train_prints_a_row_per_precision(monkeypatch, capsys):
    import training.bench_train as bench
    from models.registry import computes_in

    real_build, computed_in, compiled = bench.build_dae, [], []

    def build_dae(*args, **kwargs):
        model = real_build(*args, **kwargs)
        computed_in.append(computes_in(model))
        compiled.append(model.jit_compile)
        return model

    monkeypatch.setattr(bench, "build_dae", build_dae)
    assert bench.main(["--steps", "2", "--warmup", "1", "--batch-size", "8", "--precision", "off",
                       "--precision", "bfloat16"]) == 0
    out = capsys.readouterr().out
    # Each row timed a model that computes in its precision.
    assert computed_in == ["float32", "bfloat16"]
    # "auto" compiles only on a GPU
    assert compiled == [False, False]
    assert ("conv DAE of 32/64 filters, code 128, batch 8 of 28x28x1, 2 steps, "
            "Keras backend tensorflow") in out, out
    assert "| precision | XLA | ms/step | images/s | vs off, XLA off |" in out
    rows = re.findall(ROW.format("off|bfloat16"), out, re.M)
    assert [r[:2] for r in rows] == [("off", "off"), ("bfloat16", "off")], out
    (_, _, ms_off, images_off, ratio_off), (_, _, ms_bf16, images_bf16, ratio_bf16) = rows
    assert float(ms_off) > 0 and float(ms_bf16) > 0, out
    assert _within_print_rounding(images_off, ms_off, 8), out
    assert _within_print_rounding(images_bf16, ms_bf16, 8), out
    # "vs off" is the speed-up over the first row: its time over this row's.
    assert ratio_off == "1.00"
    low = (float(ms_off) - 0.05) / (float(ms_bf16) + 0.05) - 0.005
    high = (float(ms_off) + 0.05) / (float(ms_bf16) - 0.05) + 0.005
    assert low <= float(ratio_bf16) <= high, out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX not installed")
def test_bench_train_runs_on_the_jax_backend():
    """JAX compiles every step with XLA (pretraining's "auto"); its arrays have no ``.numpy()``."""
    proc = subprocess.run(
        [sys.executable, "-m", "training.bench_train", "--steps", "2", "--warmup", "1",
         "--batch-size", "8", "--precision", "off"],
        cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 steps, Keras backend jax" in proc.stdout
    row = re.search(ROW.format("off"), proc.stdout, re.M)
    assert row and row[2] == "on" and float(row[3]) > 0 and row[5] == "1.00", proc.stdout
    assert _within_print_rounding(row[4], row[3], 8), proc.stdout


def test_bench_train_compares_xla_off_and_on_for_the_network_asked(monkeypatch, capsys):
    """``--jit off --jit on`` times the same precision twice, the second step compiled by XLA,
    on the network of ``--widths``/``--bottleneck``."""
    import training.bench_train as bench

    real_build, built = bench.build_dae, []

    def build_dae(*args, **kwargs):
        model = real_build(*args, **kwargs)
        filters = [layer.filters for layer in model.get_layer("encoder").layers if hasattr(layer, "filters")]
        built.append((model.jit_compile, filters))
        return model

    monkeypatch.setattr(bench, "build_dae", build_dae)
    assert bench.main(["--steps", "2", "--warmup", "1", "--batch-size", "4", "--precision", "off",
                       "--jit", "off", "--jit", "on", "--widths", "8", "16", "--bottleneck", "24"]) == 0
    out = capsys.readouterr().out
    assert [jit for jit, _ in built] == [False, True]
    assert built[0][1] == built[1][1] and built[0][1][:2] == [8, 8] and built[0][1][-1] == 24, built
    assert "conv DAE of 8/16 filters, code 24, batch 4" in out, out
    rows = re.findall(ROW.format("off"), out, re.M)
    assert [r[:2] for r in rows] == [("off", "off"), ("off", "on")], out
    assert rows[0][4] == "1.00", out


def test_bench_train_refuses_an_unknown_precision(capsys):
    from training.bench_train import main

    with pytest.raises(SystemExit) as exited:
        main(["--precision", "int8"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "unknown precision 'int8'" in err
    assert "Traceback" not in err


def test_bench_train_refuses_an_unknown_jit(capsys):
    from training.bench_train import main

    with pytest.raises(SystemExit) as exited:
        main(["--jit", "maybe"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "unknown --jit 'maybe'" in err and "auto, on, off" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args,why", [
    (["--bottleneck", "0"], "the model cannot be built as asked"),
    (["--widths", "32", "64", "128"], "--size 28 does not halve evenly 3 times"),
])
def test_bench_train_refuses_a_network_it_cannot_build_in_one_line(capsys, args, why):
    from training.bench_train import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and why in err and "Traceback" not in err


def test_bench_train_times_one_device_whatever_the_machine_has():
    """Its model trains outside any strategy: several GPUs or TF_CONFIG must not turn XLA off
    (or refuse --jit on) as they do for pretraining's mirrored step."""
    from training.bench_train import BenchTrainConfig

    pretrain = BenchTrainConfig(widths=(8, 16), bottleneck=24).pretrain_config("off", "on")
    assert (pretrain.distribute, pretrain.cpu_devices, pretrain.jit) == ("none", 0, "on")
    assert (pretrain.widths, pretrain.bottleneck) == ((8, 16), 24)
