import keras
import numpy as np

from data.corruption import CorruptionSpec
from data.pipeline import DenoisingBatches, denoising_dataset


def _epochs(ds, n):
    return [[(a.numpy(), b.numpy()) for a, b in ds] for _ in range(n)]


def test_fresh_noise_every_epoch_yet_reproducible():
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    specs = [CorruptionSpec.parse("gaussian:0.2")]
    # No shuffling: the same images in the same order each epoch, so only the noise can change.
    first, second = _epochs(denoising_dataset(images, specs, 16, seed=3, shuffle=False), 2)
    for (noisy1, clean1), (noisy2, clean2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(clean1, clean2)
        # Clean targets pair with their own corrupted inputs, in [0, 1].
        assert clean1.dtype == np.float32 and 0 <= clean1.min() and clean1.max() <= 1
        assert 0.1 < np.std(noisy1 - clean1) < 0.25
        residual1, residual2 = noisy1 - clean1, noisy2 - clean2
        # New noise for the same images: the residuals are nearly uncorrelated, not just different.
        assert np.mean(residual1 != residual2) > 0.9
        assert abs(np.corrcoef(residual1.ravel(), residual2.ravel())[0, 1]) < 0.3
    rerun = _epochs(denoising_dataset(images, specs, 16, seed=3, shuffle=False), 2)
    for epoch, again in zip((first, second), rerun, strict=True):  # same seed, same run
        for (noisy, _), (noisy_again, _) in zip(epoch, again, strict=True):
            np.testing.assert_array_equal(noisy, noisy_again)


def test_fixed_noise_for_validation():
    images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
    for spec in ("masking:0.5", "gaussian:0.2"):
        ds = denoising_dataset(images, [CorruptionSpec.parse(spec)], 8, seed=1, shuffle=False,
                               fresh_noise=False)
        first, second = _epochs(ds, 2)
        for (noisy1, clean1), (noisy2, clean2) in zip(first, second, strict=True):
            np.testing.assert_array_equal(clean1, clean2)
            np.testing.assert_array_equal(noisy1 - clean1, noisy2 - clean2)
            assert np.any(noisy1 != clean1)  # there is noise to repeat


def _passes(batches, n):
    out = []
    for _ in range(n):
        out.append([batches[i] for i in range(len(batches))])
        batches.on_epoch_end()
    return out


def test_denoising_batches_fresh_noise_every_epoch_yet_reproducible():
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    specs = [CorruptionSpec.parse("gaussian:0.2")]
    batches = DenoisingBatches(images, specs, 16, seed=3, shuffle=False)
    assert len(batches) == 4
    first, second = _passes(batches, 2)
    for (noisy1, clean1), (noisy2, clean2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(clean1, clean2)
        assert clean1.dtype == np.float32 and 0 <= clean1.min() and clean1.max() <= 1
        assert 0.1 < np.std(noisy1 - clean1) < 0.25
        residual1, residual2 = noisy1 - clean1, noisy2 - clean2
        assert abs(np.corrcoef(residual1.ravel(), residual2.ravel())[0, 1]) < 0.3
    np.testing.assert_array_equal(np.concatenate([c for _, c in first]), images / np.float32(255))
    rerun = _passes(DenoisingBatches(images, specs, 16, seed=3, shuffle=False), 2)
    for epoch, again in zip((first, second), rerun, strict=True):
        for (noisy, _), (noisy_again, _) in zip(epoch, again, strict=True):
            np.testing.assert_array_equal(noisy, noisy_again)


def test_denoising_batches_shuffle_augment_and_validation_mode():
    images = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    specs = [CorruptionSpec.parse("masking:0.5")]
    train = DenoisingBatches(images, specs, 16, seed=0, augment=True)
    assert len(train) == 2  # the last 8 images do not fill a batch
    first, second = _passes(train, 2)
    seen = [np.concatenate([c for _, c in epoch]) for epoch in (first, second)]
    assert not np.array_equal(seen[0], seen[1])  # reshuffled and re-augmented
    # Flips and 90° rotations move pixels but keep each image's pixel values.
    originals = {tuple(np.sort(im.ravel())) for im in images}
    assert all(tuple(np.sort(np.round(c * 255).astype(np.uint8).ravel())) in originals for c in seen[0])
    val = DenoisingBatches(images, specs, 16, seed=1, shuffle=False, drop_remainder=False,
                           fresh_noise=False)
    assert len(val) == 3 and val[2][0].shape == (8, 8, 8, 3)
    a, b = _passes(val, 2)
    for (noisy1, _), (noisy2, _) in zip(a, b, strict=True):
        np.testing.assert_array_equal(noisy1, noisy2)


def test_denoising_batches_from_worker_threads_come_in_order_and_unchanged():
    images = np.random.default_rng(2).integers(0, 256, (96, 8, 8, 3), dtype=np.uint8)
    specs = [CorruptionSpec.parse("gaussian:0.2"), CorruptionSpec.parse("salt_pepper:0.3")]
    identity = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Identity()])
    # predict runs the batches through Keras's own loader: with 3 workers, threads prepare them.
    seen = [identity.predict(DenoisingBatches(images, specs, 8, seed=5, augment=True, workers=workers),
                             verbose=0) for workers in (1, 3)]
    assert seen[0].shape == (96, 8, 8, 3)
    np.testing.assert_array_equal(seen[0], seen[1])
    assert DenoisingBatches(images, specs, 8, seed=5, workers=3).workers == 3


def test_a_resumed_run_goes_on_with_new_order_and_noise_not_a_replay():
    from data.pipeline import epoch_seed

    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    specs = [CorruptionSpec.parse("gaussian:0.2")]
    # Without tf.data: the resumed epoch is exactly the one the uninterrupted run would draw.
    fresh = DenoisingBatches(images, specs, 16, seed=3)
    _passes(fresh, 2)
    resumed = DenoisingBatches(images, specs, 16, seed=3, first_epoch=2)
    for i in range(len(fresh)):
        for a, b in zip(fresh[i], resumed[i], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(resumed[0][0], DenoisingBatches(images, specs, 16, seed=3)[0][0])
    # tf.data: a fresh run keeps its seed (and noise); a resumed one gets new order and noise.
    assert epoch_seed(3, 0) == 3 and len({epoch_seed(3, k) for k in range(1, 50)}) == 49
    start, again = (_epochs(denoising_dataset(images, specs, 16, seed=3, first_epoch=k), 1)[0]
                    for k in (0, 2))
    assert not any(np.array_equal(a[1], b[1]) for a, b in zip(start, again, strict=True))


def test_resumed_epoch_reads_the_backup_keras_writes(tmp_path):
    import json

    from training.history import resumed_epoch

    assert resumed_epoch(tmp_path / "backup") == 0
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": 0}))
    assert resumed_epoch(tmp_path / "backup") == 3


def _symmetries(image):
    """The 8 flips and 90° turns of a square ``(H, W, C)`` image."""
    return [np.rot90(im, k) for im in (image, image[:, ::-1]) for k in range(4)]


def _which_symmetry(image, clean):
    matches = [i for i, s in enumerate(_symmetries(image)) if np.array_equal(s, clean)]
    assert matches, "an augmented image is not a flip or 90° turn of its original"
    return matches[0]


def test_both_pipelines_flip_and_turn_each_image_on_its_own_and_corrupt_what_they_turned():
    # Distinct pixel values, so that each of the 8 symmetries of an image is told apart.
    rng = np.random.default_rng(4)
    images = np.stack([rng.permutation(192).reshape(8, 8, 3) for _ in range(64)]).astype(np.uint8)
    specs = [CorruptionSpec.parse("masking:0.5")]
    tf_batches = [(n.numpy(), c.numpy()) for n, c in
                  denoising_dataset(images, specs, 64, seed=2, shuffle=False, augment=True)]
    for noisy, clean in [*tf_batches, DenoisingBatches(images, specs, 64, seed=2, shuffle=False,
                                                       augment=True)[0]]:
        originals = images / np.float32(255)
        drawn = [_which_symmetry(im, c) for im, c in zip(originals, clean, strict=True)]
        # Each image draws its own: within one batch, all 8 symmetries turn up.
        assert len(set(drawn)) == 8
        # The corruption is of the turned image (the training target): masked pixels are 0,
        # the others are the target's own.
        kept = noisy != 0
        np.testing.assert_array_equal(noisy[kept], clean[kept])
        assert 0.35 < 1 - kept.mean() < 0.65


def test_non_square_images_are_flipped_but_never_turned():
    from data.pipeline import augment_batch

    x = np.random.default_rng(5).random((32, 4, 6, 1)).astype(np.float32)
    out = np.asarray(augment_batch(x, np.array([1, 2])))
    flipped = [np.array_equal(o, im[:, ::-1]) for im, o in zip(x, out, strict=True)]
    kept = [np.array_equal(o, im) for im, o in zip(x, out, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 8 < sum(flipped) < 24


def _indexed_images(n):
    """uint8 images ``(n, 1, 2, 1)`` whose two pixels spell their own index in base 256."""
    index = np.arange(n)
    return np.stack([index % 256, index // 256], axis=1).astype(np.uint8).reshape(n, 1, 2, 1)


def _indices(clean):
    pixels = np.rint(clean.reshape(len(clean), 2) * 255).astype(np.int64)
    return pixels[:, 0] + 256 * pixels[:, 1]


def test_both_pipelines_shuffle_the_whole_split_every_epoch():
    n, batch = 30_000, 500
    images, specs = _indexed_images(n), [CorruptionSpec.parse("gaussian:0.1")]
    ds = denoising_dataset(images, specs, batch, seed=5)
    seqs = DenoisingBatches(images, specs, batch, seed=5)
    for _ in range(2):
        tf_order = np.concatenate([_indices(clean.numpy()) for _, clean in ds])
        seq_order = np.concatenate([_indices(seqs[i][1]) for i in range(len(seqs))])
        seqs.on_epoch_end()
        for order in (tf_order, seq_order):
            assert sorted(order) == list(range(n))  # each image once (n is a whole number of batches)
            # Images from the end of the split open an epoch as often as any: a shuffle buffer
            # of 20,000 images let none of the last 10,000 into the first batch.
            first = order[:batch]
            assert 0.25 < np.mean(first >= 20_000 + batch) < 0.42
