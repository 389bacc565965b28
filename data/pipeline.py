"""The tf.data input pipeline: fresh corruption drawn for every batch, never a stored copy."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data.corruption import CorruptionSpec, corrupt_batch


def denoising_dataset(images: np.ndarray, specs: list[CorruptionSpec], batch_size: int, seed: int,
                      shuffle: bool = True, augment: bool = False, drop_remainder: bool = True,
                      fresh_noise: bool = True):
    """``(x̃, x)`` batches from uint8 images ``(N, H, W, C)``: cache, shuffle, batch, corrupt.

    Corruption seeds come from ``tf.data.Dataset.random``, which re-draws on every pass over
    the data: each epoch sees new noise, yet a run is reproducible from ``seed``.

    Args:
        images: uint8 clean images.
        specs: corruptions; one is drawn per image.
        batch_size: global batch size.
        seed: seeds shuffling, corruption and augmentation.
        shuffle: reshuffle every epoch.
        augment: random flips and 90° rotations (for photo patches).
        drop_remainder: keep every batch full (needed by some distribution strategies).
        fresh_noise: new noise on every pass; ``False`` repeats the same noise (validation).
    """
    ds = tf.data.Dataset.from_tensor_slices(images).cache()
    if shuffle:
        ds = ds.shuffle(min(len(images), 20_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=fresh_noise).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)

    def make_pair(batch, batch_seed):
        x = tf.cast(batch, tf.float32) / 255.0
        if augment:
            flip_seed, rot_seed, batch_seed = tf.unstack(
                tf.random.experimental.stateless_split(batch_seed, 3))
            x = tf.image.stateless_random_flip_left_right(x, flip_seed)
            if x.shape[1] == x.shape[2]:
                k = tf.random.stateless_uniform([], rot_seed, maxval=4, dtype=tf.int32)
                x = tf.image.rot90(x, k)
        return corrupt_batch(x, specs, batch_seed), x

    ds = ds.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
