"""Corruption processes C(x̃ | x): the one implementation used everywhere.

Every corruption is a pure function on a float batch ``x`` of shape ``(N, H, W, C)`` with
values in ``[0, 1]``, a per-image ``level`` (shape ``(N,)`` or a scalar) and a stateless
``seed`` (two integers). The same functions serve the ``tf.data`` training pipeline, the
benchmarks, the UI's "add corruption" control and the CLI (``CORRUPTIONS`` feeds their
``choices=``); :func:`corrupt` is the numpy entry point.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow as tf


def _per_image(level, x):
    """Broadcasts a scalar or per-image ``(N,)`` level against a ``(N, H, W, C)`` batch."""
    level = tf.cast(level, x.dtype)
    return tf.reshape(level, [-1, 1, 1, 1]) if level.shape.rank else level


def _pixel_uniform(x, seed):
    """One uniform draw per pixel, shared by the pixel's channels: shape ``(N, H, W, 1)``."""
    shape = tf.concat([tf.shape(x)[:-1], [1]], axis=0)
    return tf.random.stateless_uniform(shape, seed, dtype=x.dtype)


def gaussian(x, level, seed):
    """Additive white Gaussian noise of std ``level``, then clipped to ``[0, 1]``."""
    noise = tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
    return tf.clip_by_value(x + _per_image(level, x) * noise, 0.0, 1.0)


def salt_pepper(x, level, seed, salt_ratio=0.5):
    """Sets a fraction ``level`` of pixels to 1 (salt, odds ``salt_ratio``) or 0 (pepper).

    A hit pixel takes the value in all its channels, so a colour pixel turns white or black.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    hit = _pixel_uniform(x, seeds[0]) < _per_image(level, x)
    salt = _pixel_uniform(x, seeds[1]) < tf.cast(salt_ratio, x.dtype)
    return tf.where(hit, tf.cast(salt, x.dtype), x)


def masking(x, level, seed):
    """Masking noise (Vincent et al. 2010): a fraction ``level`` of pixels set to 0.

    The mask is drawn per pixel and shared by the channels of a colour pixel.
    """
    hit = _pixel_uniform(x, seed) < _per_image(level, x)
    return tf.where(hit, tf.zeros_like(x), x)


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
                f"{self.name} level must satisfy {lo} <= low <= high <= {hi}, "
                f"got {self.low}-{self.high}"
            )

    @classmethod
    def parse(cls, text: str) -> CorruptionSpec:
        """Parses ``NAME:LEVEL`` or ``NAME:LOW-HIGH`` (e.g. ``gaussian:0.05-0.5``)."""
        match = re.fullmatch(r"\s*(\w+)\s*:\s*([0-9.eE+]+)\s*(?:-\s*([0-9.eE+]+))?\s*", text)
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
        seed: stateless seed, an int tensor of shape ``(2,)``.

    Returns:
        The corrupted batch, same shape and dtype as ``x``.
    """
    if not specs:
        raise ValueError("corrupt_batch needs at least one corruption spec, got none")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2 + len(specs))
    n = tf.shape(x)[0]
    pick = tf.random.stateless_uniform([n], seeds[0], maxval=len(specs), dtype=tf.int32)
    u = tf.random.stateless_uniform([n], seeds[1], dtype=x.dtype)
    out = x
    for i, spec in enumerate(specs):
        level = spec.low + (spec.high - spec.low) * u
        chosen = tf.reshape(tf.equal(pick, i), [-1, 1, 1, 1])
        out = tf.where(chosen, CORRUPTIONS[spec.name](x, level, seeds[2 + i]), out)
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
    out = CORRUPTIONS[spec.name](tf.constant(batch), spec.low, tf.constant([seed, 0], tf.int64))
    out = out.numpy()
    return out[0] if arr.ndim == 3 else out


BENCHMARK_SETTINGS = (
    ("gaussian", 0.1), ("gaussian", 0.3), ("gaussian", 0.5),
    ("salt_pepper", 0.1), ("salt_pepper", 0.3), ("salt_pepper", 0.5),
    ("masking", 0.25), ("masking", 0.5),
)
"""The fixed (corruption, level) grid that run metrics, cards and the benchmark report."""
