import numpy as np

from data.corruption import CorruptionSpec
from data.pipeline import denoising_dataset


def _epochs(ds, n):
    return [[(a.numpy(), b.numpy()) for a, b in ds] for _ in range(n)]


def test_fresh_noise_every_epoch_yet_reproducible():
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    specs = [CorruptionSpec.parse("gaussian:0.2")]
    first, second = _epochs(denoising_dataset(images, specs, 16, seed=3), 2)
    # Clean targets pair with their own corrupted inputs, in [0, 1].
    for noisy, clean in first:
        assert clean.dtype == np.float32 and 0 <= clean.min() and clean.max() <= 1
        assert 0.1 < np.std(noisy - clean) < 0.25
    assert not np.array_equal(first[0][0], second[0][0])  # new noise (and order) each epoch
    rerun = _epochs(denoising_dataset(images, specs, 16, seed=3), 1)[0]
    np.testing.assert_array_equal(first[0][0], rerun[0][0])  # same seed, same run


def test_fixed_noise_for_validation():
    images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
    ds = denoising_dataset(images, [CorruptionSpec.parse("masking:0.5")], 8, seed=1,
                           shuffle=False, fresh_noise=False)
    a, b = _epochs(ds, 2)
    np.testing.assert_array_equal(a[0][0], b[0][0])
