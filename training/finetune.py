"""Fine-tuning: a classifier built around a pretrained DAE encoder, trained on few labels.

    python -m training.finetune --model fashion-mnist --dataset fashion_mnist \\
        --mode finetune --labels-per-class 100 --seeds 3 --out runs/finetune/finetune-k100

Modes: ``linear`` (encoder frozen: a linear probe on its features), ``finetune`` (the head
first with the encoder frozen, then everything at a lower learning rate), ``scratch`` (the
same architecture from random weights: the control). ``--labels-per-class K`` draws a
class-balanced labelled subset of the training split with each seed (``all`` uses every
label); ``--seeds N`` repeats the run with seeds ``seed .. seed+N-1`` (subset and
initialisation) and reports the mean ± std.

A run writes its folder: ``config.json``; ``pretrained.json`` (the ``--model`` file and its
sha256); ``metrics.json`` (test accuracy mean ± std over seeds, per seed, and under every
corruption of ``data.corruption.BENCHMARK_SETTINGS``); ``model.keras``, ``confusion.png`` (the
seed with the best *validation* accuracy); ``history.csv`` (every seed and phase); TensorBoard
``logs/``; and ``seeds/seed-N/`` with each seed's model and metrics. The validation split is
held out of the training split (``data.datasets.split_validation``); the test split is only
touched for the final scores. A killed run restarted with the same command skips finished
seeds, keeps every finished phase (the head's, or a last phase killed while being scored),
and resumes the current phase from its last epoch (``keras.callbacks.BackupAndRestore``); it is
refused if the ``--model`` file has changed since the run began.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import sys
import types
from dataclasses import field
from pathlib import Path

import numpy as np

from data.corruption import BENCHMARK_SETTINGS
from data.datasets import SOURCES, DatasetNotFoundError
from data.images import atomic_write_bytes, atomic_write_json
from models.registry import ModelNotFoundError, save_model
from training.cli import parse_config
from training.history import (
    early_stopping,
    epoch_timer,
    epochs_to_run,
    mark_fit_ended,
    read_history,
    recover_backup,
    remove_backup,
    resumed_epoch,
)
from training.pretrain import PretrainConfig, adam

MODES = ("linear", "finetune", "scratch")
_PRETRAIN = {f.name: f for f in dataclasses.fields(PretrainConfig)}


def parse_labels_per_class(text: str) -> int | None:
    """``"all"`` -> ``None``; a positive integer string -> that integer."""
    if str(text).strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--labels-per-class must be a positive integer or 'all', got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run depends on; saved as the run's ``config.json``."""

    model: str = field(default="fashion-mnist", metadata={
        "help": "pretrained DAE: a bundled name, a pretraining run folder or a .keras file"})
    dataset: str = field(default="fashion_mnist", metadata={
        "choices": tuple(SOURCES), "help": "labelled dataset (its original files, see --data-dir)"})
    data_dir: str | None = field(default=None, metadata={
        "help": "folder with the dataset's original files (default: env var, usual places)"})
    mode: str = field(default="finetune", metadata={
        "choices": MODES,
        "help": "linear: encoder frozen; finetune: head, then everything; scratch: random init"})
    labels_per_class: str = field(default="100", metadata={
        "help": "labelled training images per class (class-balanced, seeded), or 'all'"})
    seeds: int = field(default=3, metadata={"help": "repeats with seeds seed..seed+N-1; mean ± std"})
    seed: int = field(default=0, metadata={"help": "first seed; also fixes the validation split"})
    epochs: int = field(default=30, metadata={
        "help": "most epochs of the main phase (early stopping on validation accuracy ends sooner)"})
    head_epochs: int = field(default=5, metadata={
        "help": "finetune mode: epochs training the head alone before unfreezing the encoder"})
    min_steps_per_epoch: int = field(default=50, metadata={
        "help": "small labelled sets are repeated so that an epoch has at least this many steps"})
    max_steps_per_epoch: int = field(default=0, metadata={
        "help": "cap on steps per epoch (0 = a full pass): with all labels, epochs then become "
                "shorter rounds between validations and early-stopping checks"})
    batch_size: int = field(default=64, metadata={"help": "batch size (64 suits a small CPU)"})
    head_learning_rate: float = field(default=1e-2, metadata={
        "help": "Adam learning rate of the linear probe and of the head phase (a softmax layer "
                "on standardised features takes a large one)"})
    learning_rate: float = field(default=1e-3, metadata={
        "help": "Adam learning rate of scratch training (the usual one for a small CNN)"})
    finetune_learning_rate: float = field(default=1e-4, metadata={
        "help": "Adam learning rate once the encoder is unfrozen: 10x lower, to keep its features"})
    pooling: str = field(default="avg", metadata={
        "choices": ("avg", "max", "flatten"),
        "help": "how the code map becomes a vector: global average, global max or flattened"})
    dropout: float = field(default=0.3, metadata={"help": "dropout before the softmax layer"})
    stats_images: int = field(default=5000, metadata={
        "help": "unlabelled training images whose pooled features set the standardisation"})
    val_fraction: float = field(default=0.1, metadata={
        "help": "share of the training split held out for validation (early stopping)"})
    patience: int = field(default=5, metadata={
        "help": "early-stopping patience in epochs; 0 = none (every epoch runs)"})
    test_images: int = field(default=0, metadata={
        "help": "score only the first N test images (0 = the whole test split)"})
    robustness: bool = field(default=True, metadata={
        "help": "also score the test split under each corruption of the benchmark grid"})
    # Same choices and meaning as pretraining (training.pretrain.configure_devices reads them).
    mixed_precision: str = field(default="auto", metadata=_PRETRAIN["mixed_precision"].metadata)
    jit: str = field(default="auto", metadata=_PRETRAIN["jit"].metadata)
    out: str = field(default="runs/finetune", metadata={"help": "run folder"})

    def __post_init__(self):
        parse_labels_per_class(self.labels_per_class)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.max_steps_per_epoch < 0:
            raise ValueError(f"--max-steps-per-epoch must be >= 0, got {self.max_steps_per_epoch}")
        for name in ("seeds", "epochs", "batch_size", "min_steps_per_epoch", "stats_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("patience", "test_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 = "
                                 f"{'no early stopping' if name == 'patience' else 'all'}), "
                                 f"got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.mode == "finetune" and self.head_epochs < 1:
            raise ValueError(f"--head-epochs must be >= 1 in finetune mode, got {self.head_epochs}")

    @property
    def per_class(self) -> int | None:
        """Labelled images per class, ``None`` for all."""
        return parse_labels_per_class(self.labels_per_class)


def labelled_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of a class-balanced labelled subset: ``per_class`` of every class, seeded.

    Args:
        labels: integer labels of the pool to draw from.
        per_class: images per class, or ``None`` for every index.
        seed: the same seed gives the same subset.

    Returns:
        Sorted int indices into ``labels``.
    """
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picks = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(f"class {label} has {len(members)} training images; "
                             f"--labels-per-class {per_class} needs that many in every class")
        picks.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


@dataclasses.dataclass(frozen=True)
class Splits:
    """Float images in ``[0, 1]`` and labels: the labelled pool, validation and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def load_splits(config: FinetuneConfig) -> Splits:
    """The dataset's train split minus a validation share, and its (optionally cut) test split."""
    from data.datasets import load_named, split_validation
    from data.images import to_model

    data = load_named(config.dataset, config.data_dir)
    x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train,
                                                      config.val_fraction, config.seed)
    n_test = config.test_images or len(data.x_test)
    # load_named refuses a label that is not an index of data.class_names: K names, a K-way head
    return Splits(to_model(x_train), y_train, to_model(x_val), y_val,
                  to_model(data.x_test[:n_test]), data.y_test[:n_test], data.class_names)


def predict_labels(model, images: np.ndarray) -> np.ndarray:
    """Arg-max class of each image."""
    return np.argmax(model.predict(images, batch_size=256, verbose=0), axis=-1)


def robustness(model, x: np.ndarray, y: np.ndarray, settings=BENCHMARK_SETTINGS, seed: int = 0) -> dict:
    """Accuracy on clean images and under each ``(corruption, level)`` setting.

    Every model scored with the same ``seed`` sees the very same corrupted images.

    Returns:
        ``{"clean": acc, "gaussian:0.1": acc, ...}``.
    """
    from data.corruption import corrupt

    scores = {"clean": float(np.mean(predict_labels(model, x) == y))}
    for name, level in settings:
        noisy = corrupt(x, name, level, seed)
        scores[f"{name}:{level:g}"] = float(np.mean(predict_labels(model, noisy) == y))
    return scores


def _phase_files(seed_dir: Path, phase: str) -> tuple[Path, Path]:
    """A phase's ``BackupAndRestore`` folder and its ``CSVLogger`` file."""
    return seed_dir / f"backup-{phase}", seed_dir / f"history-{phase}.csv"


def _callbacks(seed_dir: Path, log_dir: Path, phase: str, patience: int) -> list:
    import keras

    backup, history = _phase_files(seed_dir, phase)
    return [
        # A resumed phase keeps its best epoch so far (read from the backup's metadata and the
        # CSV log, not from the other callbacks, so it need not come after the backup).
        *([early_stopping(backup, history, monitor="val_accuracy", mode="max", patience=patience)]
          if patience else []),
        keras.callbacks.TerminateOnNaN(),
        epoch_timer(),  # before CSVLogger, so that the phase's history keeps every epoch's time
        # Before the backup: a phase killed between the two logs an epoch twice (read_history
        # and _merge_histories keep the last), never not at all, as one killed in the slow
        # checkpoint save below would if the backup came first.
        keras.callbacks.CSVLogger(str(history), append=True),
        # Two copies (a kill while one is written leaves the other), removed by train_seed once
        # the phase's model is saved, not by Keras as the phase ends (a kill then could leave
        # half of it, and a kill before that saving would train the phase again).
        keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(seed_dir / "checkpoint.keras")),
        keras.callbacks.TensorBoard(str(log_dir / f"{seed_dir.name}-{phase}")),
    ]


def steps_per_epoch(labelled: int, config: FinetuneConfig) -> int:
    """A full pass over the labelled images, at least ``min_steps_per_epoch`` and at most
    ``max_steps_per_epoch`` (when set); the training data repeat, so any count works."""
    steps = max(math.ceil(labelled / config.batch_size), config.min_steps_per_epoch)
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


def _fit(model, splits_train, val, config: FinetuneConfig, phase: str, epochs: int, lr: float,
         seed: int, seed_dir: Path, log_dir: Path, jit: bool):
    import keras
    import tensorflow as tf

    from data.pipeline import epoch_seed

    x, y = splits_train
    steps = steps_per_epoch(len(x), config)
    backup, history = _phase_files(seed_dir, phase)
    recover_backup(backup)
    resumed = resumed_epoch(backup)
    # A phase whose fit had ended when the run was killed (before its model was saved) trains
    # no epoch again: the fit restores the backup and the best weights.
    epochs = epochs_to_run(backup, epochs)
    if not resumed:  # a fresh start: no rows of an earlier try at this phase, which CSVLogger appends to
        history.unlink(missing_ok=True)
    # A resumed phase goes on with new shuffles, not those of its first epochs again.
    shuffle_seed = epoch_seed(seed, resumed)
    train_ds = (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True).repeat()
                .batch(config.batch_size).prefetch(tf.data.AUTOTUNE))
    model.compile(optimizer=adam(lr), jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    model.fit(train_ds, steps_per_epoch=steps, epochs=epochs, validation_data=val,
              callbacks=_callbacks(seed_dir, log_dir, phase, config.patience),
              shuffle=False,  # the tf.data pipeline shuffles; fit's flag would only warn
              verbose="auto" if sys.stdout.isatty() else 2)
    mark_fit_ended(backup)
    return read_history(history)


def build_classifier(config: FinetuneConfig, num_classes: int, image_size):
    """The classifier of ``config.mode`` around the encoder of ``config.model``."""
    from models.encoder_classifier import EncoderClassifier, code_encoder
    from models.registry import load_model

    encoder = code_encoder(load_model(config.model), pretrained=config.mode != "scratch")
    channels = encoder.inputs[0].shape[-1]
    return EncoderClassifier(encoder, num_classes, pooling=config.pooling, dropout=config.dropout,
                             freeze_encoder=config.mode in ("linear", "finetune"),
                             image_size=image_size, name="encoder_classifier"), channels


def phases(config: FinetuneConfig) -> list[tuple[str, int, float]]:
    """``(name, most epochs, learning rate)`` of each training phase of ``config.mode``, in order."""
    if config.mode == "finetune":
        return [("head", config.head_epochs, config.head_learning_rate),
                ("all", config.epochs, config.finetune_learning_rate)]
    lr = config.head_learning_rate if config.mode == "linear" else config.learning_rate
    return [(config.mode, config.epochs, lr)]


def train_seed(config: FinetuneConfig, splits: Splits, seed: int, run_dir: Path, jit: bool) -> dict:
    """Trains and scores one seed; writes ``seeds/seed-N/`` (model, histories, metrics)."""
    import keras

    seed_dir = run_dir / "seeds" / f"seed-{seed}"
    if (seed_dir / "metrics.json").is_file():  # finished before a restart
        return json.loads((seed_dir / "metrics.json").read_text())
    seed_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    pick = labelled_subset(splits.y_train, config.per_class, seed)
    train = (splits.x_train[pick], splits.y_train[pick])
    val = (splits.x_val, splits.y_val)
    model, channels = build_classifier(config, len(splits.class_names), splits.x_train.shape[1:3])
    if channels != splits.x_train.shape[-1]:
        raise ValueError(f"model {config.model!r} takes {channels}-channel images; "
                         f"{config.dataset} has {splits.x_train.shape[-1]}")
    model.adapt(splits.x_train[: config.stats_images])  # unlabelled: the DAE saw them too
    histories = {}  # phase -> every epoch of it, also those before a restart
    common = dict(seed=seed, seed_dir=seed_dir, log_dir=run_dir / "logs", jit=jit)
    plan = phases(config)
    for phase, epochs, lr in plan:
        # A phase's model is saved whole as it ends (save_model renames a finished file into
        # place, so the file marks the phase done), and only then does its backup go: a run
        # killed later (while fine-tuning everything, saving, scoring) takes the model up. The
        # last phase's is the seed's model.
        done = seed_dir / ("model.keras" if phase == plan[-1][0] else f"{phase}.keras")
        backup, history = _phase_files(seed_dir, phase)
        if done.is_file():
            remove_backup(backup)  # a kill may have come in between
            model = keras.saving.load_model(done, compile=False)
            histories[phase] = read_history(history)
            continue
        if phase == "all":
            model = model.with_frozen_encoder(False)
        histories[phase] = _fit(model, train, val, config, phase, epochs, lr, **common)
        save_model(model, done)
        remove_backup(backup)
    (seed_dir / "checkpoint.keras").unlink(missing_ok=True)
    y_pred = predict_labels(model, splits.x_test)
    np.save(seed_dir / "test_predictions.npy", y_pred)
    metrics = {
        "seed": seed,
        "labelled_images": int(len(pick)),
        "epochs_run": {phase: len(h.get("loss", [])) for phase, h in histories.items()},
        "train_seconds": round(sum(sum(h.get("epoch_seconds", [])) for h in histories.values()), 1),
        "val_accuracy": float(np.mean(predict_labels(model, splits.x_val) == splits.y_val)),
        "test_accuracy": float(np.mean(y_pred == splits.y_test)),
    }
    if config.robustness:
        metrics["robustness"] = robustness(model, splits.x_test, splits.y_test, seed=config.seed)
    # Last, whole or not at all: it marks the seed done for a restarted run.
    atomic_write_json(seed_dir / "metrics.json", metrics)
    for phase, _, _ in plan[:-1]:
        (seed_dir / f"{phase}.keras").unlink(missing_ok=True)
    return metrics


def mean_std(values) -> dict:
    """``{"mean", "std", "per_seed"}``; std is the sample std (0 for a single seed)."""
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": round(float(np.mean(values)), 5), "std": round(std, 5),
            "per_seed": [round(v, 5) for v in values]}


def save_confusion(path: Path, y_true, y_pred, class_names, title: str) -> None:
    """The confusion matrix of the test split as a picture (scikit-learn's display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(class_names))), display_labels=list(class_names),
        ax=ax, colorbar=False, xticks_rotation="vertical", values_format="d")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _merge_histories(run_dir: Path, seeds: list[int]) -> None:
    rows = []
    for seed in seeds:
        for path in sorted((run_dir / "seeds" / f"seed-{seed}").glob("history-*.csv")):
            phase = path.stem.removeprefix("history-")
            with path.open(newline="") as fh:
                # An epoch logged twice (a phase killed between its CSV row and its backup, then
                # resumed) counts once, with its last values, as in read_history.
                logged = {row["epoch"]: row for row in csv.DictReader(fh)}
            rows += [{"seed": seed, "phase": phase, **row} for row in logged.values()]
    if rows:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with (run_dir / "history.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


def summarize(config: FinetuneConfig, splits: Splits, run_dir: Path, per_seed: list[dict]) -> dict:
    """Aggregates the seeds into ``metrics.json``; copies the best-validation seed's model."""
    best = max(per_seed, key=lambda m: m["val_accuracy"])
    best_dir = run_dir / "seeds" / f"seed-{best['seed']}"
    atomic_write_bytes(run_dir / "model.keras", (best_dir / "model.keras").read_bytes())
    metrics = {
        "mode": config.mode,
        "labels_per_class": config.labels_per_class,
        "labelled_images": per_seed[0]["labelled_images"],
        "seeds": [m["seed"] for m in per_seed],
        "best_seed": best["seed"],
        "test_images": int(len(splits.y_test)),
        "test_accuracy": mean_std(m["test_accuracy"] for m in per_seed),
        "val_accuracy": mean_std(m["val_accuracy"] for m in per_seed),
        "train_seconds": mean_std(m["train_seconds"] for m in per_seed),
    }
    if config.robustness:
        settings = per_seed[0]["robustness"]
        metrics["robustness"] = {s: mean_std(m["robustness"][s] for m in per_seed) for s in settings}
    y_pred = np.load(best_dir / "test_predictions.npy")
    acc = metrics["test_accuracy"]
    save_confusion(run_dir / "confusion.png", splits.y_test, y_pred, splits.class_names,
                   f"{config.mode}, K={config.labels_per_class}, seed {best['seed']}: test accuracy "
                   f"{best['test_accuracy']:.3f} (all seeds {acc['mean']:.3f} ± {acc['std']:.3f})")
    _merge_histories(run_dir, metrics["seeds"])
    # Last, and whole: finetune_grid takes a run with metrics.json for a finished one.
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def pretrained_record(config: FinetuneConfig) -> dict:
    """The ``--model`` file of ``config`` and its sha256, as the run folder's ``pretrained.json``
    records it.

    Raises:
        ValueError: ``config.out`` holds a run (finished or not) that started from another
            version of the model: a file of other content under the same name or path. A run
            without ``pretrained.json`` (from before it was written) is not refused.
    """
    from models.registry import model_sha256, resolve_model_path

    path = resolve_model_path(config.model)  # a wrong --model fails before the data are read
    record = {"model": config.model, "file": str(path.resolve()), "sha256": model_sha256(path)}
    saved_path = Path(config.out) / "pretrained.json"
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text()).get("sha256")
        if saved not in (None, record["sha256"]):
            raise ValueError(f"{config.out} holds a run from another version of --model "
                             f"{config.model} (sha256 {saved[:12]}, now {record['sha256'][:12]}: "
                             "the model file changed since); use a new --out to start a run from "
                             "this one")
    return record


def run(config: FinetuneConfig) -> dict:
    """Runs every seed of a fine-tuning config and writes the run folder. Returns its metrics."""
    from training.pretrain import configure_devices, prepare_run_dir

    pretrained = pretrained_record(config)
    devices = types.SimpleNamespace(distribute="none", cpu_devices=0,
                                    mixed_precision=config.mixed_precision, jit=config.jit)
    _, jit = configure_devices(devices)
    splits = load_splits(config)
    run_dir = Path(config.out)
    fresh = not run_dir.exists()
    prepare_run_dir(config, run_dir)
    # Recorded before any seed trains: a run that older code began has no record, and gets none,
    # since what it started from is not known.
    if not (run_dir / "seeds").exists():
        atomic_write_json(run_dir / "pretrained.json", pretrained)
    seeds = list(range(config.seed, config.seed + config.seeds))
    try:
        per_seed = [train_seed(config, splits, seed, run_dir, jit) for seed in seeds]
    except ValueError:
        # Refused before any training (too few labels, a model of other channels): the folder
        # this command made goes, so the corrected command is not refused as another config.
        if fresh and not any(run_dir.rglob("history-*.csv")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return summarize(config, splits, run_dir, per_seed)


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.finetune --help``."""
    config = parse_config(FinetuneConfig, __doc__.split("\n\n")[0], argv)
    try:
        metrics = run(config)
    except (DatasetNotFoundError, ModelNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    acc = metrics["test_accuracy"]
    print(f"{config.mode}, {config.labels_per_class} labels per class, {len(acc['per_seed'])} seed(s): "
          f"test accuracy {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} %")
    for setting, score in metrics.get("robustness", {}).items():
        print(f"{setting:>18}: {100 * score['mean']:6.2f} ± {100 * score['std']:.2f} %")
    print(f"run folder: {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
