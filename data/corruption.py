"""Corruption processes C(x̃ | x): the one implementation used everywhere.

Every corruption is a pure function on a float batch ``x`` of shape ``(N, H, W, C)`` with
values in ``[0, 1]``, a per-image ``level`` (shape ``(N,)`` or a scalar) and a stateless
``seed`` (two integers). The same functions serve the ``tf.data`` training pipeline, the
benchmarks, the UI's "add corruption" control and the CLI (``CORRUPTIONS`` feeds their
``choices=``); :func:`corrupt` is the numpy entry point.

They are written in ``keras.ops`` and draw their randomness from the active Keras backend's
stateless generator (:func:`stateless_random`): TensorFlow's ``tf.random.stateless_*`` or JAX's
``jax.random``. So the same code corrupts batches inside a ``tf.data`` pipeline and on an
accelerator that has JAX but no TensorFlow build (``KERAS_BACKEND=jax``). A seed gives the same
noise every time on one backend; the two backends draw different noise from it.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import keras
import numpy as np
from keras import ops


class _TensorFlowRandom:
    """Stateless draws from ``tf.random`` (also inside ``tf.data`` graphs)."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def shape(self, x, channels=None):
        shape = self.tf.shape(x)
        return shape if channels is None else self.tf.concat([shape[:-1], [channels]], axis=0)

    def batch(self, x):
        return self.tf.shape(x)[:1]

    def split(self, seed, n):
        return self.tf.random.experimental.stateless_split(self.tf.cast(seed, self.tf.int64), n)

    def normal(self, shape, seed, dtype):
        return self.tf.random.stateless_normal(shape, seed, dtype=dtype)

    def uniform(self, shape, seed, dtype):
        return self.tf.random.stateless_uniform(shape, seed, dtype=dtype)

    def randint(self, shape, seed, maxval):
        return self.tf.random.stateless_uniform(shape, seed, maxval=maxval, dtype=self.tf.int32)


class _JaxRandom:
    """Stateless draws from ``jax.random``; a seed pair is used as a raw threefry key."""

    def __init__(self):
        import jax

        self.jax = jax

    def shape(self, x, channels=None):
        return tuple(x.shape) if channels is None else (*x.shape[:-1], channels)

    def batch(self, x):
        return tuple(x.shape[:1])

    def _key(self, seed):
        return self.jax.numpy.asarray(seed).astype("uint32")

    def split(self, seed, n):
        return self.jax.random.split(self._key(seed), n)

    def normal(self, shape, seed, dtype):
        return self.jax.random.normal(self._key(seed), shape, dtype=dtype)

    def uniform(self, shape, seed, dtype):
        return self.jax.random.uniform(self._key(seed), shape, dtype=dtype)

    def randint(self, shape, seed, maxval):
        return self.jax.random.randint(self._key(seed), shape, 0, maxval)


_RANDOM = {"tensorflow": _TensorFlowRandom, "jax": _JaxRandom}


def stateless_random():
    """The active Keras backend's stateless random ops."""
    return _random_ops(keras.backend.backend())


@functools.cache
def _random_ops(backend: str):
    if backend not in _RANDOM:
        raise RuntimeError(f"corruption needs the tensorflow or jax Keras backend, not {backend!r}")
    return _RANDOM[backend]()


def _per_image(level, x):
    """Broadcasts a scalar or per-image ``(N,)`` level against a ``(N, H, W, C)`` batch."""
    level = ops.cast(level, x.dtype)
    return ops.reshape(level, (-1, 1, 1, 1)) if ops.ndim(level) else level


def _pixel_uniform(x, seed):
    """One uniform draw per pixel, shared by the pixel's channels: shape ``(N, H, W, 1)``."""
    rng = stateless_random()
    return rng.uniform(rng.shape(x, channels=1), seed, x.dtype)


def gaussian(x, level, seed):
    """Additive white Gaussian noise of std ``level``, then clipped to ``[0, 1]``."""
    rng = stateless_random()
    noise = rng.normal(rng.shape(x), seed, x.dtype)
    return ops.clip(x + _per_image(level, x) * noise, 0.0, 1.0)


def salt_pepper(x, level, seed, salt_ratio=0.5):
    """Sets a fraction ``level`` of pixels to 1 (salt, odds ``salt_ratio``) or 0 (pepper).

    A hit pixel takes the value in all its channels, so a colour pixel turns white or black.
    """
    seeds = stateless_random().split(seed, 2)
    hit = _pixel_uniform(x, seeds[0]) < _per_image(level, x)
    salt = _pixel_uniform(x, seeds[1]) < ops.cast(salt_ratio, x.dtype)
    return ops.where(hit, ops.cast(salt, x.dtype), x)


def masking(x, level, seed):
    """Masking noise (Vincent et al. 2010): a fraction ``level`` of pixels set to 0.

    The mask is drawn per pixel and shared by the channels of a colour pixel.
    """
    hit = _pixel_uniform(x, seed) < _per_image(level, x)
    return ops.where(hit, ops.zeros_like(x), x)


CORRUPTIONS = {"gaussian": gaussian, "salt_pepper": salt_pepper, "masking": masking}
"""Registry of corruption processes by name; the CLI's and the UI's choices come from it."""

LEVEL_BOUNDS = {"gaussian": (0.0, 1.0), "salt_pepper": (0.0, 1.0), "masking": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class CorruptionSpec:
    """A corruption with a fixed level (``low == high``) or a range sampled per image."""

    name: str
    low: float
    high: float

    def __post_init__(self):
        if self.name not in CORRUPTIONS:
            raise ValueError(
                f"unknown corruption {self.name!r}; expected one of {sorted(CORRUPTIONS)}"
            )
        lo, hi = LEVEL_BOUNDS[self.name]
        if not lo <= self.low <= self.high <= hi:
            raise ValueError(
                f"{self.name} level must satisfy {lo} <= low <= high <= {hi}, got "
                + (f"{self.low}" if self.low == self.high else f"{self.low} to {self.high}")
            )

    @classmethod
    def parse(cls, text: str) -> CorruptionSpec:
        """Parses ``NAME:LEVEL`` or ``NAME:LOW-HIGH`` (e.g. ``gaussian:0.05-0.5``)."""
        number = r"((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"  # 0.05, .5, 5e-2, 1E+0
        match = re.fullmatch(rf"\s*(\w+)\s*:\s*{number}\s*(?:-\s*{number})?\s*", text)
        if not match:
            raise ValueError(
                f"corruption must look like NAME:LEVEL or NAME:LOW-HIGH "
                f"(e.g. gaussian:0.3, masking:0.1-0.6), got {text!r}"
            )
        name, low, high = match.group(1), float(match.group(2)), match.group(3)
        return cls(name, low, float(high) if high is not None else low)

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.name}:{self.low:g}"
        return f"{self.name}:{self.low:g}-{self.high:g}"


def corrupt_batch(x, specs, seed):
    """Corrupts each image of a batch with one spec drawn uniformly from ``specs``.

    Args:
        x: float tensor ``(N, H, W, C)`` in ``[0, 1]``.
        specs: a non-empty sequence of :class:`CorruptionSpec`.
        seed: stateless seed, two integers (a tensor or array of shape ``(2,)``).

    Returns:
        The corrupted batch, same shape and dtype as ``x``.
    """
    if not specs:
        raise ValueError("corrupt_batch needs at least one corruption spec, got none")
    rng = stateless_random()
    seeds = rng.split(seed, 2 + len(specs))
    pick = rng.randint(rng.batch(x), seeds[0], len(specs))
    u = rng.uniform(rng.batch(x), seeds[1], x.dtype)
    out = x
    for i, spec in enumerate(specs):
        level = spec.low + (spec.high - spec.low) * u
        chosen = ops.reshape(ops.equal(pick, i), (-1, 1, 1, 1))
        out = ops.where(chosen, CORRUPTIONS[spec.name](x, level, seeds[2 + i]), out)
    return out


def corrupt(image: np.ndarray, name: str, level: float, seed: int = 0) -> np.ndarray:
    """Numpy entry point: corrupts one image ``(H, W, C)`` or a batch ``(N, H, W, C)``.

    Args:
        image: float array with values in ``[0, 1]``.
        name: a key of :data:`CORRUPTIONS`.
        level: the corruption strength (std for ``gaussian``, pixel fraction otherwise).
        seed: integer seed; the same seed gives the same corrupted image.

    Returns:
        A float32 array of the input's shape.
    """
    spec = CorruptionSpec(name, float(level), float(level))
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected an image (H, W, C) or batch (N, H, W, C), got shape {arr.shape}")
    batch = arr[None] if arr.ndim == 3 else arr
    out = CORRUPTIONS[spec.name](ops.convert_to_tensor(batch), spec.low, np.array([seed, 0], np.int64))
    out = ops.convert_to_numpy(out)
    return out[0] if arr.ndim == 3 else out


def masked_pixels(shape, level: float, seed: int = 0) -> np.ndarray:
    """Where :func:`corrupt` ``(x, "masking", level, seed)`` sets pixels to 0, for any ``x`` of
    ``shape`` (``(H, W, C)`` or ``(N, H, W, C)``): bool ``(H, W)`` or ``(N, H, W)``.

    The mask is drawn from the seed alone, whatever the pixels, so this is the corruption's own
    mask: what inpainting is told. The zeros of the corrupted image are not, where the clean
    image has zeros of its own (Fashion-MNIST's background is half of every image).
    """
    return corrupt(np.ones(shape, np.float32), "masking", level, seed)[..., 0] == 0


BENCHMARK_SETTINGS = (
    ("gaussian", 0.1), ("gaussian", 0.3), ("gaussian", 0.5),
    ("salt_pepper", 0.1), ("salt_pepper", 0.3), ("salt_pepper", 0.5),
    ("masking", 0.25), ("masking", 0.5),
)
"""The fixed (corruption, level) grid that run metrics, cards and the benchmark report."""
