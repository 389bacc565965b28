"""Builds the ``photo`` model's training folder from photographs that install here.

    apt-get download lomiri-wallpapers-16.04 && dpkg-deb -x lomiri-wallpapers-16.04_*.deb runs/lomiri
    python -m data.photo_folder --out runs/photo-train \
        /usr/share/backgrounds/mate/nature runs/lomiri/usr/share/backgrounds

The sources are folders searched recursively; the default is Debian's ``mate-backgrounds``
nature photos (12). ``lomiri-wallpapers-16.04`` adds 15 more photos. Each photo is written as PNG at
:data:`SIZES` (its longer side, Lanczos): shrinking averages away the camera's own noise and
JPEG blocks, so that the clean targets are clean, and brings the detail per pixel near that of
ordinary test photos (scikit-image's samples are 300-640 pixels). No scikit-image sample is
used: those are the benchmark's test and tuning photos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data.datasets import PHOTO_COPY_SIZES, list_images
from data.images import ImageFile, ImageReadError, read_image, save_image

DEFAULT_SOURCES = ("/usr/share/backgrounds/mate/nature",)
SIZES = PHOTO_COPY_SIZES
"""Longer sides, in pixels, of each photo's training copies (never enlarged)."""


def shrink(image: np.ndarray, longer_side: int) -> np.ndarray:
    """``image`` resized (Lanczos) so that its longer side is ``longer_side``; never enlarged."""
    from PIL import Image

    scale = longer_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def build(sources, out: Path, sizes=SIZES) -> list[Path]:
    """Writes every readable photo of ``sources`` at each of ``sizes`` into ``out``.

    Unreadable files are skipped with a message; returns the files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    paths = sorted({path.resolve() for folder in sources for path in list_images(folder)})
    stems: dict[str, Path] = {}
    for path in paths:  # out/NAME_SIZE.png: two photos of one name would overwrite each other
        if path.stem in stems:
            raise ValueError(f"{stems[path.stem]} and {path} would both be written as "
                             f"{path.stem}_SIZE.png in {out}; rename one of them")
        stems[path.stem] = path
    for path in paths:
        try:
            image = read_image(path, mode="RGB")
        except ImageReadError as err:
            print(f"skipped: {err}", file=sys.stderr)  # the message names the file
            continue
        for side in sizes:
            written.append(save_image(ImageFile(shrink(image, side), None, "PNG", "RGB"),
                                      out / f"{path.stem}_{side}.png"))
    if not written:
        raise ValueError(f"no readable photo in {', '.join(map(str, sources))}")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", default=list(DEFAULT_SOURCES),
                        help="folders of photos (default: the mate-backgrounds nature photos)")
    parser.add_argument("--out", required=True, help="folder to write the training PNGs into")
    args = parser.parse_args(argv)
    missing = [s for s in args.sources if not Path(s).is_dir()]
    if missing:
        print(f"error: every source must be a folder; none of {', '.join(missing)} is a folder",
              file=sys.stderr)
        return 2
    try:
        written = build(args.sources, Path(args.out))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(written)} training images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
