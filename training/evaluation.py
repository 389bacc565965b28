"""Denoising scores of any denoiser on a fixed (corruption, level) grid: one protocol for run
metrics, model cards and the benchmark."""

from __future__ import annotations

import numpy as np

from data.corruption import corrupt
from data.metrics import psnr


def evaluate_denoiser(denoise_batch, clean: np.ndarray, settings, seed: int = 0) -> dict:
    """Mean PSNR of the corrupted input and of the denoised output, per setting.

    Args:
        denoise_batch: callable mapping a float batch ``(N, H, W, C)`` to its estimate.
        clean: float images in ``[0, 1]``, ``(N, H, W, C)``.
        settings: ``(name, level)`` pairs, e.g. :data:`data.corruption.BENCHMARK_SETTINGS`.
        seed: corruption seed (the same seed gives the same noisy images).

    Returns:
        ``{"gaussian:0.1": {"noisy_psnr": ..., "denoised_psnr": ...}, ...}``.
    """
    scores = {}
    for name, level in settings:
        noisy = corrupt(clean, name, level, seed)
        estimate = np.clip(denoise_batch(noisy), 0.0, 1.0)
        scores[f"{name}:{level:g}"] = {
            "noisy_psnr": round(float(np.mean(psnr(clean, noisy))), 3),
            "denoised_psnr": round(float(np.mean(psnr(clean, estimate))), 3),
        }
    return scores
