"""Makes the UI's example images in ``data/samples/`` from real data, with the project's own code.

Each noisy sample sits beside its clean original, so the UI can score it (PSNR/SSIM):

- ``clothes_clean.png``: one Fashion-MNIST *test* image per class (none was trained on), laid out
  2 x 5 at native 28 x 28 resolution; ``clothes_gaussian.png`` and ``clothes_salt_pepper.png``
  are it after :func:`data.corruption.corrupt`.
- ``photo_clean.png``: a crop of scikit-image's ``chelsea`` photo (not in any training folder);
  ``photo_gaussian.png`` is it with Gaussian noise.

Run ``python -m data.make_samples`` to rebuild them (deterministic: fixed seeds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data.corruption import corrupt
from data.datasets import load_named
from data.images import from_model, to_model

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# (file stem, corruption, level, seed) for each noisy version of a clean sample.
NOISY_VERSIONS = {
    "clothes": (("gaussian", 0.3, 1), ("salt_pepper", 0.2, 2)),
    "photo": (("gaussian", 0.12, 3),),
}


def clothes_grid(data_dir: str | None = None) -> np.ndarray:
    """The first Fashion-MNIST test image of each class, tiled 2 x 5, as ``(56, 140)`` uint8."""
    data = load_named("fashion_mnist", data_dir, download=False)
    firsts = [data.x_test[np.flatnonzero(data.y_test == c)[0]] for c in range(10)]
    tiles = np.stack(firsts)[..., 0]  # x_test is NHWC with one channel
    rows = [np.concatenate(tiles[r * 5:(r + 1) * 5], axis=1) for r in range(2)]
    return np.concatenate(rows, axis=0)


def photo_crop(size: int = 176) -> np.ndarray:
    """A ``size`` x ``size`` RGB uint8 crop (eye and nose) of ``skimage.data.chelsea()``."""
    import skimage.data

    photo = skimage.data.chelsea()
    top, left = 90, 120
    return np.ascontiguousarray(photo[top:top + size, left:left + size])


def make_samples(out_dir: Path = SAMPLES_DIR, data_dir: str | None = None) -> list[Path]:
    """Writes the clean samples and their noisy versions as PNG; returns the paths written."""
    from data.images import ImageFile, save_image

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, clean in (("clothes", clothes_grid(data_dir)), ("photo", photo_crop())):
        mode = "L" if clean.ndim == 2 else "RGB"
        versions = [(f"{stem}_clean", clean)]
        for name, level, seed in NOISY_VERSIONS[stem]:
            noisy = from_model(corrupt(to_model(clean), name, level, seed=seed), np.uint8)
            versions.append((f"{stem}_{name}", noisy.reshape(clean.shape)))
        for file_stem, pixels in versions:
            path = out_dir / f"{file_stem}.png"
            save_image(ImageFile(pixels=pixels if pixels.ndim == 3 else pixels[..., None],
                                 alpha=None, format="PNG", mode=mode, info={}), path, format="PNG")
            written.append(path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="folder to write the PNGs to")
    parser.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST idx files")
    args = parser.parse_args(argv)
    paths = make_samples(args.out, args.data_dir)
    total = sum(p.stat().st_size for p in paths)
    for p in paths:
        print(f"{p.stat().st_size:>8,d} B  {p}")
    print(f"{total:>8,d} B  total")


if __name__ == "__main__":
    main()
