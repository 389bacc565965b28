"""Fine-tuning: label sampling, frozen encoders, run folders, the grid, and a real short run."""

import csv
import hashlib
import json
import shutil

import keras
import numpy as np
import pytest

from models.encoder_classifier import code_encoder
from models.registry import load_model
from tests.helpers import fashion_mnist_available
from tests.training.representation_fixtures import save_tiny_dae, write_quadrant_dataset
from training.finetune import (
    FinetuneConfig,
    labelled_subset,
    load_splits,
    main,
    parse_labels_per_class,
    run,
    steps_per_epoch,
    train_seed,
)
from training.finetune_grid import GridConfig, run_grid
from training.history import read_history

TINY = dict(dataset="fashion_mnist", seeds=1, epochs=2, head_epochs=1, min_steps_per_epoch=5,
            batch_size=16, stats_images=200)


class Killed(Exception):
    """Stands for the process being killed at some point of a run."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": str(save_tiny_dae(root / "dae.keras")),
            "data_dir": str(write_quadrant_dataset(root / "data"))}


def test_labelled_subset_is_class_balanced_and_seeded():
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    pick = labelled_subset(labels, 7, seed=3)
    assert np.array_equal(np.bincount(labels[pick], minlength=10), [7] * 10)
    assert len(set(pick)) == len(pick) == 70
    assert np.array_equal(pick, labelled_subset(labels, 7, seed=3))
    assert not np.array_equal(pick, labelled_subset(labels, 7, seed=4))
    assert np.array_equal(labelled_subset(labels, None, seed=3), np.arange(5000))


def test_labelled_subset_refuses_a_class_too_small():
    labels = np.array([0] * 20 + [1] * 3)
    with pytest.raises(ValueError, match="class 1 has 3 training images; --labels-per-class 5"):
        labelled_subset(labels, 5, seed=0)


@pytest.mark.parametrize("text,expected", [("10", 10), ("all", None), ("ALL", None)])
def test_labels_per_class_values(text, expected):
    assert parse_labels_per_class(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "ten", "1.5"])
def test_bad_labels_per_class_says_what_was_given(text):
    with pytest.raises(ValueError, match=f"positive integer or 'all', got '{text}'"):
        FinetuneConfig(labels_per_class=text)


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        FinetuneConfig(mode="probe")
    with pytest.raises(ValueError, match="--seeds must be >= 1, got 0"):
        FinetuneConfig(seeds=0)
    with pytest.raises(ValueError, match="--stats-images must be >= 1, got 0"):
        FinetuneConfig(stats_images=0)
    with pytest.raises(ValueError, match=r"--test-images must be >= 0 \(0 = all\), got -1"):
        FinetuneConfig(test_images=-1)
    with pytest.raises(ValueError, match=r"--patience must be >= 0 \(0 = no early stopping\)"):
        FinetuneConfig(patience=-1)
    with pytest.raises(ValueError, match="--val-fraction must be between 0 and 1, got 1.0"):
        FinetuneConfig(val_fraction=1.0)


def test_steps_per_epoch_repeat_small_sets_and_cap_large_ones():
    config = FinetuneConfig(batch_size=64, min_steps_per_epoch=50)
    assert steps_per_epoch(100, config) == 50  # 100 images: repeated
    assert steps_per_epoch(54_000, config) == 844  # a full pass
    capped = FinetuneConfig(batch_size=64, min_steps_per_epoch=50, max_steps_per_epoch=300)
    assert steps_per_epoch(54_000, capped) == 300 and steps_per_epoch(100, capped) == 50


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "run")]) == 2
    assert "error: no model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--labels-per-class", "many"])
    assert "positive integer or 'all', got 'many'" in capsys.readouterr().err


def test_a_refused_run_leaves_no_folder_to_block_the_corrected_command(tmp_path, tiny, capsys):
    # The quadrant dataset has 4 classes of a few hundred images each.
    args = ["--model", tiny["model"], "--data-dir", tiny["data_dir"], "--seeds", "1",
            "--out", str(tmp_path / "run")]
    assert main([*args, "--labels-per-class", "100000"]) == 2
    assert "--labels-per-class 100000 needs that many in every class" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*args, "--labels-per-class", "100000", "--mode", "linear"]) == 2
    assert "holds a run with a different config" not in capsys.readouterr().err


def _encoder_weights(path):
    return [np.asarray(w) for w in code_encoder(load_model(path)).get_weights()]


def _weights(model):
    return {"encoder": [np.array(w) for w in model.encoder.get_weights()],
            "head": [np.array(w) for w in model.get_layer("predictions").get_weights()]}


def _record_fits(monkeypatch) -> list:
    """Wraps ``training.finetune._fit``: each phase trained becomes ``(seed, phase, weights
    before, weights after)``, the weights being the encoder's and the head's."""
    import training.finetune as finetune

    real_fit, fits = finetune._fit, []

    def fit(model, *args, **kwargs):
        before = _weights(model)
        history = real_fit(model, *args, **kwargs)
        fits.append((kwargs["seed"], args[3], before, _weights(model)))
        return history

    monkeypatch.setattr(finetune, "_fit", fit)
    return fits


def _unchanged(before, after) -> list[bool]:
    """Per weight array: bit-identical."""
    return [np.array_equal(a, b) for a, b in zip(before, after, strict=True)]


def _check_modes_freeze_or_train_the_encoder(fits, mode, pretrained, seed_model):
    """The encoder frozen (linear, finetune's head phase) or trained (scratch, finetune's second
    phase) as ``mode`` asks; the head trained in every phase; ``seed_model``'s encoder the
    pretrained DAE's, bit for bit, when frozen throughout, else none of its weights."""
    for _, phase, before, after in fits:
        if phase in ("linear", "head"):
            assert all(_unchanged(before["encoder"], after["encoder"])), phase  # bit-identical
            assert all(_unchanged(before["encoder"], pretrained)), phase
        else:  # fine-tuned (or random) kernels and biases all moved
            assert not any(_unchanged(before["encoder"], after["encoder"])), phase
        assert not any(_unchanged(before["head"], after["head"])), phase  # the head learned
    saved = keras.saving.load_model(seed_model, safe_mode=True).encoder.get_weights()
    same = _unchanged([np.asarray(w) for w in saved], pretrained)
    assert all(same) if mode == "linear" else not any(same), mode


@pytest.mark.slow
def test_a_seed_killed_while_fine_tuning_everything_keeps_its_head_phase(tmp_path, tiny, monkeypatch):
    import training.finetune as finetune

    config = FinetuneConfig(model=tiny["model"], data_dir=tiny["data_dir"], mode="finetune",
                            labels_per_class="10", robustness=False, out=str(tmp_path), **{
                                k: v for k, v in TINY.items() if k != "dataset"})
    splits = load_splits(config)
    real_fit, phases = finetune._fit, []

    def fit(model, *args, **kwargs):
        phases.append(args[3])
        if phases == ["head", "all"]:  # the first run dies as its second phase starts
            raise Killed
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(finetune, "_fit", fit)
    with pytest.raises(Killed):
        train_seed(config, splits, seed=0, run_dir=tmp_path, jit=False)
    seed_dir = tmp_path / "seeds" / "seed-0"
    head_log = (seed_dir / "history-head.csv").read_text()
    metrics = train_seed(config, splits, seed=0, run_dir=tmp_path, jit=False)
    # The restart went straight on to the second phase; the head's log holds its epoch once.
    assert phases == ["head", "all", "all"]
    assert (seed_dir / "history-head.csv").read_text() == head_log
    assert metrics["epochs_run"] == {"head": 1, "all": 2}
    assert (seed_dir / "metrics.json").is_file() and not (seed_dir / "head.keras").exists()


def _logged_epochs(path) -> list[int]:
    return [int(row["epoch"]) for row in csv.DictReader(path.open(newline=""))]


@pytest.mark.slow
@pytest.mark.parametrize("killed_in,logged", [
    # The slow full-model save after the epoch's backup: the epoch must be in the log already.
    ("ModelCheckpoint", [0, 1, 2, 3]),
    # Between the epoch's CSV row and its backup: the epoch runs again and is logged twice.
    ("BackupAndRestore", [0, 1, 1, 2, 3]),
])
def test_a_phase_killed_at_an_epoch_end_keeps_every_epoch_once(tmp_path, tiny, monkeypatch, killed_in,
                                                               logged):
    config = FinetuneConfig(model=tiny["model"], data_dir=tiny["data_dir"], mode="scratch",
                            labels_per_class="10", epochs=4, min_steps_per_epoch=2, patience=0,
                            robustness=False, out=str(tmp_path / "run"), **{
                                k: v for k, v in TINY.items()
                                if k not in ("dataset", "epochs", "min_steps_per_epoch")})
    callback = getattr(keras.callbacks, killed_in)
    real_epoch_end, killed = callback.on_epoch_end, []

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and not killed:  # the process dies before this callback's save at epoch 1
            killed.append(epoch)
            raise Killed
        return real_epoch_end(self, epoch, logs)

    monkeypatch.setattr(callback, "on_epoch_end", on_epoch_end)
    with pytest.raises(Killed):
        run(config)
    run_dir = tmp_path / "run"
    seed_dir = run_dir / "seeds" / "seed-0"
    assert (seed_dir / "backup-scratch").is_dir()  # the restart resumes the phase
    metrics = run(config)
    assert killed == [1]
    assert _logged_epochs(seed_dir / "history-scratch.csv") == logged
    seed_metrics = json.loads((seed_dir / "metrics.json").read_text())
    history = read_history(seed_dir / "history-scratch.csv")
    assert seed_metrics["epochs_run"] == {"scratch": 4} and len(history["epoch_seconds"]) == 4
    assert seed_metrics["train_seconds"] == pytest.approx(sum(history["epoch_seconds"]), abs=0.1)
    assert metrics["train_seconds"]["mean"] == pytest.approx(seed_metrics["train_seconds"])
    # The run's history.csv, merged from the phases' logs, also has each epoch once.
    assert _logged_epochs(run_dir / "history.csv") == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_phase_killed_after_its_training_ended_trains_no_epoch_again(tmp_path, tiny, monkeypatch):
    """Keras used to delete the backup as the phase's fit ended: a kill before its model was
    saved then trained the whole phase again. Now the backup stays until the model is saved,
    records that the fit had ended, and the restart only restores it."""
    import training.finetune as finetune

    config = FinetuneConfig(model=tiny["model"], data_dir=tiny["data_dir"], mode="scratch",
                            labels_per_class="10", epochs=3, min_steps_per_epoch=2, patience=0,
                            robustness=False, out=str(tmp_path / "run"), **{
                                k: v for k, v in TINY.items()
                                if k not in ("dataset", "epochs", "min_steps_per_epoch")})
    real_save, saved = finetune.save_model, []

    def killed_before_the_first_save(model, path):
        if not saved:
            saved.append(model.get_weights())
            raise Killed
        return real_save(model, path)

    monkeypatch.setattr(finetune, "save_model", killed_before_the_first_save)
    with pytest.raises(Killed):
        run(config)
    seed_dir = tmp_path / "run" / "seeds" / "seed-0"
    log = (seed_dir / "history-scratch.csv").read_text()
    assert (seed_dir / "backup-scratch").is_dir()
    run(config)
    assert (seed_dir / "history-scratch.csv").read_text() == log  # no epoch ran again
    trained = keras.saving.load_model(seed_dir / "model.keras", compile=False).get_weights()
    for a, b in zip(saved[0], trained, strict=True):
        np.testing.assert_array_equal(a, b)  # the weights the fit had ended with
    assert not any(p.name.startswith((".backup", "backup")) for p in seed_dir.iterdir())


def test_merged_history_counts_an_epoch_logged_twice_once(tmp_path):
    from training.finetune import _merge_histories

    seed_dir = tmp_path / "seeds" / "seed-0"
    seed_dir.mkdir(parents=True)
    # Killed between the CSV row of epoch 1 and its backup: epoch 1 ran again after the restart.
    (seed_dir / "history-all.csv").write_text("epoch,loss\n0,0.9\n1,0.8\n1,0.7\n2,0.6\n")
    (seed_dir / "history-head.csv").write_text("epoch,loss\n0,1.5\n")
    _merge_histories(tmp_path, [0])
    rows = list(csv.DictReader((tmp_path / "history.csv").open(newline="")))
    assert [(row["phase"], row["epoch"], row["loss"]) for row in rows] == [
        ("all", "0", "0.9"), ("all", "1", "0.7"), ("all", "2", "0.6"), ("head", "0", "1.5")]


def test_a_run_begun_from_another_version_of_the_model_is_refused(tmp_path, tiny, monkeypatch, capsys):
    import training.finetune as finetune

    model = tmp_path / "dae.keras"  # a bundled model retrained in place is the same case
    shutil.copyfile(tiny["model"], model)
    args = ["--model", str(model), "--data-dir", tiny["data_dir"], "--seeds", "1",
            "--out", str(tmp_path / "run")]
    started = []

    def killed_while_training(config, splits, seed, run_dir, jit):
        started.append(seed)
        raise Killed

    monkeypatch.setattr(finetune, "train_seed", killed_while_training)
    with pytest.raises(Killed):
        main(args)
    record = json.loads((tmp_path / "run" / "pretrained.json").read_text())
    assert record["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    with pytest.raises(Killed):  # the same file: the run goes on
        main(args)
    save_tiny_dae(model, seed=1)  # same name and shapes, other weights
    assert main(args) == 2
    assert (f"error: {tmp_path / 'run'} holds a run from another version of --model {model} (sha256 "
            f"{record['sha256'][:12]}, now ") in capsys.readouterr().err
    assert started == [0, 0]
    # A run begun before the record existed is not refused (what it started from is unknown).
    (tmp_path / "run" / "pretrained.json").unlink()
    (tmp_path / "run" / "seeds").mkdir()
    with pytest.raises(Killed):
        main(args)
    assert started == [0, 0, 0] and not (tmp_path / "run" / "pretrained.json").exists()


@pytest.mark.slow
def test_a_seed_killed_after_its_last_phase_is_scored_without_training_it_again(tmp_path, tiny,
                                                                                monkeypatch):
    import training.finetune as finetune

    config = FinetuneConfig(model=tiny["model"], data_dir=tiny["data_dir"], mode="linear",
                            labels_per_class="10", robustness=False, out=str(tmp_path), **{
                                k: v for k, v in TINY.items() if k != "dataset"})
    splits = load_splits(config)
    real = {name: getattr(finetune, name) for name in ("_fit", "save_model", "predict_labels")}
    fits, kill_in = [], {"save_model", "predict_labels"}

    def once_killed(name):
        def call(*args, **kwargs):
            if name == "_fit":
                fits.append(args[4])  # (model, train, val, config, phase, ...)
            elif name in kill_in:
                kill_in.discard(name)
                raise Killed
            return real[name](*args, **kwargs)
        return call

    for name in real:
        monkeypatch.setattr(finetune, name, once_killed(name))
    log = tmp_path / "seeds" / "seed-0" / "history-linear.csv"
    # Killed after fit, before the phase's model was saved: Keras had dropped the backup, so the
    # phase trains again, and its log starts afresh rather than appending to the first try's.
    with pytest.raises(Killed):
        train_seed(config, splits, seed=0, run_dir=tmp_path, jit=False)
    with pytest.raises(Killed):  # then killed while scoring the saved model
        train_seed(config, splits, seed=0, run_dir=tmp_path, jit=False)
    assert fits == ["linear", "linear"] and len(log.read_text().splitlines()) == 1 + 2  # header, epochs
    metrics = train_seed(config, splits, seed=0, run_dir=tmp_path, jit=False)
    assert fits == ["linear", "linear"]  # scored from the saved model, not trained a third time
    assert metrics["epochs_run"] == {"linear": 2} and len(log.read_text().splitlines()) == 1 + 2


@pytest.mark.slow
def test_run_folder_layout_and_resume(tmp_path, tiny, monkeypatch):
    config = FinetuneConfig(model=tiny["model"], data_dir=tiny["data_dir"], mode="finetune",
                            labels_per_class="20", out=str(tmp_path / "run"),
                            **{**TINY, "seeds": 2})
    pretrained = _encoder_weights(tiny["model"])
    fits = _record_fits(monkeypatch)
    metrics = run(config)
    run_dir = tmp_path / "run"
    # Each seed trains the head on the frozen encoder, then everything.
    assert [fit[:2] for fit in fits] == [(0, "head"), (0, "all"), (1, "head"), (1, "all")]
    for seed in (0, 1):
        _check_modes_freeze_or_train_the_encoder([f for f in fits if f[0] == seed], "finetune", pretrained,
                                                 run_dir / "seeds" / f"seed-{seed}" / "model.keras")
    assert metrics["labelled_images"] == 80  # 4 classes present x 20
    assert all(_unchanged(_encoder_weights(tiny["model"]), pretrained))  # the DAE file is untouched
    for name in ("config.json", "model.keras", "metrics.json", "history.csv", "confusion.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "logs").is_dir()
    assert metrics["seeds"] == [0, 1] and len(metrics["test_accuracy"]["per_seed"]) == 2
    per_seed = metrics["test_accuracy"]["per_seed"]
    assert metrics["test_accuracy"]["mean"] == pytest.approx(np.mean(per_seed), abs=1e-5)
    assert metrics["test_accuracy"]["std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-5)
    assert set(metrics["robustness"]) == {"clean", "gaussian:0.1", "gaussian:0.3", "gaussian:0.5",
                                          "salt_pepper:0.1", "salt_pepper:0.3", "salt_pepper:0.5",
                                          "masking:0.25", "masking:0.5"}
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("seed,phase,epoch")
    # Epochs and training time per seed come from the phases' CSV logs (they survive a restart).
    seed0 = json.loads((run_dir / "seeds" / "seed-0" / "metrics.json").read_text())
    for phase in ("head", "all"):
        logged = read_history(run_dir / "seeds" / "seed-0" / f"history-{phase}.csv")
        assert seed0["epochs_run"][phase] == len(logged["loss"]) == len(logged["epoch_seconds"])
    assert seed0["train_seconds"] > 0
    assert {line.split(",")[:2][1] for line in history[1:]} == {"head", "all"}
    # The top-level model is the best-validation seed, and loads through the registry.
    best = metrics["best_seed"]
    seed_metrics = json.loads((run_dir / "seeds" / f"seed-{best}" / "metrics.json").read_text())
    assert seed_metrics["val_accuracy"] == max(metrics["val_accuracy"]["per_seed"])
    splits = load_splits(config)
    reloaded = load_model(run_dir)
    acc = np.mean(np.argmax(reloaded.predict(splits.x_test, verbose=0), -1) == splits.y_test)
    assert acc == pytest.approx(seed_metrics["test_accuracy"])
    # Restarted with the same command: finished seeds are not trained again.
    stamp = (run_dir / "seeds" / "seed-0" / "model.keras").stat().st_mtime_ns
    assert run(config)["test_accuracy"] == metrics["test_accuracy"]
    assert (run_dir / "seeds" / "seed-0" / "model.keras").stat().st_mtime_ns == stamp
    assert len(fits) == 4
    # Another config in the same folder is refused rather than mixed in.
    with pytest.raises(ValueError, match="holds a run with a different config"):
        run(FinetuneConfig(**{**config.__dict__, "mode": "linear"}))


@pytest.mark.slow
def test_grid_writes_table_and_plot_and_skips_finished_cells(tmp_path, tiny, monkeypatch):
    base = FinetuneConfig(model=tiny["model"], data_dir=tiny["data_dir"], **TINY)
    grid = GridConfig(labels=("5",), modes=("scratch", "linear"), out=str(tmp_path / "grid"))
    pretrained = _encoder_weights(tiny["model"])
    fits = _record_fits(monkeypatch)
    results = run_grid(grid, base)
    assert set(results) == {("5", "scratch"), ("5", "linear")}
    assert [phase for _, phase, _, _ in fits] == ["scratch", "linear"]
    for mode in ("scratch", "linear"):
        assert results[("5", mode)]["labelled_images"] == 20  # 4 classes present x 5
        _check_modes_freeze_or_train_the_encoder(
            [f for f in fits if f[1] == mode], mode, pretrained,
            tmp_path / "grid" / f"{mode}-k5" / "seeds" / "seed-0" / "model.keras")
    assert all(_unchanged(_encoder_weights(tiny["model"]), pretrained))  # the DAE file is untouched
    report = (tmp_path / "grid" / "results.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 5 |"))
    scratch, linear = (results[("5", m)]["test_accuracy"] for m in ("scratch", "linear"))
    assert f"{100 * scratch['mean']:.2f} ± {100 * scratch['std']:.2f}" in row
    assert f"{100 * (linear['mean'] - scratch['mean']):+.2f}" in row
    assert "| masking:0.5 |" in report
    assert (tmp_path / "grid" / "robustness.png").stat().st_size > 10_000
    stamp = (tmp_path / "grid" / "linear-k5" / "metrics.json").stat().st_mtime_ns
    assert run_grid(grid, base) == results
    assert len(fits) == 2  # finished cells are not trained again
    assert (tmp_path / "grid" / "linear-k5" / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST files missing (make setup)")
def test_short_real_finetune_beats_chance_by_far(tmp_path):
    # The bundled pretrained DAE, 50 labels per class of real Fashion-MNIST, a few hundred steps.
    config = FinetuneConfig(model="fashion-mnist", mode="finetune", labels_per_class="50", seeds=1,
                            epochs=2, head_epochs=2, min_steps_per_epoch=25, test_images=1000,
                            val_fraction=0.02, stats_images=1000, robustness=False,
                            out=str(tmp_path / "run"))
    metrics = run(config)
    assert metrics["labelled_images"] == 500
    assert metrics["test_accuracy"]["mean"] > 0.5  # chance is 0.1
