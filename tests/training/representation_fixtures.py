"""Small real inputs for the representation tests: a tiny DAE file and a tiny IDX dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.datasets import write_idx

IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def quadrant_images(labels: np.ndarray, size: int, rng) -> np.ndarray:
    """Grey images whose class (0-3) is the quadrant holding a bright square, plus noise."""
    images = rng.integers(0, 60, (len(labels), size, size), dtype=np.uint8)
    half = size // 2
    for i, label in enumerate(labels):
        top, left = (label // 2) * half, (label % 2) * half
        images[i, top: top + half, left: left + half] += 180
    return images


def write_quadrant_dataset(folder: Path, n_train: int = 400, n_test: int = 100, size: int = 8,
                           seed: int = 0) -> Path:
    """A Fashion-MNIST-shaped IDX folder with 4 easy classes (for ``--data-dir``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y_train, y_test = rng.integers(0, 4, n_train), rng.integers(0, 4, n_test)
    arrays = {"x_train": quadrant_images(y_train, size, rng), "y_train": y_train,
              "x_test": quadrant_images(y_test, size, rng), "y_test": y_test}
    for key, name in IDX_NAMES.items():
        write_idx(folder / name, arrays[key])
    return folder


def save_tiny_dae(path: Path, channels: int = 1, skips: bool = True, seed: int = 0) -> Path:
    """A small untrained ConvDAE saved as ``.keras`` (stride 4, an 8-channel code)."""
    import keras

    from models.conv_dae import ConvDAE

    keras.utils.set_random_seed(seed)
    model = ConvDAE(channels=channels, widths=(4, 8), bottleneck=8, skips=skips, residual=skips,
                    name="tiny_dae")
    model.save(path)
    return path
