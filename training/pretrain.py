"""Pretraining: a conv DAE learns to map x̃ ~ C(x̃ | x) back to x.

    python -m training.pretrain --dataset fashion_mnist \\
        --corruption gaussian:0.05-0.5 --corruption salt_pepper:0.05-0.5 \\
        --corruption masking:0.1-0.6 --epochs 20 --out runs/fmnist-blind

A run writes its folder: ``config.json``, ``model.keras``, ``metrics.json``, ``history.csv``,
TensorBoard ``logs/``, ``samples.png``. A killed run restarted with the same command resumes
from its last finished epoch (``keras.callbacks.BackupAndRestore``), and so does a run that
stopped at its ``--time-limit`` (it keeps ``backup/`` for that; the restart may change
``--time-limit`` and ``--jit``); a finished run is refused, not trained again.

On a GPU it uses mixed precision and XLA; with several GPUs ``tf.distribute.MirroredStrategy``;
with ``TF_CONFIG`` set, ``MultiWorkerMirroredStrategy`` across machines (XLA off under either:
it cannot compile a replicated step).

With ``KERAS_BACKEND=jax`` the same command trains on one accelerator that has JAX but no
TensorFlow GPU build: the batches come from :class:`data.pipeline.DenoisingBatches`, with the
same corruption code, and the run folder is the same (less the TensorBoard logs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from dataclasses import field
from pathlib import Path

import numpy as np

from data.corruption import BENCHMARK_SETTINGS, CorruptionSpec
from data.datasets import DatasetNotFoundError, load_dataset, split_validation
from data.images import atomic_write_json
from models.registry import ModelNotFoundError, gpu_devices, save_model
from training.cli import check_out_folder, config_differences, finished_run_config, parse_config, save_config
from training.distribute import patch_keras_for_multi_worker
from training.history import (
    FIT_ENDED,
    clear_removed_backup,
    early_stopping,
    epoch_timer,
    epochs_to_run,
    mark_fit_ended,
    read_history,
    recover_backup,
    remove_backup,
    resumed_epoch,
)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run depends on; saved as the run's ``config.json``."""

    dataset: str = field(default="fashion_mnist", metadata={
        "help": "mnist, fashion_mnist, cifar10, cifar100 or folder:PATH (any image folder)"})
    data_dir: str | None = field(default=None, metadata={
        "help": "folder with the dataset's original files (default: env var, usual places)"})
    corruptions: tuple[str, ...] = field(
        # Blind over all three processes and a wide range: one model for every strength.
        default=("gaussian:0.05-0.5", "salt_pepper:0.05-0.5", "masking:0.1-0.6"),
        metadata={"flag": "corruption",
                  "help": "NAME:LEVEL or NAME:LOW-HIGH; one drawn per image, all with equal odds "
                          "(list a corruption twice, or split its range, for a larger share)"})
    epochs: int = field(default=20, metadata={"help": "training epochs (early stopping may end sooner)"})
    batch_size: int = field(default=64, metadata={
        "help": "global batch size; 64 trades speed for enough updates on a 2-core CPU"})
    learning_rate: float = field(default=2e-3, metadata={
        "help": "peak Adam learning rate, cosine-decayed to zero over the run"})
    warmup_epochs: float = field(default=0.0, metadata={
        "help": "epochs of linear learning-rate warm-up from zero before the cosine decay; "
                "steadies --init-from runs, where a fresh Adam's first steps move every weight "
                "by about the learning rate"})
    widths: tuple[int, ...] = field(default=(32, 64), metadata={
        "help": "filters per resolution level; the count is the depth (28x28 -> 7x7 with 2)"})
    bottleneck: int = field(default=128, metadata={"help": "channels of the code h = f(x̃)"})
    skips: bool = field(default=True, metadata={"help": "U-Net skip connections (sharper output)"})
    residual: bool = field(default=True, metadata={
        "help": "decoder predicts the correction r(x̃) - x̃ (gaussian decoder only)"})
    distribution: str = field(default="gaussian", metadata={
        "choices": ("gaussian", "bernoulli"),
        "help": "decoder output distribution: gaussian = squared error, bernoulli = cross-entropy"})
    variance: str = field(default="fixed", metadata={
        "choices": ("fixed", "per_image"),
        "help": "the gaussian decoder's variance: fixed (loss = squared error, dominated by the "
                "noisiest images) or per_image, fitted to each image (loss = mean log squared "
                "error per image: every image counts alike, as in the benchmark's mean PSNR)"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of train held out for validation"})
    limit: int = field(default=0, metadata={"help": "use only this many training images (0 = all)"})
    patience: int = field(default=5, metadata={
        "help": "early-stopping patience in epochs; 0 = none: every epoch runs, so the learning "
                "rate ends at zero (on a fast accelerator a noisy validation loss can otherwise "
                "stop a long run early)"})
    seed: int = field(default=0, metadata={"help": "seeds splits, shuffling, corruption and init"})
    channels: int = field(default=0, metadata={
        "help": "1 or 3 for folder datasets (0 = the dataset's own; folders default to 3)"})
    patch_size: int = field(default=64, metadata={"help": "patch side for folder datasets"})
    patches: int = field(default=20000, metadata={"help": "training patches cut from a folder"})
    time_limit: float = field(default=0.0, metadata={
        "help": "minutes of training at most (0 = no limit): stops after the last epoch that "
                "fits, judged by the longest so far, and saves the model as usual"})
    eval_images: int = field(default=1000, metadata={"help": "validation images scored in metrics.json"})
    init_from: str = field(default="", metadata={
        "help": "start from this model's weights (a bundled name, run folder or .keras file of the "
                "same architecture, or a narrower one: wider --widths/--bottleneck widen it without "
                "changing what it computes) instead of random ones: fine-tune it on your data"})
    distribute: str = field(default="auto", metadata={
        "choices": ("auto", "none", "mirrored", "multiworker"),
        "help": "auto: multiworker if TF_CONFIG is set, mirrored on >1 GPU (or >1 --cpu-devices "
                "without a GPU), else none"})
    cpu_devices: int = field(default=0, metadata={
        "help": "split the CPU into this many logical devices (to exercise mirrored on a CPU; "
                "--distribute auto then mirrors over them)"})
    mixed_precision: str = field(default="auto", metadata={
        "choices": ("auto", "float16", "bfloat16", "off"),
        "help": "16-bit compute, float32 weights: auto = float16 on a GPU, off on a CPU; bfloat16 "
                "pays off on CPUs with AVX-512 BF16 or AMX (training.bench_train: 1.7x here)"})
    jit: str = field(default="auto", metadata={
        "choices": ("auto", "on", "off"),
        "help": "XLA compilation; auto = on with one GPU, off on a CPU and under tf.distribute"})
    out: str = field(default="runs/dae", metadata={"help": "run folder"})

    def __post_init__(self):
        for text in self.corruptions:
            CorruptionSpec.parse(text)
        if not self.corruptions:
            raise ValueError("at least one --corruption is needed")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup-epochs must be in [0, --epochs), got {self.warmup_epochs}")
        if self.patience < 0:
            raise ValueError(f"--patience must be >= 0 epochs (0 = no early stopping), got {self.patience}")
        if self.time_limit < 0:
            raise ValueError(f"--time-limit must be >= 0 minutes, got {self.time_limit}")
        if self.eval_images < 1:  # metrics.json scores them after training: refused before it
            raise ValueError(f"--eval-images must be >= 1, got {self.eval_images}")
        if not self.learning_rate >= 0:  # 0 freezes the weights (the tests use it); < 0 ascends
            raise ValueError(f"--learning-rate must be >= 0, got {self.learning_rate}")
        if self.limit < 0:
            raise ValueError(f"--limit must be >= 0 (0 = every training image), got {self.limit}")
        if self.patch_size < 1 or self.patches < 1:
            raise ValueError("--patch-size and --patches must be >= 1, "
                             f"got {self.patch_size}, {self.patches}")
        if self.variance != "fixed" and self.distribution != "gaussian":
            raise ValueError(f"--variance {self.variance} needs the gaussian decoder "
                             f"(got --distribution {self.distribution})")
        if self.channels not in (0, 1, 3):
            raise ValueError(f"--channels must be 0 (the dataset's own), 1 or 3, got {self.channels}")
        # The model's own checks, here so that a bad architecture is refused before the dataset
        # loads and before the run folder is written.
        from models.conv_dae import check_arguments

        try:
            check_arguments(channels=self.channels or 1, **model_kwargs(self))
        except ValueError as err:
            raise ValueError("the model cannot be built as asked (--widths, --bottleneck, --skips, "
                             f"--residual, --distribution): {err}") from err

    @property
    def specs(self) -> list[CorruptionSpec]:
        return [CorruptionSpec.parse(text) for text in self.corruptions]


def model_kwargs(config) -> dict:
    """Constructor arguments of :class:`ConvDAE` from a config."""
    return dict(widths=config.widths, bottleneck=config.bottleneck, skips=config.skips,
                residual=config.residual and config.distribution == "gaussian",
                distribution=config.distribution)


def learning_rate_schedule(config, steps_per_epoch: int):
    """Cosine decay from ``learning_rate`` to zero over the run; with ``warmup_epochs``, a linear
    ramp from zero first and the decay over the steps that remain."""
    import keras

    total, warmup = config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    # At least one step of decay: a warm-up that rounds to the whole run would leave none.
    return keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warmup),
                                                  warmup_target=config.learning_rate, warmup_steps=warmup)


def adam(learning_rate):
    """Adam, wrapped in Keras's loss scaling under the ``mixed_float16`` policy.

    Keras wraps the optimizer itself only for a model whose own policy is ``mixed_float16``; a
    conv DAE's is float32 (its layers take the global policy, its output stays float32), so
    without this its float16 gradients, of a loss averaged over every pixel, underflow to zero
    in the deepest layers. bfloat16 has float32's range and needs no scaling."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate)
    if keras.config.dtype_policy().name == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_dae(config, channels: int, steps_per_epoch: int, jit: bool = False):
    """The conv DAE of ``config``, compiled as pretraining trains it: the decoder's negative
    log-likelihood, Adam with the learning rate cosine-decayed to zero over the run (after
    ``warmup_epochs`` of linear warm-up)."""
    from models.conv_dae import ConvDAE

    model = ConvDAE(channels=channels, name="conv_dae", **model_kwargs(config))
    schedule = learning_rate_schedule(config, steps_per_epoch)
    model.compile(optimizer=adam(schedule),
                  loss=model.loss_function(config.variance), jit_compile=jit)
    return model


class OneDevice:
    """The strategy stand-in on backends without ``tf.distribute``: one device, no-op scope."""

    num_replicas_in_sync = 1
    cluster_resolver = None

    def scope(self):
        return contextlib.nullcontext()


def _configure_jax(config):
    """``configure_devices`` for the JAX backend: one device, XLA always."""
    import jax
    import keras

    if config.distribute not in ("auto", "none") or config.cpu_devices > 1:
        raise ValueError("--distribute and --cpu-devices use tf.distribute: they need the "
                         "TensorFlow backend (unset KERAS_BACKEND)")
    if config.jit == "off":
        raise ValueError("--jit off: the JAX backend always compiles with XLA")
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bfloat16" if any(d.platform == "gpu" for d in jax.devices()) else "off"
    keras.config.set_dtype_policy("float32" if precision == "off" else f"mixed_{precision}")
    return OneDevice(), True


def initial_weights(name_or_path: str, config, channels: int) -> list:
    """The weights of the model ``--init-from`` names, fitted to ``config``'s network: as they
    are, or widened (:func:`models.conv_dae.widen`) when the run asks for more filters.

    Raises:
        ValueError: the architectures differ otherwise (the message names each setting that does).
    """
    from models.conv_dae import ConvDAE, widen
    from models.registry import load_model

    source = load_model(name_or_path)
    theirs = source.get_config()
    ours = {"channels": channels, **model_kwargs(config), "widths": list(config.widths)}
    differing = [key for key, value in ours.items() if theirs.get(key) != value]
    if not differing:
        return source.get_weights()
    if isinstance(source, ConvDAE) and set(differing) <= {"widths", "bottleneck"}:
        try:
            return widen(source, ConvDAE(**ours)).get_weights()
        except ValueError:
            pass  # narrower, or another depth: refused below
    diff = "; ".join(f"{key} {theirs.get(key)} vs {ours[key]}" for key in differing)
    raise ValueError(f"--init-from {name_or_path}: its architecture differs from this run's "
                     f"({diff}); pass the --widths, --bottleneck, ... it was trained with (its "
                     "card or config.json lists them), or more filters at the same depth to widen it")


def configure_devices(config):
    """Returns ``(strategy, use_xla)``; sets the dtype policy. Call before any TF op."""
    import keras

    if keras.backend.backend() == "jax":
        return _configure_jax(config)
    import tensorflow as tf

    if config.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices)
    gpus = tf.config.list_physical_devices("GPU")
    mode = config.distribute
    if mode == "auto":
        several = len(gpus) > 1 or (not gpus and config.cpu_devices > 1)
        mode = "multiworker" if os.environ.get("TF_CONFIG") else ("mirrored" if several else "none")
    if mode == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif mode == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.get_strategy()
    precision = config.mixed_precision
    if precision == "auto":
        precision = "float16" if gpus else "off"
    keras.config.set_dtype_policy("float32" if precision == "off" else f"mixed_{precision}")
    # XLA compiles the whole replicated step on one device, which cannot reach the variables of
    # the other replicas (TensorFlow's "resource ... located in device ... from device" error on
    # the first step); Keras's own jit_compile="auto" is off under tf.distribute for that reason.
    if config.jit == "on" and mode != "none":
        raise ValueError(f"--jit on cannot train with tf.distribute ({mode}: several devices or "
                         "TF_CONFIG): XLA compiles the step on one device and cannot reach the other "
                         "replicas' variables; use --jit auto (XLA off here) or --distribute none")
    jit = config.jit == "on" or (config.jit == "auto" and bool(gpus) and mode == "none")
    return strategy, jit


def is_multi_worker(strategy) -> bool:
    if isinstance(strategy, OneDevice):
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker job."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def worker_dir(run_dir: Path, strategy) -> Path:
    """Where this process writes: the run folder for the chief, a sub-folder for other workers."""
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return run_dir / "workers" / f"{resolver.task_type}{resolver.task_id}"


RESUME_MAY_CHANGE = ("time_limit", "jit")
"""Config fields that a run resumed in its folder may change: they bound the run or say how its
steps are compiled (XLA), not what the model is or learns."""


def prepare_run_dir(config, run_dir: Path) -> None:
    """Creates the run folder; refuses to mix two different configs in one folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a folder; give a folder for the run")
    check_out_folder(run_dir, what="the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {run_dir}: cannot make the run folder ({err.strerror or err})") from err
    path = run_dir / "config.json"
    if path.exists():
        diff = config_differences(json.loads(path.read_text()), config, ignore=RESUME_MAY_CHANGE)
        if diff:
            raise ValueError(f"{run_dir} holds a run with a different config (differs in: "
                             f"{', '.join(diff)}); use another --out to start a new run")
    save_config(config, path)


def train(config: PretrainConfig) -> dict:
    """Runs pretraining and writes the run folder. Returns the metrics written."""
    strategy, jit = configure_devices(config)
    import keras

    from data.pipeline import DenoisingBatches, augments, denoising_dataset

    keras.utils.set_random_seed(config.seed)
    data = load_dataset(config.dataset, config.data_dir, channels=config.channels,
                        patch_size=config.patch_size, patches=config.patches,
                        val_fraction=config.val_fraction, seed=config.seed)
    if data.y_train is None:  # folder: already split by image
        x_train, x_val = data.x_train, data.x_test
    else:
        x_train, _, x_val, _ = split_validation(data.x_train, data.y_train, config.val_fraction, config.seed)
    if config.limit:
        x_train = x_train[: config.limit]
    x_val = x_val[: max(config.eval_images, config.batch_size)]
    steps = len(x_train) // config.batch_size
    if steps < 1:
        raise ValueError(f"{len(x_train)} training images is fewer than one batch of {config.batch_size}")
    if len(x_val) < config.batch_size:  # validation keeps whole batches: none would be left
        raise ValueError(f"{len(x_val)} validation images is fewer than one batch of "
                         f"{config.batch_size}: raise --val-fraction (or --patches for a folder) "
                         "or lower --batch-size")
    stride = 2 ** len(config.widths)
    if x_train.shape[1] % stride or x_train.shape[2] % stride:
        raise ValueError(f"{x_train.shape[2]}x{x_train.shape[1]} images do not halve evenly "
                         f"{len(config.widths)} times (--widths gives {len(config.widths)} levels): "
                         f"their sides must be multiples of {stride}; use fewer --widths"
                         + (" or another --patch-size" if config.dataset.startswith("folder:") else ""))
    # Checked before the run folder is made: a wrong --init-from leaves nothing behind.
    initial = initial_weights(config.init_from, config, data.channels) if config.init_from else None
    out_dir = worker_dir(Path(config.out), strategy)
    clear_removed_backup(out_dir / "backup")
    if (out_dir / "metrics.json").is_file() and (out_dir / "backup" / FIT_ENDED).is_file():
        remove_backup(out_dir / "backup")  # scored, killed before its backup went: finished
    if finished_run_config(out_dir, config, ignore=RESUME_MAY_CHANGE) is not None:
        raise ValueError(f"{out_dir} holds this run, finished (metrics.json); to train it further, "
                         f"--init-from {out_dir} with another --out")
    prepare_run_dir(config, out_dir)
    name = "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else type(strategy).__name__
    print(f"{name}: {strategy.num_replicas_in_sync} replica(s); "
          f"{len(x_train)} training, {len(x_val)} validation images; dtype policy "
          f"{keras.config.dtype_policy().name}; XLA {'on' if jit else 'off'}", flush=True)

    augment = augments(config.dataset)
    specs = config.specs
    on_tensorflow = not isinstance(strategy, OneDevice)
    batches = denoising_dataset if on_tensorflow else DenoisingBatches
    # Threads that prepare the next batches on backends without tf.data (tf.data has its own).
    loader = {} if on_tensorflow else {"workers": min(8, os.cpu_count() or 1)}
    # A resumed run draws the order and noise of the epochs still to come, not the first ones again
    # (from the copy of the backup that Keras will restore).
    recover_backup(out_dir / "backup")
    train_ds = batches(x_train, specs, config.batch_size, config.seed, augment=augment,
                       first_epoch=resumed_epoch(out_dir / "backup"), **loader)
    val_ds = batches(x_val, specs, config.batch_size, config.seed + 1, shuffle=False,
                     fresh_noise=False)

    with strategy.scope():
        model = build_dae(config, data.channels, steps, jit)
        if initial is not None:
            model.set_weights(initial)
        if is_multi_worker(strategy):
            patch_keras_for_multi_worker(model, next(iter(train_ds)))
    timer = epoch_timer(config.time_limit)

    multi_worker = is_multi_worker(strategy)

    class Backup(keras.callbacks.BackupAndRestore):
        """A backup that cannot be read back (both copies damaged) is a clear error. Several
        workers delete theirs when training ends, as Keras does (they must restart together);
        one process keeps it until the run is scored. Either keeps it at --time-limit."""

        def on_train_begin(self, logs=None):
            try:
                super().on_train_begin(logs)
            except (OSError, ValueError) as err:  # ValueError: its metadata's JSON cut short
                raise ValueError(f"cannot resume from {self.backup_dir}: its files are damaged ({err}); "
                                 "delete that folder to start the run again") from err

        def on_train_end(self, logs=None):
            if not timer.stopped_early:
                super().on_train_end(logs)

    # A resumed run keeps its best epoch so far; several workers keep Keras's own (which forgets
    # it on a restart) rather than all write one file.
    stop_early = (keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)
                  if is_multi_worker(strategy) else
                  early_stopping(out_dir / "backup", out_dir / "history.csv", patience=config.patience))
    callbacks = [
        *([stop_early] if config.patience else []),
        keras.callbacks.TerminateOnNaN(),
        # After those, so that an epoch they end is not taken for a --time-limit stop; before
        # CSVLogger, so that history.csv keeps every epoch's time.
        timer,
        # Before the backup: a run killed between the two logs an epoch twice (read_history
        # keeps the last), never not at all.
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True),
        # Kept until the run is scored (a run killed before that is scored, not trained again),
        # or for good when it stops at --time-limit; two copies, so a kill while one is written
        # leaves the other.
        Backup(str(out_dir / "backup"), double_checkpoint=True, delete_checkpoint=multi_worker),
        keras.callbacks.ModelCheckpoint(str(out_dir / "checkpoint.keras")),
    ]
    if on_tensorflow:  # Keras writes TensorBoard logs through tf.summary
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "logs")))
    # Training that had ended when the run was killed before it was scored runs no epoch again.
    epochs = config.epochs if multi_worker else epochs_to_run(out_dir / "backup", config.epochs)
    if epochs != config.epochs:
        print(f"training had ended after epoch {epochs} when the run was stopped; scoring it",
              flush=True)
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks,
              shuffle=False,  # the tf.data pipeline shuffles; fit's own flag would only warn
              verbose="auto" if sys.stdout.isatty() else 2)
    if not multi_worker and not timer.stopped_early:
        mark_fit_ended(out_dir / "backup")
    save_model(model, out_dir / "model.keras")
    (out_dir / "checkpoint.keras").unlink(missing_ok=True)
    metrics = {}
    if is_chief(strategy):
        metrics = summarize(out_dir, config, x_val, read_history(out_dir / "history.csv"))
    if not timer.stopped_early:  # scored: finished (at --time-limit the backup goes on)
        remove_backup(out_dir / "backup")
    return metrics


def describe_machine() -> str:
    """What trained the run: the accelerator (or CPU cores) and the Keras backend, for its card."""
    import platform

    import keras

    backend = keras.backend.backend()
    gpus = [name for name, _ in gpu_devices()]
    where = (f"{len(gpus)} x {gpus[0]}" if gpus
             else f"{platform.machine()} CPU, {os.cpu_count()} cores (no GPU)")
    return f"{where}, Keras backend {backend}"


def summarize(run_dir: Path, config: PretrainConfig, x_val: np.ndarray, history: dict) -> dict:
    """Scores the saved model on validation images and writes ``metrics.json`` and samples.

    ``history`` is :func:`training.history.read_history`'s: losses, epoch count and training time cover the
    whole run, resumed or not.
    """
    import keras

    from data.images import to_model
    from models.registry import load_model
    from training.evaluation import evaluate_denoiser

    model = load_model(run_dir)
    clean = to_model(x_val[: config.eval_images])
    names = {s.name for s in config.specs}
    settings = [s for s in BENCHMARK_SETTINGS if s[0] in names] or [
        (s.name, (s.low + s.high) / 2) for s in config.specs]
    denoise = lambda batch: model.predict(batch, batch_size=128, verbose=0)  # noqa: E731
    metrics = {
        "val_loss": [round(float(v), 6) for v in history.get("val_loss", [])],
        "loss": [round(float(v), 6) for v in history.get("loss", [])],
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(sum(history.get("epoch_seconds", [])), 1),
        "machine": describe_machine(),
        "backend": keras.backend.backend(),
        "validation_images": int(len(clean)),
        "psnr": evaluate_denoiser(denoise, clean, settings, seed=config.seed),
    }
    save_samples(run_dir / "samples.png", model, clean[:8], settings, config.seed)
    atomic_write_json(run_dir / "metrics.json", metrics)  # last: it marks the run finished
    return metrics


def save_samples(path: Path, model, clean: np.ndarray, settings, seed: int) -> None:
    """A picture with rows clean / corrupted / reconstructed for each corruption setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.corruption import corrupt

    rows = []
    for name, level in settings:
        noisy = corrupt(clean, name, level, seed)
        rows += [("clean", clean), (f"{name} {level:g}", noisy),
                 ("reconstructed", np.clip(model.predict(noisy, verbose=0), 0, 1))]
    fig, axes = plt.subplots(len(rows), len(clean), figsize=(len(clean), len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.pretrain --help``."""
    config = parse_config(PretrainConfig, __doc__.split("\n\n")[0], argv)
    try:
        metrics = train(config)
    except (DatasetNotFoundError, ModelNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if metrics:
        for setting, score in metrics["psnr"].items():
            print(f"{setting:>18}: noisy {score['noisy_psnr']:6.2f} dB -> "
                  f"denoised {score['denoised_psnr']:6.2f} dB")
        print(f"run folder: {config.out}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
