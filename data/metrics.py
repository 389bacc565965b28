"""Image quality scores, on float images in [0, 1] (data range 1.0)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def psnr(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """PSNR in dB per image, data range 1.0; same as ``skimage.metrics.peak_signal_noise_ratio``.

    Vectorised over a leading batch axis: ``(N, H, W, C)`` gives ``(N,)``, ``(H, W, C)`` a scalar.
    A perfect estimate scores ``inf``.
    """
    clean = np.asarray(clean, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if clean.shape != estimate.shape:
        raise ValueError(f"shapes differ: clean {clean.shape} vs estimate {estimate.shape}")
    axes = tuple(range(clean.ndim - 3, clean.ndim)) if clean.ndim >= 3 else None
    mse = np.mean((clean - estimate) ** 2, axis=axes)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def ssim(clean: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """SSIM per image (scikit-image, data range 1.0); ``(N, H, W, C)`` gives ``(N,)``.

    The window shrinks to fit small images (7, 5 or 3 px); an image with a side under 3 px has
    no window and scores ``nan`` (undefined), as callers that show scores must expect.
    """
    clean, estimate = np.asarray(clean, np.float64), np.asarray(estimate, np.float64)
    if clean.ndim == 3:
        return np.float64(_ssim_one(clean, estimate))
    return np.asarray([_ssim_one(a, b) for a, b in zip(clean, estimate, strict=True)])


def _ssim_one(a, b):
    win = min(7, a.shape[0], a.shape[1])
    if win < 3:  # skimage would divide by zero: a 1-pixel window has no sample variance
        return np.nan
    win -= 1 - win % 2  # odd window that fits small images
    return structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win)
