"""Training input: fresh corruption drawn for every batch, never a stored copy.

:func:`denoising_dataset` is the ``tf.data`` pipeline (TensorFlow backend, ``tf.distribute``);
:class:`DenoisingBatches` serves the same ``(x̃, x)`` batches to Keras backends without
``tf.data`` (JAX on an accelerator that has no TensorFlow build). Both make each batch with
:func:`training_pair`: :func:`augment_batch`, then :func:`data.corruption.corrupt_batch`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from data.corruption import CorruptionSpec, corrupt_batch, stateless_random


def augments(dataset: str) -> bool:
    """Whether training on ``dataset`` flips and rotates its images by 90°: patches of a
    ``folder:`` of photos, which have no up or left, do; digits and clothes, which have, don't.
    A model trained so denoises a flipped or rotated image as well as the image itself, which
    is what lets :mod:`app.engine` average over those transforms (its ``ensemble``)."""
    return dataset.startswith("folder:")


def augment_batch(x, seed):
    """Each image of a float batch ``(N, H, W, C)`` flipped left-right with odds 1/2 and, when
    square, turned by 0, 90, 180 or 270° (each image its own draw): the 8 symmetries of the
    square, drawn from the stateless seed ``seed`` (two integers) with the backend's ops, inside
    a ``tf.data`` graph or compiled by JAX alike."""
    rng = stateless_random()
    seeds = rng.split(seed, 2)
    per_image = lambda draw: ops.reshape(draw, (-1, 1, 1, 1))  # noqa: E731
    flip = per_image(rng.uniform(rng.batch(x), seeds[0], "float32") < 0.5)
    x = ops.where(flip, ops.flip(x, axis=2), x)
    if x.shape[1] is None or x.shape[1] != x.shape[2]:
        return x
    turns, turned = per_image(rng.randint(rng.batch(x), seeds[1], 4)), x
    for k in (1, 2, 3):
        turned = ops.where(ops.equal(turns, k), ops.rot90(x, k, axes=(1, 2)), turned)
    return turned


def training_pair(x, specs: list[CorruptionSpec], seed, augment: bool = False):
    """``(x̃, x)`` for a float batch ``x`` in ``[0, 1]``: ``x`` flipped and turned first when
    ``augment`` (:func:`augment_batch`), then corrupted with one of ``specs`` per image. The one
    recipe of both input pipelines."""
    if augment:
        seeds = stateless_random().split(seed, 2)
        x, seed = augment_batch(x, seeds[0]), seeds[1]
    return corrupt_batch(x, specs, seed), x


def epoch_seed(seed: int, first_epoch: int) -> int:
    """The seed of a pipeline that starts at ``first_epoch``: ``seed`` itself for a fresh run,
    another one for a resumed run, so that its epochs do not replay the order and noise that
    the epochs before the restart already drew."""
    if not first_epoch:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(first_epoch)]).generate_state(1)[0])


def denoising_dataset(images: np.ndarray, specs: list[CorruptionSpec], batch_size: int, seed: int,
                      shuffle: bool = True, augment: bool = False, drop_remainder: bool = True,
                      fresh_noise: bool = True, first_epoch: int = 0):
    """``(x̃, x)`` batches from uint8 images ``(N, H, W, C)``: shuffle, batch, corrupt.

    Corruption seeds come from ``tf.data.Dataset.random``, which re-draws on every pass over
    the data: each epoch sees new noise, yet a run is reproducible from ``seed``.

    Args:
        images: uint8 clean images.
        specs: corruptions; one is drawn per image.
        batch_size: global batch size.
        seed: seeds shuffling, corruption and augmentation.
        shuffle: a new order of all the images every epoch.
        augment: random flips and 90° rotations (for photo patches).
        drop_remainder: keep every batch full (needed by some distribution strategies).
        fresh_noise: new noise on every pass; ``False`` repeats the same noise (validation).
        first_epoch: the epoch a resumed run starts at (:func:`epoch_seed`).
    """
    import tensorflow as tf

    seed = epoch_seed(seed, first_epoch)

    # A full shuffle of every epoch: the indices are shuffled (8 bytes an image) and each batch
    # gathered from the images held once in memory. (A shuffle buffer of the images themselves,
    # smaller than the split to save memory, lets no image from the end of a large split open
    # an epoch.)
    pixels = tf.convert_to_tensor(images)
    ds = tf.data.Dataset.range(len(images))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=fresh_noise).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)

    def make_pair(rows, batch_seed):
        batch = tf.cast(tf.gather(pixels, rows), tf.float32) / 255.0
        return training_pair(batch, specs, batch_seed, augment)

    ds = ds.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


class DenoisingBatches(keras.utils.PyDataset):
    """``(x̃, x)`` batches from uint8 images for ``fit`` on backends without ``tf.data``.

    The same arguments and behaviour as :func:`denoising_dataset`: reshuffled every epoch, a
    new corruption seed for every batch and epoch (``fresh_noise``), flips and 90° rotations
    for photo patches (``augment``). On JAX the corruption is compiled once and runs on the
    accelerator.

    ``workers`` threads gather and corrupt the next batches while the accelerator trains on
    this one; Keras keeps their order, so the batches are those of one worker. (Gathering a
    batch of 128 colour 96×96 patches is numpy work on the CPU: done in turn with each training
    step, it keeps an accelerator waiting.)
    """

    def __init__(self, images: np.ndarray, specs: list[CorruptionSpec], batch_size: int, seed: int,
                 shuffle: bool = True, augment: bool = False, drop_remainder: bool = True,
                 fresh_noise: bool = True, workers: int = 1, first_epoch: int = 0):
        super().__init__(workers=workers, max_queue_size=max(10, 2 * workers))
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.shuffle, self.fresh_noise = shuffle, fresh_noise
        count = len(images) // batch_size if drop_remainder else -(-len(images) // batch_size)
        if count < 1:
            raise ValueError(f"{len(images)} images is fewer than one batch of {batch_size}")
        # A resumed run goes on at its epoch: the shuffling and noise of the epochs it has not
        # trained yet, not a replay of the first ones.
        self.count, self.epoch = count, int(first_epoch)
        pair = lambda x, batch_seed: training_pair(x, specs, batch_seed, augment)  # noqa: E731
        if keras.backend.backend() == "jax":
            import jax

            pair = jax.jit(pair)
        self.pair = pair
        self._order()

    def _order(self):
        n = len(self.images)
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(n) if self.shuffle else np.arange(n)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        x = self.images[rows].astype(np.float32) / 255.0
        epoch = self.epoch if self.fresh_noise else 0
        batch_seed = np.array([self.seed * 100_003 + epoch, index], np.int64)
        noisy, clean = self.pair(x, batch_seed)
        return ops.convert_to_numpy(noisy), ops.convert_to_numpy(clean)

    def on_epoch_end(self):
        self.epoch += 1
        self._order()
