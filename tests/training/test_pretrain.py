"""Real pretraining runs on real Fashion-MNIST subsets, and the CLI's refusals: in this process
(``main``, whose return value is the exit status), except where the test is about the process
itself (killed, on another backend, its devices or cluster set before TensorFlow starts)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--widths", "8", "16", "--bottleneck", "16", "--batch-size", "32", "--eval-images", "64"]




def real_run(test):
    """Marks a test that trains on Fashion-MNIST for real: slow, and skipped without the files."""
    return pytest.mark.slow(needs_fashion_mnist(test))


def run_main(args) -> int:
    """``python -m training.pretrain ARGS``'s exit status, run in this process (argparse's
    refusals exit 2 by ``SystemExit``, the run's own by ``main``'s return value)."""
    from training.pretrain import main

    try:
        return main(args)
    except SystemExit as exited:
        return exited.code


def pretrain(args, env=None, **kwargs):
    """``python -m training.pretrain ARGS`` in a fresh process, stdout and stderr together."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "training.pretrain", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def epochs_logged(run):
    path = run / "history.csv"
    if not path.exists():
        return []
    return [int(row["epoch"]) for row in csv.DictReader(path.open())]


@real_run
def test_per_image_variance_trains_on_the_mean_log_error_and_denoises(tmp_path):
    run = tmp_path / "run"
    assert run_main(["--limit", "3000", "--epochs", "2", "--variance", "per_image", *SMALL,
                     "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    # ½ log of a per-image squared error well under 1: negative, and falling.
    assert metrics["val_loss"][-1] < metrics["val_loss"][0] < 0
    gains = {k: v["denoised_psnr"] - v["noisy_psnr"] for k, v in metrics["psnr"].items()}
    assert len(gains) == 8 and min(gains.values()) > 0.3, gains
    assert json.loads((run / "config.json").read_text())["variance"] == "per_image"


def test_per_image_variance_with_a_bernoulli_decoder_is_refused(tmp_path, capsys):
    assert run_main(["--variance", "per_image", "--distribution", "bernoulli",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--variance per_image needs the gaussian decoder (got --distribution bernoulli)" in err
    assert not (tmp_path / "run").exists()


@real_run  # in a subprocess, to be killed
def test_killed_run_resumes_where_it_stopped_and_learns_to_denoise(tmp_path, capsys):
    run = tmp_path / "run"
    # 140 steps an epoch: over the 4 epochs, enough to learn to denoise every setting.
    args = ["--limit", "4500", "--epochs", "4", *SMALL, "--out", str(run)]
    proc = pretrain(args, start_new_session=True)
    deadline = time.time() + 240
    while len(epochs_logged(run)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = epochs_logged(run)
    assert len(done) >= 2 and not (run / "metrics.json").exists()
    # The restart reads where Keras' backup stands, to go on with the order and noise of the
    # epochs still to come (data.pipeline.epoch_seed).
    from training.history import resumed_epoch

    # (CSVLogger writes the epoch before Keras saves the backup: a kill between leaves it one behind.)
    assert resumed_epoch(run / "backup") in (len(done) - 1, len(done))
    assert run_main(args) == 0  # the same command again (in this process: the folder is the state)
    assert "denoised" in capsys.readouterr().out
    # The restarted run logged only the remaining epochs, in order: every epoch, and at most the
    # one the kill came between twice (read_history keeps its last row).
    logged = epochs_logged(run)
    assert sorted(set(logged)) == [0, 1, 2, 3] and logged == sorted(logged) and len(logged) <= 5
    # metrics.json covers the whole run, not only the epochs after the restart.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4 and len(metrics["val_loss"]) == 4
    from training.history import read_history

    seconds = read_history(run / "history.csv")["epoch_seconds"]  # an epoch logged twice: its last
    assert len(seconds) == 4 and min(seconds) > 0
    assert metrics["train_seconds"] == pytest.approx(sum(seconds), abs=0.1)
    # And it learned to denoise, over the kill: every setting gains, most a lot.
    assert metrics["val_loss"][-1] < metrics["val_loss"][0]
    gains = {k: v["denoised_psnr"] - v["noisy_psnr"] for k, v in metrics["psnr"].items()}
    assert len(gains) == 8 and min(gains.values()) > 0.3, gains
    assert np.mean(list(gains.values())) > 3.0, gains
    for name in ("config.json", "model.keras", "samples.png", "history.csv"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents.*"))
    assert not (run / "backup").exists()  # removed once training completed


@real_run
def test_a_run_stopped_at_its_time_limit_goes_on_and_a_finished_one_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--limit", "256", "--epochs", "3", *SMALL, "--out", str(run)]
    assert run_main([*args, "--time-limit", "0.001"]) == 0  # 0.06 s: stops after the first epoch
    assert "time limit: stopping after epoch 1" in capsys.readouterr().out and epochs_logged(run) == [0]
    assert (run / "metrics.json").is_file() and (run / "backup").is_dir()
    assert run_main([*args, "--time-limit", "60"]) == 0
    assert epochs_logged(run) == [0, 1, 2] and not (run / "backup").exists()
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3
    model = (run / "model.keras").stat().st_mtime_ns
    capsys.readouterr()
    assert run_main([*args, "--time-limit", "60"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{run} holds this run, finished (metrics.json); to train it further, --init-from {run}" in err
    assert (run / "model.keras").stat().st_mtime_ns == model and epochs_logged(run) == [0, 1, 2]


@real_run
def test_a_run_killed_while_it_is_scored_is_scored_again_not_trained_again(tmp_path, monkeypatch, capsys):
    import training.pretrain

    run = tmp_path / "run"
    args = ["--limit", "256", "--epochs", "2", *SMALL, "--out", str(run)]
    summarize = training.pretrain.summarize

    def killed(*a, **kw):
        raise KeyboardInterrupt  # as a kill between the last epoch and metrics.json

    monkeypatch.setattr(training.pretrain, "summarize", killed)
    with pytest.raises(KeyboardInterrupt):
        run_main(args)
    assert epochs_logged(run) == [0, 1] and (run / "backup").is_dir() and not (run / "metrics.json").exists()
    trained = (run / "model.keras").read_bytes()
    monkeypatch.setattr(training.pretrain, "summarize", summarize)
    capsys.readouterr()
    assert run_main(args) == 0
    assert "Epoch" not in capsys.readouterr().out  # no epoch trained again
    assert epochs_logged(run) == [0, 1] and not (run / "backup").exists()
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    from models.registry import load_model

    (tmp_path / "first.keras").write_bytes(trained)
    for a, b in zip(load_model(tmp_path / "first.keras").get_weights(), load_model(run).get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@real_run
def test_a_run_that_early_stopping_ended_killed_while_it_is_scored_trains_no_epoch_more(
        tmp_path, monkeypatch, capsys):
    """Early stopping's count is only checked at an epoch's end: a restart used to train one
    epoch more (and, were it better, go on) where the run being scored had ended."""
    import training.pretrain

    run = tmp_path / "run"
    # A learning rate of 0 leaves the validation loss as it is: patience 1 ends it after epoch 2.
    args = ["--limit", "256", "--epochs", "6", "--learning-rate", "0", "--patience", "1", *SMALL,
            "--out", str(run)]
    summarize = training.pretrain.summarize

    def killed(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.pretrain, "summarize", killed)
    with pytest.raises(KeyboardInterrupt):
        run_main(args)
    assert epochs_logged(run) == [0, 1] and (run / "backup").is_dir()
    monkeypatch.setattr(training.pretrain, "summarize", summarize)
    capsys.readouterr()
    assert run_main(args) == 0
    out = capsys.readouterr().out
    assert "Epoch" not in out and "training had ended after epoch 2 when the run was stopped" in out
    assert epochs_logged(run) == [0, 1] and not (run / "backup").exists()
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2


@real_run
def test_a_kill_while_the_backup_is_removed_leaves_the_finished_run_as_it_was(tmp_path, monkeypatch,
                                                                               capsys):
    """Deleting backup/ file by file and being killed half-way used to leave its metadata
    without weights: the restart then saved and scored freshly drawn weights as the run."""
    import shutil

    run = tmp_path / "run"
    args = ["--limit", "256", "--epochs", "2", *SMALL, "--out", str(run)]
    rmtree = shutil.rmtree

    def killed_half_way(path, *a, **kw):
        if "backup" not in Path(path).name or not Path(path).exists():
            return rmtree(path, *a, **kw)
        for weights in Path(path).glob("latest.weights.h5*"):
            weights.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        run_main(args)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert (run / "metrics.json").is_file()
    trained = (run / "model.keras").read_bytes()
    capsys.readouterr()
    assert run_main(args) == 2  # finished: refused, not trained or scored again
    assert "holds this run, finished" in capsys.readouterr().err
    assert (run / "model.keras").read_bytes() == trained
    assert sorted(p.name for p in run.iterdir() if "backup" in p.name) == []  # the leftover went


@real_run
def test_a_run_killed_after_it_was_scored_but_before_its_backup_went_is_finished(tmp_path, monkeypatch,
                                                                                  capsys):
    import training.pretrain

    run = tmp_path / "run"
    args = ["--limit", "256", "--epochs", "1", *SMALL, "--out", str(run)]

    def killed(backup):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.pretrain, "remove_backup", killed)
    with pytest.raises(KeyboardInterrupt):
        run_main(args)
    assert (run / "metrics.json").is_file() and (run / "samples.png").is_file() and (run / "backup").is_dir()
    monkeypatch.undo()
    capsys.readouterr()
    # Refused as finished, with the backup gone: training.bundle takes the run.
    assert run_main(args) == 2 and "holds this run, finished" in capsys.readouterr().err
    assert not (run / "backup").exists()


def test_a_backup_with_epochs_but_no_weights_is_a_clear_error(tmp_path):
    from training.history import recover_backup

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epoch": 3}')
    with pytest.raises(ValueError, match="records finished epochs but holds no weights; delete that"):
        recover_backup(backup)
    # With the previous copy still there, that copy is restored, with the epoch it was saved at.
    (backup / "latest.weights.h5.bkp").write_bytes(b"previous")
    (backup / "training_metadata.json.bkp").write_text('{"epoch": 2}')
    recover_backup(backup)
    assert (backup / "latest.weights.h5").read_bytes() == b"previous"
    assert json.loads((backup / "training_metadata.json").read_text()) == {"epoch": 2}


@real_run
def test_a_backup_whose_metadata_was_cut_short_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--limit", "256", "--epochs", "3", *SMALL, "--out", str(run)]
    assert run_main([*args, "--time-limit", "0.001"]) == 0
    (run / "backup" / "training_metadata.json").write_text('{"epo')
    capsys.readouterr()
    assert run_main([*args, "--time-limit", "60"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot resume from {run / 'backup'}: its files are damaged" in err


def test_an_out_folder_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep me")
    run = tmp_path / "afile" / "run"
    assert run_main(["--limit", "256", "--epochs", "1", *SMALL, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: --out {run}: {tmp_path / 'afile'} is a file, not a folder" in err
    assert (tmp_path / "afile").read_text() == "keep me"


@real_run
def test_a_damaged_backup_is_a_clear_error_and_a_stop_by_early_stopping_is_not_a_time_limit_one(
        tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--limit", "256", "--epochs", "3", *SMALL, "--out", str(run)]
    assert run_main([*args, "--time-limit", "0.001"]) == 0 and (run / "backup").is_dir()
    for weights in (run / "backup").glob("*.weights.h5"):  # both copies cut short
        weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    assert run_main([*args, "--time-limit", "60"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot resume from {run / 'backup'}: its files are damaged" in err
    # An epoch that early stopping (listed before the timer) ends is not a time-limit stop, which
    # would keep the backup for the same command to go on past early stopping's decision.
    from types import SimpleNamespace

    from training.history import epoch_timer

    for stopped_already in (False, True):
        timer, model = epoch_timer(0.001), SimpleNamespace(stop_training=stopped_already)
        timer.set_model(model)
        timer.set_params({"epochs": 3})
        timer.on_train_begin()
        timer.on_epoch_begin(0)
        time.sleep(0.1)
        timer.on_epoch_end(0, logs={})
        assert timer.stopped_early is not stopped_already and model.stop_training


@real_run
def test_patience_0_runs_every_epoch_where_early_stopping_would_end_the_run(tmp_path, capsys):
    # A learning rate of 0 leaves the weights, and so the validation loss, as they are: no
    # epoch improves on the first.
    args = ["--limit", "256", "--epochs", "3", "--learning-rate", "0", *SMALL]
    assert run_main([*args, "--patience", "1", "--out", str(tmp_path / "stops")]) == 0
    assert epochs_logged(tmp_path / "stops") == [0, 1]
    assert run_main([*args, "--patience", "0", "--out", str(tmp_path / "all")]) == 0
    assert epochs_logged(tmp_path / "all") == [0, 1, 2]
    capsys.readouterr()
    assert run_main([*args, "--patience", "-1", "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "--patience must be >= 0 epochs" in err, err[-2000:]
    assert not (tmp_path / "refused").exists()


@needs_fashion_mnist
def test_out_that_is_a_file_or_too_few_images_for_a_batch_is_refused_leaving_no_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, batch, says in ((afile, "32", f"--out {afile} is a file, not a folder"),
                             (tmp_path / "run", "128", "64 training images is fewer than one batch of 128")):
        assert run_main(["--limit", "64", "--batch-size", batch, "--epochs", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err[-2000:]
    assert afile.read_text() == "mine" and not (tmp_path / "run").exists()


@needs_fashion_mnist
def test_different_config_in_same_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"dataset": "mnist"}))
    assert run_main(["--epochs", "1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds a run with a different config" in err and "Traceback" not in err
    assert json.loads((run / "config.json").read_text()) == {"dataset": "mnist"}  # left as it was


def test_a_resumed_run_may_get_a_new_time_limit_or_xla_but_not_a_new_model(tmp_path):
    from training.pretrain import PretrainConfig, prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(PretrainConfig(epochs=4, time_limit=30), run)
    prepare_run_dir(PretrainConfig(epochs=4, time_limit=90), run)  # more time for the rest
    assert json.loads((run / "config.json").read_text())["time_limit"] == 90
    # XLA changes how fast the steps run, not the model: a run begun without it goes on with it.
    prepare_run_dir(PretrainConfig(epochs=4, time_limit=90, jit="on"), run)
    assert json.loads((run / "config.json").read_text())["jit"] == "on"
    # The same folder spelled another way (a trailing slash, an absolute path) is the same run.
    prepare_run_dir(PretrainConfig(epochs=4, time_limit=90, out=f"{run.resolve()}/"), run)
    with pytest.raises(ValueError, match=r"different config \(differs in: epochs\)"):
        prepare_run_dir(PretrainConfig(epochs=5, time_limit=90), run)


def test_xla_under_tf_distribute_is_refused_before_the_run_folder_is_made(tmp_path):
    """XLA cannot compile a mirrored step (the first step would fail on the other replicas'
    variables), so ``--jit on`` with a strategy is one line; ``auto`` leaves XLA off there."""
    run = tmp_path / "run"
    proc = pretrain(["--limit", "64", "--epochs", "1", *SMALL, "--cpu-devices", "2",
                     "--distribute", "mirrored", "--jit", "on", "--out", str(run)])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    assert "error: --jit on cannot train with tf.distribute (mirrored" in out and "Traceback" not in out
    assert not run.exists()


def test_xla_auto_is_off_under_tf_distribute_even_with_gpus(monkeypatch):
    import types

    import tensorflow as tf

    import training.pretrain as pretrain_module

    real = tf.config.list_physical_devices
    gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(2)]
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: real(kind) + (gpus if kind in (None, "GPU") else []))
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda devices: "mirrored over " + str(devices))

    def devices(distribute):
        return types.SimpleNamespace(distribute=distribute, cpu_devices=0, mixed_precision="off",
                                     jit="auto")

    strategy, jit = pretrain_module.configure_devices(devices("auto"))  # two GPUs: mirrored
    assert str(strategy).startswith("mirrored over") and jit is False
    assert pretrain_module.configure_devices(devices("none"))[1] is True  # one device: XLA


@real_run
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    run = tmp_path / "run"
    out = finish(pretrain(["--limit", "256", "--epochs", "1", *SMALL,  # --distribute auto: mirrored
                           "--cpu-devices", "2", "--out", str(run)]))
    assert "MirroredStrategy: 2 replica(s)" in out
    assert (run / "metrics.json").is_file()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@real_run
def test_two_workers_on_localhost_end_with_identical_weights(tmp_path):
    import keras

    import models.conv_dae  # noqa: F401

    run = tmp_path / "run"
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(pretrain(["--limit", "128", "--epochs", "1", *SMALL, "--out", str(run)],
                              env={"TF_CONFIG": json.dumps(tf_config)}))
    outs = [finish(p, timeout=400) for p in procs]
    assert all("MultiWorkerMirroredStrategy: 2 replica(s)" in o for o in outs)
    chief = keras.saving.load_model(run / "model.keras", safe_mode=True)
    other = keras.saving.load_model(run / "workers" / "worker1" / "model.keras", safe_mode=True)
    for a, b in zip(chief.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (run / "metrics.json").is_file() and not (run / "workers" / "worker1" / "metrics.json").exists()


def test_missing_dataset_exits_2_with_one_message_and_no_traceback(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(tmp_path)
    assert run_main(["--dataset", "mnist", "--data-dir", str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: dataset 'mnist' not found. Looked in:" in err
    assert f"  - {empty}\n" in err
    assert "Put train-images-idx3-ubyte[.gz]" in err and "(or Keras' mnist.npz)" in err
    assert "pass --data-dir DIR, or set DAE_MNIST_DIR=DIR" in err
    assert not (tmp_path / "run").exists()  # nothing half-made


def _without_tensorflow(tmp_path):
    """Env for a subprocess on the JAX backend that cannot import TensorFlow, as on an
    accelerator machine with JAX but no TensorFlow GPU build."""
    blocked = tmp_path / "no_tf" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("no TensorFlow here (test)")')
    return {"KERAS_BACKEND": "jax", "PYTHONPATH": f"{blocked.parent}{os.pathsep}{ROOT}"}


@real_run
def test_jax_backend_trains_without_tensorflow_and_the_model_serves_on_tensorflow(tmp_path):
    from data.corruption import corrupt
    from data.datasets import load_named
    from data.images import to_model
    from data.metrics import psnr
    from models.registry import load_model

    run = tmp_path / "run"
    out = finish(pretrain(["--limit", "3000", "--epochs", "2", *SMALL, "--out", str(run)],
                          env=_without_tensorflow(tmp_path)))
    assert "OneDevice: 1 replica(s)" in out and "XLA on" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["machine"].endswith("Keras backend jax")
    assert metrics["val_loss"][-1] < metrics["val_loss"][0]
    gains = [v["denoised_psnr"] - v["noisy_psnr"] for v in metrics["psnr"].values()]
    assert len(gains) == 8 and np.mean(gains) > 2.0, gains
    assert not (run / "logs").exists()  # TensorBoard logs need TensorFlow
    # The JAX-trained file loads and denoises here, on TensorFlow, as the app serves it.
    clean = to_model(load_named("fashion_mnist").x_test[:64])
    noisy = corrupt(clean, "gaussian", 0.3, seed=5)
    restored = load_model(run).predict(noisy, verbose=0)
    assert np.mean(psnr(clean, np.clip(restored, 0, 1))) > np.mean(psnr(clean, noisy)) + 3.0


@pytest.mark.slow  # a subprocess: its backend is chosen as it starts
def test_jax_backend_refuses_tf_distribute_with_a_message(tmp_path):
    out = pretrain(["--distribute", "mirrored", "--out", str(tmp_path / "run")],
                   env=_without_tensorflow(tmp_path)).communicate(timeout=120)[0]
    assert "error: --distribute and --cpu-devices use tf.distribute" in out
    assert "Traceback" not in out and not (tmp_path / "run").exists()


@real_run
def test_init_from_a_bundled_model_starts_from_its_weights(tmp_path):
    common = ["--limit", "256", "--epochs", "1", "--batch-size", "32", "--eval-images", "64",
              "--learning-rate", "1e-5"]
    tuned, scratch = tmp_path / "tuned", tmp_path / "scratch"
    assert run_main([*common, "--init-from", "fashion-mnist", "--out", str(tuned)]) == 0
    assert run_main([*common, "--out", str(scratch)]) == 0
    # Eight tiny steps cannot teach a network to denoise; the bundled model's weights can.
    psnr = {run.name: json.loads((run / "metrics.json").read_text())["psnr"]["gaussian:0.1"]["denoised_psnr"]
            for run in (tuned, scratch)}
    assert psnr["tuned"] > 26.0 and psnr["scratch"] < 22.0, psnr
    assert json.loads((tuned / "config.json").read_text())["init_from"] == "fashion-mnist"


@real_run
def test_init_from_a_narrower_model_widens_it_and_warms_up(tmp_path):
    run = tmp_path / "wide"
    assert run_main(["--limit", "256", "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "32",
                     "--eval-images", "64", "--learning-rate", "1e-4", "--widths", "40", "64",
                     "--bottleneck", "160", "--init-from", "fashion-mnist", "--out", str(run)]) == 0
    from models.registry import load_model

    wide = load_model(run)
    assert wide.get_config()["widths"] == [40, 64] and wide.get_config()["bottleneck"] == 160
    # Widened, not restarted: it denoises as the bundled model does after 16 small steps.
    psnr = json.loads((run / "metrics.json").read_text())["psnr"]["gaussian:0.1"]["denoised_psnr"]
    assert psnr > 26.0, psnr


def test_warmup_ramps_the_learning_rate_up_then_decays_it():
    from training.pretrain import PretrainConfig, learning_rate_schedule

    schedule = learning_rate_schedule(PretrainConfig(epochs=4, warmup_epochs=1, learning_rate=1e-3),
                                      steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[3] > rates[4] and rates[4] == pytest.approx(0.0, abs=1e-9)
    plain = learning_rate_schedule(PretrainConfig(epochs=4, learning_rate=1e-3), steps_per_epoch=10)
    assert float(plain(0)) == pytest.approx(1e-3) and float(plain(40)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="--warmup-epochs must be in"):
        PretrainConfig(epochs=2, warmup_epochs=2)
    # A warm-up that rounds to the whole run still leaves a step of decay (CosineDecay needs one).
    nearly = learning_rate_schedule(PretrainConfig(epochs=2, warmup_epochs=1.99, learning_rate=1e-3),
                                    steps_per_epoch=10)
    assert float(nearly(20)) == pytest.approx(1e-3)


@needs_fashion_mnist  # the dataset loads before the model named is read
def test_init_from_another_architecture_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_main(["--limit", "256", "--widths", "8", "16", "--init-from", "fashion-mnist",
                     "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "error: --init-from fashion-mnist: its architecture differs" in err
    assert "widths [32, 64] vs [8, 16]" in err and "Traceback" not in err
    assert not run.exists()
    assert run_main(["--init-from", "no-such-model", "--out", str(run)]) == 2
    assert "error: no model 'no-such-model'" in capsys.readouterr().err and not run.exists()


@pytest.mark.parametrize("flags,message,corrected", [
    (["--no-skips"], "residual=True needs skips=True and a gaussian decoder (got skips=False",
     ["--no-skips", "--no-residual"]),
    (["--widths", "0"], "widths must be a non-empty list of positive ints, got (0,)", ["--widths", "1"]),
    (["--bottleneck", "0"], "bottleneck must be a positive int, got 0", ["--bottleneck", "1"]),
    (["--channels", "2"], "--channels must be 0 (the dataset's own), 1 or 3, got 2", ["--channels", "1"]),
    # Scored after training: refused before it, not after an hour's run.
    (["--eval-images", "0"], "--eval-images must be >= 1, got 0", ["--eval-images", "1"]),
    (["--learning-rate", "-0.001"], "--learning-rate must be >= 0, got -0.001", ["--learning-rate", "0"]),
    (["--limit", "-1"], "--limit must be >= 0 (0 = every training image), got -1", ["--limit", "0"]),
    (["--patch-size", "0"], "--patch-size and --patches must be >= 1, got 0, 64", ["--patch-size", "8"]),
    (["--patches", "0"], "--patch-size and --patches must be >= 1, got 8, 0", ["--patches", "1"]),
])
def test_bad_architecture_flags_are_refused_before_the_data_loads_or_anything_is_written(
        tmp_path, flags, message, corrected, capsys):
    from training.cli import parse_config
    from training.pretrain import PretrainConfig, main

    photos = _random_photos(tmp_path / "photos", 4)
    run = tmp_path / "run"
    common = ["--dataset", f"folder:{photos}", "--patch-size", "8", "--patches", "64", "--out", str(run)]
    with pytest.raises(SystemExit) as exited:
        main([*common, *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run.exists()  # so the corrected command can use the same --out
    # The message's correction, at the edge of what is allowed, is accepted.
    assert parse_config(PretrainConfig, "", [*common, *corrected]).out == str(run)


def test_float16_training_scales_the_loss_so_the_deepest_layers_learn():
    import keras

    from data.corruption import CorruptionSpec, corrupt_batch
    from training.pretrain import PretrainConfig, build_dae

    images = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    noisy = np.asarray(corrupt_batch(images, [CorruptionSpec.parse("gaussian:0.1")], np.array([0, 1])))
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_dae(PretrainConfig(learning_rate=1e-3, epochs=1), 1, 4)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = model.encoder.get_layer("code_conv").kernel.numpy().copy()
        model.fit(noisy, images, batch_size=8, epochs=2, verbose=0)
        after = model.encoder.get_layer("code_conv").kernel.numpy()
    finally:
        keras.config.set_dtype_policy("float32")
    # Unscaled, float16 gradients of a loss averaged over every pixel underflow to 0 there, and
    # Adam then moves no weight at all.
    assert np.mean(after != before) > 0.5


def _random_photos(folder, count: int):
    """``count`` 24 x 24 colour PNGs of random pixels in ``folder``, a ``folder:`` dataset."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_sides_that_do_not_halve_evenly_are_refused_before_the_run_folder_is_written(tmp_path, capsys):
    from training.pretrain import main

    photos = _random_photos(tmp_path / "photos", 10)
    run = tmp_path / "run"
    # 8 px patches halve 3 times at most: 4 levels would need multiples of 16.
    flags = ["--widths", "4", "4", "4", "4", "--bottleneck", "4"]
    message = ("8x8 images do not halve evenly 4 times (--widths gives 4 levels): their sides must be "
               "multiples of 16; use fewer --widths or another --patch-size")
    assert main(["--dataset", f"folder:{photos}", "--patch-size", "8", "--patches", "64",
                 "--batch-size", "4", *flags, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run.exists()  # so the corrected command can use the same --out


@needs_fashion_mnist
def test_fewer_validation_images_than_a_batch_is_refused_not_a_run_without_validation(tmp_path, capsys):
    from training.pretrain import main

    run = tmp_path / "run"
    # 0.05 % of 60,000 is 30 validation images: tf.data's whole batches of 32 would hold none,
    # and early stopping would never see a validation loss.
    assert main(["--limit", "64", "--val-fraction", "0.0005", "--batch-size", "32", "--epochs", "1",
                 "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "30 validation images is fewer than one batch of 32" in err and "Traceback" not in err
    assert not run.exists()
