"""Training speed per precision: milliseconds per step of the default conv DAE, float32
against 16-bit compute. Prints a Markdown table.

Each precision trains a fresh model (``training.pretrain.build_dae``: pretraining's defaults,
loss, optimiser and XLA setting, which compiles on a GPU and always on the JAX backend) on a
fixed batch of corrupted images for ``--warmup`` steps, which include tracing, then for
``--steps`` timed steps. ``bfloat16`` is the choice on a CPU with AVX-512 BF16 or AMX units;
``float16`` is the GPU's (without a GPU it runs, slowly, in emulation).

Example::

    python -m training.bench_train --precision off --precision bfloat16
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


@dataclasses.dataclass(frozen=True)
class BenchTrainConfig:
    """What :func:`main` measures."""

    precision: tuple[str, ...] = field(default=("off", "bfloat16"), metadata={
        "flag": "precision", "help": "--mixed-precision values to compare (off = float32)"})
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


def time_steps(config: BenchTrainConfig, precision: str) -> tuple[float, bool]:
    """Seconds per training step at ``precision`` (a ``--mixed-precision`` value), and whether
    XLA compiled the step."""
    import keras

    from data.corruption import corrupt_batch

    pretrain = PretrainConfig(mixed_precision=precision)
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

    rows = [(precision, *time_steps(config, precision)) for precision in config.precision]
    base = rows[0][1]
    print(f"Training speed, default conv DAE, batch {config.batch_size} of "
          f"{config.size}x{config.size}x{config.channels}, {config.steps} steps, Keras backend "
          f"{keras.backend.backend()}, XLA {'on' if rows[0][2] else 'off'} "
          f"({cpu_description()}):\n")
    print(f"| precision | ms/step | images/s | vs {rows[0][0]} |")
    print("|---|---|---|---|")
    for precision, seconds, _ in rows:
        print(f"| {precision} | {1000 * seconds:.1f} | {config.batch_size / seconds:,.0f} "
              f"| {base / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
