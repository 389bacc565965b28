import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from data.metrics import psnr, ssim


def test_psnr_and_ssim_match_scikit_image_per_image():
    rng = np.random.default_rng(0)
    clean = rng.random((3, 20, 24, 3))
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    pairs = list(zip(clean, noisy, strict=True))
    want_psnr = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in pairs]
    want_ssim = [structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in pairs]
    np.testing.assert_allclose(psnr(clean, noisy), want_psnr, rtol=1e-12)
    np.testing.assert_allclose(ssim(clean, noisy), want_ssim, rtol=1e-12)


def test_ssim_of_images_too_small_for_a_window_is_nan_not_an_error():
    rng = np.random.default_rng(1)
    for shape in ((1, 50, 1), (2, 30, 3), (40, 1, 3)):
        clean = rng.random(shape)
        assert np.isnan(ssim(clean, clean * 0.9))
        assert np.isfinite(psnr(clean, clean * 0.9))
    small = rng.random((3, 3, 1))  # the smallest window, 3 x 3, still fits
    assert ssim(small, small) == 1.0 and 0.0 < ssim(small, small * 0.5) < 1.0
