import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data.corruption import (
    BENCHMARK_SETTINGS,
    CORRUPTIONS,
    CorruptionSpec,
    corrupt,
    corrupt_batch,
    masked_pixels,
)

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)
# Mid-grey images leave room on both sides, so clipping barely touches Gaussian noise.
GREY = np.full((16, 32, 32, 1), 0.5, np.float32)
COLOUR = RNG.uniform(0.2, 0.8, (16, 32, 32, 3)).astype(np.float32)


def test_gaussian_residual_std_is_sigma_before_clipping():
    noisy = corrupt(GREY, "gaussian", 0.05, seed=1)
    residual = noisy - GREY
    assert abs(residual.std() - 0.05) < 0.002
    assert abs(residual.mean()) < 0.002


def test_gaussian_clips_to_valid_range():
    noisy = corrupt(GREY, "gaussian", 0.5, seed=2)
    assert noisy.min() == 0.0 and noisy.max() == 1.0
    assert 0.1 < (noisy == 1.0).mean() < 0.25  # P(0.5 + 0.5 n > 1) = P(n > 1) = 0.159


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_salt_pepper_fraction_and_ratio(p):
    noisy = corrupt(GREY, "salt_pepper", p, seed=3)
    hit = noisy != GREY
    assert abs(hit.mean() - p) < 0.02
    assert abs((noisy == 1.0).mean() - p / 2) < 0.02
    assert set(np.unique(noisy[hit])) <= {0.0, 1.0}
    colour = corrupt(COLOUR, "salt_pepper", p, seed=3)
    hit = np.any(colour != COLOUR, axis=-1)
    assert abs(hit.mean() - p) < 0.02
    assert set(np.unique(colour[hit])) <= {0.0, 1.0}
    assert np.all(colour[hit] == colour[hit][:, :1])  # a hit colour pixel turns wholly black or white


def test_salt_ratio_is_settable():
    x = tf.constant(GREY)
    out = CORRUPTIONS["salt_pepper"](x, 0.4, tf.constant([5, 0], tf.int64), salt_ratio=0.9).numpy()
    hit = out != GREY
    assert abs((out[hit] == 1.0).mean() - 0.9) < 0.03


def test_masking_is_per_pixel_and_shared_by_channels():
    noisy = corrupt(COLOUR, "masking", 0.3, seed=4)
    zero = noisy == 0.0
    assert abs(zero.any(-1).mean() - 0.3) < 0.02
    np.testing.assert_array_equal(zero.all(-1), zero.any(-1))  # a whole pixel or nothing
    np.testing.assert_array_equal(noisy[~zero], COLOUR[~zero])


@pytest.mark.parametrize("shape", [(9, 28, 28, 1), (40, 30, 3)])
def test_masked_pixels_are_the_pixels_masking_zeroes(shape):
    x = np.random.default_rng(0).uniform(0.01, 1.0, shape).astype(np.float32)  # no zero of its own
    mask = masked_pixels(shape, 0.25, seed=5)
    assert mask.shape == shape[:-1] and 0.2 < mask.mean() < 0.3
    np.testing.assert_array_equal(mask, np.all(corrupt(x, "masking", 0.25, seed=5) == 0, axis=-1))


def test_same_seed_same_noise_different_seed_different_noise():
    a = corrupt(COLOUR, "gaussian", 0.2, seed=7)
    np.testing.assert_array_equal(a, corrupt(COLOUR, "gaussian", 0.2, seed=7))
    assert not np.array_equal(a, corrupt(COLOUR, "gaussian", 0.2, seed=8))


def test_single_image_and_batch_agree_on_shape():
    assert corrupt(COLOUR[0], "masking", 0.5).shape == COLOUR[0].shape
    with pytest.raises(ValueError, match="expected an image"):
        corrupt(np.zeros(5), "masking", 0.5)


def test_spec_parsing():
    assert CorruptionSpec.parse("gaussian:0.3") == CorruptionSpec("gaussian", 0.3, 0.3)
    assert CorruptionSpec.parse("masking:0.1-0.6") == CorruptionSpec("masking", 0.1, 0.6)
    assert str(CorruptionSpec.parse("salt_pepper:0.05-0.5")) == "salt_pepper:0.05-0.5"
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        CorruptionSpec.parse("blur:0.3")
    with pytest.raises(ValueError, match="NAME:LEVEL or NAME:LOW-HIGH"):
        CorruptionSpec.parse("gaussian")
    with pytest.raises(ValueError, match=r"got 0.6 to 0.1"):
        CorruptionSpec.parse("masking:0.6-0.1")
    # Numbers as Python writes them: exponents are not ranges, and bad numbers get the usage line.
    assert CorruptionSpec.parse("gaussian:5e-2") == CorruptionSpec("gaussian", 0.05, 0.05)
    assert CorruptionSpec.parse("gaussian:5e-2-1E-1") == CorruptionSpec("gaussian", 0.05, 0.1)
    assert CorruptionSpec.parse("masking: .1 - .5") == CorruptionSpec("masking", 0.1, 0.5)
    for bad in ("gaussian:1.2.3", "gaussian:0.1-", "gaussian:e-2"):
        with pytest.raises(ValueError, match="NAME:LEVEL or NAME:LOW-HIGH"):
            CorruptionSpec.parse(bad)


def test_corrupt_batch_draws_one_spec_and_level_per_image():
    specs = [CorruptionSpec.parse("masking:0.1-0.6"), CorruptionSpec.parse("salt_pepper:0.5")]
    x = tf.constant(np.full((400, 16, 16, 1), 0.5, np.float32))
    out = corrupt_batch(x, specs, tf.constant([1, 2])).numpy()
    zero = (out == 0).mean(axis=(1, 2, 3))
    salt = (out == 1).mean(axis=(1, 2, 3))
    masked = salt == 0  # masking never sets a pixel to 1
    assert 0.35 < masked.mean() < 0.65
    # Masking levels spread over the range; salt-and-pepper images all sit near p = 0.5.
    assert zero[masked].min() < 0.15 and zero[masked].max() > 0.55
    assert np.allclose(zero[~masked] + salt[~masked], 0.5, atol=0.15)  # 256 px: std 0.03
    again = corrupt_batch(x, specs, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, corrupt_batch(x, specs, tf.constant([1, 3])).numpy())


def test_a_corruption_listed_twice_gets_twice_the_share():
    # Specs are drawn with equal odds, which is how a run gives one corruption a larger share.
    specs = [CorruptionSpec.parse(t) for t in ("masking:0.3", "masking:0.3", "salt_pepper:0.5")]
    x = tf.constant(np.full((600, 8, 8, 1), 0.5, np.float32))
    out = corrupt_batch(x, specs, tf.constant([4, 5])).numpy()
    masked = ((out == 1).sum(axis=(1, 2, 3)) == 0) & ((out == 0).any(axis=(1, 2, 3)))
    assert 0.59 < masked.mean() < 0.74  # 2/3 expected; binomial std 0.019


def test_benchmark_grid_names_are_registered():
    assert {name for name, _ in BENCHMARK_SETTINGS} == set(CORRUPTIONS)


JAX_PROBE = """
import json, numpy as np, jax
from data.corruption import corrupt, corrupt_batch, CorruptionSpec
grey = np.full((16, 32, 32, 3), 0.5, np.float32)
specs = [CorruptionSpec.parse("masking:0.1-0.6"), CorruptionSpec.parse("salt_pepper:0.5")]
batch = np.asarray(jax.jit(lambda x, s: corrupt_batch(x, specs, s))(grey, np.array([1, 2])))
sp = corrupt(grey, "salt_pepper", 0.3, 1)
mask = corrupt(grey, "masking", 0.3, 1)
print(json.dumps({
    "gaussian_std": float((corrupt(grey, "gaussian", 0.05, 1) - grey).std()),
    "same_seed": bool(np.array_equal(corrupt(grey, "gaussian", 0.2, 7), corrupt(grey, "gaussian", 0.2, 7))),
    "other_seed": bool(np.array_equal(corrupt(grey, "gaussian", 0.2, 7), corrupt(grey, "gaussian", 0.2, 8))),
    "sp_hit": float((sp != grey).any(-1).mean()), "sp_salt": float((sp == 1).all(-1).mean()),
    "sp_whole_pixels": bool(np.array_equal((sp != grey).any(-1), (sp != grey).all(-1))),
    "mask_hit": float((mask == 0).all(-1).mean()),
    "batch_masked_share": float(((batch == 1).sum(axis=(1, 2, 3)) == 0).mean()),
}))
"""


def test_same_corruptions_on_the_jax_backend_without_tensorflow(tmp_path):
    blocked = tmp_path / "tensorflow"
    blocked.mkdir()
    (blocked / "__init__.py").write_text('raise ImportError("no TensorFlow here (test)")')
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", JAX_PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(stats["gaussian_std"] - 0.05) < 0.002
    assert stats["same_seed"] and not stats["other_seed"]
    assert abs(stats["sp_hit"] - 0.3) < 0.02 and abs(stats["sp_salt"] - 0.15) < 0.02
    assert stats["sp_whole_pixels"]
    assert abs(stats["mask_hit"] - 0.3) < 0.02
    assert 0.2 < stats["batch_masked_share"] < 0.8  # one spec drawn per image


def test_a_level_out_of_bounds_is_named_as_given():
    from data.corruption import CorruptionSpec

    for low, high, shown in ((-0.2, -0.2, "got -0.2"), (5.0, 5.0, "got 5.0"), (0.1, 3.0, "got 0.1 to 3.0")):
        with pytest.raises(ValueError) as info:
            CorruptionSpec("gaussian", low, high)
        assert str(info.value).endswith(shown), info.value
