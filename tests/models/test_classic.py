import sys

import numpy as np
import pytest

from data.corruption import CORRUPTIONS, corrupt, masked_pixels
from data.metrics import psnr
from models.classic import CLASSIC_DENOISERS


def smooth_image(channels: int, size: int = 48) -> np.ndarray:
    """Smooth waves in [0.2, 0.8], a different phase per channel: easy to denoise, no clipping."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    planes = [0.5 + 0.3 * np.sin(2 * np.pi * (xx + c / 3)) * np.cos(2 * np.pi * yy) for c in range(channels)]
    return np.stack(planes, axis=-1).astype(np.float32)


def available(name):
    reason = CLASSIC_DENOISERS[name].unavailable()
    if reason:
        pytest.skip(reason)
    return CLASSIC_DENOISERS[name]


NOISE_DENOISERS = [n for n, d in CLASSIC_DENOISERS.items() if "gaussian" in d.corruptions]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NOISE_DENOISERS)
def test_default_parameters_remove_gaussian_noise(name, channels):
    denoiser = available(name)
    clean = smooth_image(channels)
    noisy = corrupt(clean, "gaussian", 0.1, seed=0)
    out = denoiser(noisy)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert psnr(clean, out) > psnr(clean, noisy) + 3.0


@pytest.mark.parametrize("name", list(CLASSIC_DENOISERS))
def test_every_grid_entry_runs_and_uses_only_known_parameters(name):
    denoiser = available(name)
    assert denoiser.grid and all(set(p) == set(denoiser.default) for p in denoiser.grid)
    assert set(denoiser.corruptions) <= set(CORRUPTIONS)
    noisy = corrupt(smooth_image(1, 24), "masking", 0.2, seed=1)
    for params in denoiser.grid:
        out = denoiser(noisy, params)
        assert out.shape == noisy.shape and np.isfinite(out).all()


def test_median_removes_salt_and_pepper():
    clean = smooth_image(3)
    noisy = corrupt(clean, "salt_pepper", 0.1, seed=2)
    assert psnr(clean, CLASSIC_DENOISERS["median3"](noisy)) > psnr(clean, noisy) + 10.0


@pytest.mark.parametrize("channels", [1, 3])
def test_inpaint_fills_the_zeros_and_keeps_every_other_pixel(channels):
    clean = smooth_image(channels)
    noisy = corrupt(clean, "masking", 0.25, seed=3)
    out = CLASSIC_DENOISERS["inpaint"](noisy)
    kept = np.any(noisy != 0.0, axis=-1)
    np.testing.assert_array_equal(out[kept], noisy[kept])  # exactly, though colour is inpainted in 8 bits
    assert psnr(clean, out) > psnr(clean, noisy) + 15.0


@pytest.mark.parametrize("channels", [1, 3])
def test_inpaint_told_the_mask_leaves_the_images_own_zeros_alone(channels):
    clean = smooth_image(channels)
    clean[: clean.shape[0] // 2] = 0.0  # a black background, as Fashion-MNIST's
    noisy = corrupt(clean, "masking", 0.25, seed=3)
    mask = masked_pixels(clean.shape, 0.25, seed=3)
    told = CLASSIC_DENOISERS["inpaint"](noisy, mask=mask)
    np.testing.assert_array_equal(told[~mask], noisy[~mask])  # only the noise's holes are filled
    assert psnr(clean, told) > psnr(clean, CLASSIC_DENOISERS["inpaint"](noisy)) + 3.0
    assert psnr(clean, told) > psnr(clean, noisy) + 10.0
    with pytest.raises(ValueError, match=r"the inpainting mask is \(3, 3\)"):
        CLASSIC_DENOISERS["inpaint"](noisy, mask=np.ones((3, 3), bool))
    median = CLASSIC_DENOISERS["median3"]  # the others are not told it
    np.testing.assert_array_equal(median(noisy, mask=mask), median(noisy))


def test_colour_non_local_means_keeps_rgb_order():
    clean = np.empty((32, 32, 3), np.float32)
    clean[:] = (0.8, 0.4, 0.1)
    noisy = corrupt(clean, "gaussian", 0.05, seed=4)
    out = CLASSIC_DENOISERS["nl_means"](noisy, {"h": 13, "template": 7, "search": 21})
    np.testing.assert_allclose(out.mean(axis=(0, 1)), (0.8, 0.4, 0.1), atol=0.02)


def test_bad_image_and_unknown_parameters_are_clear_errors():
    tv = CLASSIC_DENOISERS["tv"]
    expected = r"expected a float image \(H, W, 1\) or \(H, W, 3\), got shape \(8, 8\)"
    with pytest.raises(ValueError, match=expected):
        tv(np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"tv takes parameters \['weight'\], got unknown \['strength'\]"):
        tv(np.zeros((8, 8, 1)), {"strength": 2})
    with pytest.raises(ValueError, match="inpaint method must be one of"):
        CLASSIC_DENOISERS["inpaint"](np.zeros((8, 8, 1)), {"radius": 3, "method": "magic"})


def test_missing_bm3d_is_reported_with_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # what an uninstalled package looks like to import
    bm3d = CLASSIC_DENOISERS["bm3d"]
    reason = bm3d.unavailable()
    assert "'bm3d' is not installed" in reason and "requirements-bench.txt" in reason
    assert "non-commercial" in reason
    with pytest.raises(ImportError, match="requirements-bench.txt"):
        bm3d(smooth_image(1, 16))


def test_bm3d_refuses_images_no_longer_than_its_blocks_instead_of_crashing():
    # bm3d 4.0.3 raises below its 8-pixel blocks and dies with a segfault at exactly 8 x 8.
    bm3d = available("bm3d")
    for shape in ((8, 8, 1), (8, 8, 3), (5, 40, 1)):
        with pytest.raises(ValueError, match="longer than its 8-pixel blocks"):
            bm3d(np.full(shape, 0.5, np.float32))
    assert bm3d(corrupt(smooth_image(1, 9), "gaussian", 0.1, seed=0)).shape == (9, 9, 1)


def test_bm3d_denoises_flat_images_and_grey_stored_as_rgb_without_nan():
    bm3d = available("bm3d")
    flat = np.full((32, 32, 3), 0.5, np.float32)
    np.testing.assert_array_equal(bm3d(flat), flat)
    grey = np.repeat(smooth_image(1), 3, axis=-1)  # R = G = B: bm3d_rgb alone returns NaN here
    noisy = np.repeat(corrupt(grey[..., :1], "gaussian", 0.1, seed=0), 3, axis=-1)
    out = bm3d(noisy)
    assert np.isfinite(out).all() and (out == out[..., :1]).all()
    assert psnr(grey, out) > psnr(grey, noisy) + 3.0
