"""Training speed per precision and XLA setting: milliseconds per step of a conv DAE, float32
against 16-bit compute, with and without XLA. Prints a Markdown table.

Each row trains a fresh model (``training.pretrain.build_dae``: pretraining's loss and
optimiser, its default network unless ``--widths``/``--bottleneck`` say otherwise) on a fixed
batch of corrupted images for ``--warmup`` steps, which include tracing and compiling, then for
``--steps`` timed steps. ``bfloat16`` is the choice on a CPU with AVX-512 BF16 or AMX units;
``float16`` is the GPU's (without a GPU it runs, slowly, in emulation). ``--jit`` takes
pretraining's values: ``auto`` compiles on a GPU and always on the JAX backend, ``on`` also on
a CPU.

Example::

    python -m training.bench_train --precision off --precision bfloat16
    python -m training.bench_train --precision off --jit off --jit on --widths 64 128 --bottleneck 256
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import field

import numpy as np

from models.registry import cpu_description
from training.cli import parse_config
from training.pretrain import PretrainConfig, build_dae, configure_devices

# pretraining's --mixed-precision choices, less "auto" (which picks one of them)
PRECISIONS = tuple(c for c in PretrainConfig.__dataclass_fields__["mixed_precision"].metadata["choices"]
                   if c != "auto")
JITS = PretrainConfig.__dataclass_fields__["jit"].metadata["choices"]


@dataclasses.dataclass(frozen=True)
class BenchTrainConfig:
    """What :func:`main` measures."""

    precision: tuple[str, ...] = field(default=("off", "bfloat16"), metadata={
        "flag": "precision", "help": "--mixed-precision values to compare (off = float32)"})
    jit: tuple[str, ...] = field(default=("auto",), metadata={
        "flag": "jit", "help": "--jit values to compare at each precision (auto: XLA on a GPU)"})
    widths: tuple[int, ...] = field(default=PretrainConfig.widths, metadata={
        "help": "filters per level, as pretraining's --widths"})
    bottleneck: int = field(default=PretrainConfig.bottleneck, metadata={
        "help": "channels of the code, as pretraining's --bottleneck"})
    steps: int = field(default=60, metadata={"help": "timed training steps per precision"})
    warmup: int = field(default=10, metadata={"help": "untimed steps first (tracing, caches)"})
    batch_size: int = field(default=64, metadata={"help": "images per step (pretraining's default)"})
    size: int = field(default=28, metadata={"help": "image side (28 = Fashion-MNIST)"})
    channels: int = field(default=1, metadata={"help": "1 (grey) or 3 (colour)"})

    def __post_init__(self):
        if self.steps < 1 or self.warmup < 1 or self.batch_size < 1:
            raise ValueError("--steps, --warmup and --batch-size must be >= 1")
        unknown = [p for p in self.precision if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision {unknown[0]!r}; expected one of {', '.join(PRECISIONS)}")
        unknown = [j for j in self.jit if j not in JITS]
        if unknown:
            raise ValueError(f"unknown --jit {unknown[0]!r}; expected one of {', '.join(JITS)}")
        self.pretrain_config(self.precision[0], self.jit[0])  # a network that cannot be built
        stride = 2 ** len(self.widths)
        if self.size % stride:
            raise ValueError(f"--size {self.size} does not halve evenly {len(self.widths)} times "
                             f"(--widths gives {len(self.widths)} levels): use a multiple of {stride}")

    def pretrain_config(self, precision: str, jit: str) -> PretrainConfig:
        """Pretraining's config for one row: this network, on one device (the model trains
        outside any tf.distribute strategy, whatever devices the machine has)."""
        return PretrainConfig(mixed_precision=precision, jit=jit, widths=self.widths,
                              bottleneck=self.bottleneck, distribute="none", cpu_devices=0)


def time_steps(config: BenchTrainConfig, precision: str, jit: str = "auto") -> tuple[float, bool]:
    """Seconds per training step at ``precision`` (a ``--mixed-precision`` value) and ``jit``
    (a ``--jit`` value), and whether XLA compiled the step."""
    import keras

    from data.corruption import corrupt_batch

    pretrain = config.pretrain_config(precision, jit)
    _, jit = configure_devices(pretrain)
    keras.utils.set_random_seed(0)
    clean = np.random.default_rng(0).random(
        (config.batch_size, config.size, config.size, config.channels), dtype=np.float32)
    noisy = keras.ops.convert_to_numpy(corrupt_batch(clean, pretrain.specs, np.array([0, 0])))
    model = build_dae(pretrain, config.channels, steps_per_epoch=config.warmup + config.steps, jit=jit)
    for _ in range(config.warmup):
        model.train_on_batch(noisy, clean)
    started = time.perf_counter()
    for _ in range(config.steps):
        loss = model.train_on_batch(noisy, clean)
    seconds = (time.perf_counter() - started) / config.steps
    if not np.isfinite(loss):
        raise RuntimeError(f"training diverged at precision {precision!r} (loss {loss})")
    return seconds, jit


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.bench_train --help``."""
    config = parse_config(BenchTrainConfig, __doc__.split("\n\n")[0], argv)
    import keras

    try:
        rows = [(precision, *time_steps(config, precision, jit))
                for precision in config.precision for jit in config.jit]
    except ValueError as err:  # e.g. --jit off on the JAX backend, which always compiles
        print(f"error: {err}", file=sys.stderr)
        return 2
    base = rows[0][1]
    network = "/".join(map(str, config.widths)) + f" filters, code {config.bottleneck}"
    print(f"Training speed, conv DAE of {network}, batch {config.batch_size} of "
          f"{config.size}x{config.size}x{config.channels}, {config.steps} steps, Keras backend "
          f"{keras.backend.backend()} ({cpu_description()}):\n")
    first = f"{rows[0][0]}, XLA {'on' if rows[0][2] else 'off'}"
    print(f"| precision | XLA | ms/step | images/s | vs {first} |")
    print("|---|---|---|---|---|")
    for precision, seconds, jit in rows:
        print(f"| {precision} | {'on' if jit else 'off'} | {1000 * seconds:.1f} "
              f"| {config.batch_size / seconds:,.0f} | {base / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
