"""A test corpus of real image files in every format the engine reads, and of broken files.

:func:`make_corpus` writes noisy images (Fashion-MNIST test images laid out in small mosaics,
corrupted with :func:`data.corruption.corrupt`) in PNG 8/16-bit, palette, grey+alpha and RGBA (8/16-bit),
JPEG baseline/progressive/CMYK/grey/EXIF-rotated, TIFF 8/16-bit, BMP, WebP, GIF, PGM/PPM, in
nested folders with names holding spaces and non-ASCII letters; beside them broken files (a
truncated PNG and JPEG, a zero-byte file, a text file named ``.png``, decompression-bomb
headers, absurd dimensions). A second folder gets the clean originals as lossless PNGs at the
same relative stem, so denoising can be scored against them.

Each :class:`CorpusFile` says what the file is and what must happen to it: denoised with its
mode and bit depth kept, or refused with a specific :class:`data.images.ImageReadError` reason.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from data.corruption import corrupt
from data.datasets import load_named
from data.images import _png_grey_alpha16, from_model, to_model

HEIGHT, WIDTH = 55, 81
"""Corpus image size: 2 x 3 Fashion-MNIST tiles, cropped to sides that are not multiples of the
model stride (so the engine's padding is exercised)."""


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One corpus file and what the engine must make of it.

    Attributes:
        rel: path relative to the corpus folder (POSIX separators).
        reason: ``None`` if it must be denoised, else the expected ``ImageReadError.reason``.
        mode: the Pillow mode of the file (and of the output).
        dtype: ``"uint8"`` or ``"uint16"`` (pixels as :func:`data.images.load_image` gives).
        alpha: whether it has an alpha channel (which must come out untouched).
        lossless: whether the format stores the denoised pixels exactly (PSNR can be compared
            tightly).
        reference: relative path of the clean original in the reference folder.
        orientation: the EXIF orientation tag the file carries (1 = none).
    """

    rel: str
    reason: str | None = None
    mode: str | None = None
    dtype: str | None = None
    alpha: bool = False
    lossless: bool = True
    reference: str | None = None
    orientation: int = 1


@lru_cache(maxsize=1)
def _fashion_test() -> np.ndarray:
    return load_named("fashion_mnist", download=False).x_test[..., 0]


def clean_mosaic(index: int) -> np.ndarray:
    """A ``(HEIGHT, WIDTH)`` uint8 mosaic of six Fashion-MNIST test images, different per index."""
    tiles = _fashion_test()[6 * index: 6 * index + 6]
    rows = [np.concatenate(tiles[r * 3:(r + 1) * 3], axis=1) for r in range(2)]
    return np.concatenate(rows, axis=0)[:HEIGHT, :WIDTH]


def clean_colour(index: int) -> np.ndarray:
    """A ``(HEIGHT, WIDTH, 3)`` uint8 colour image: three different mosaics as R, G and B."""
    return np.stack([clean_mosaic(3 * index + c) for c in range(3)], axis=-1)


def alpha_channel(dtype=np.uint8) -> np.ndarray:
    """A soft disc of opacity with a transparent corner: easy to spot if changed."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    r = np.hypot((yy - HEIGHT / 2) / HEIGHT, (xx - WIDTH / 2) / WIDTH)
    alpha = np.clip(1.2 - 1.6 * r, 0.0, 1.0)
    alpha[:8, :8] = 0.0
    return from_model(alpha, dtype)


def add_noise(clean: np.ndarray, level: float, seed: int, dtype=np.uint8) -> np.ndarray:
    """``clean`` (uint8, ``(H, W)`` or ``(H, W, C)``) with Gaussian noise of std ``level``, as ``dtype``."""
    noisy = corrupt(to_model(clean), "gaussian", level, seed=seed)
    return from_model(noisy, dtype).reshape(clean.shape)


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """An sRGB ICC profile (to check that profiles survive); made once, as it holds a timestamp."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with a camera make, a software tag and an orientation."""
    exif = Image.Exif()
    exif[0x010F] = "DAE Test Camera"  # Make
    exif[0x0131] = "tests/corpus.py"  # Software
    if orientation != 1:
        exif[0x0112] = orientation
    return exif


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _save_pil(im: Image.Image, path: Path, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)


def _save_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _save_cv2(arr: np.ndarray, path: Path) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = arr[..., [2, 1, 0, 3]] if arr.shape[-1] == 4 else arr[..., ::-1]
    ok, data = cv2.imencode(path.suffix, np.ascontiguousarray(bgr))
    assert ok, f"OpenCV could not encode {path}"
    path.write_bytes(data.tobytes())


def _save_reference(clean: np.ndarray, path: Path) -> None:
    """Clean originals as lossless PNG: Pillow for 8-bit and 16-bit grey, OpenCV for 16-bit colour."""
    if clean.dtype == np.uint16 and clean.ndim == 3:
        _save_cv2(clean, path)
    else:
        _save_pil(Image.fromarray(clean), path, "PNG")


def make_corpus(noisy_dir, clean_dir, level: float = 0.25, seed: int = 0) -> list[CorpusFile]:
    """Writes the corpus: noisy files under ``noisy_dir``, clean PNGs under ``clean_dir``.

    Args:
        noisy_dir: folder for the files to denoise (created).
        clean_dir: folder for the clean originals, one PNG per usable file at the same
            relative stem (created).
        level: Gaussian noise std in ``[0, 1]`` units.
        seed: noise seed.

    Returns:
        One :class:`CorpusFile` per file written under ``noisy_dir``.
    """
    noisy_dir, clean_dir = Path(noisy_dir), Path(clean_dir)
    files: list[CorpusFile] = []
    counter = iter(range(1000))

    def add(rel, clean, write, mode, alpha=False, lossless=True, orientation=1):
        ref = str(Path(rel).with_suffix(".png").as_posix())
        _save_reference(clean, clean_dir / ref)
        write(noisy_dir / rel)
        dtype = "uint16" if clean.dtype == np.uint16 else "uint8"
        files.append(CorpusFile(rel, None, mode, dtype, alpha, lossless, ref, orientation))

    def grey(dtype=np.uint8):
        i = next(counter)
        clean = clean_mosaic(i)
        if dtype == np.uint16:
            clean = clean.astype(np.uint16) * 257
        return clean, add_noise(clean, level, seed + i, dtype)

    def colour(dtype=np.uint8):
        i = next(counter)
        clean = clean_colour(i)
        if dtype == np.uint16:
            clean = clean.astype(np.uint16) * 257
        return clean, add_noise(clean, level, seed + i, dtype)

    a8 = alpha_channel()

    # PNG: 8/16-bit grey and colour, palette, grey+alpha and RGBA (8 and 16 bit each).
    c, n = grey()
    add("png/grey8.png", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PNG"), "L")
    c, n = grey(np.uint16)
    add("png/grey16.png", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PNG"), "I;16")
    c, n = colour()
    add("png/rgb8.png", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PNG",
                                                     icc_profile=srgb_profile()), "RGB")
    c, n = colour(np.uint16)
    add("png/rgb16.png", c, lambda p, n=n: _save_cv2(n, p), "RGB")
    c, n = colour()
    add("png/palette.png", c, lambda p, n=n: _save_pil(
        Image.fromarray(n).quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE), p, "PNG"),
        "P", lossless=False)
    c, n = grey()
    add("png/grey_alpha.png", c, lambda p, n=n: _save_pil(
        Image.fromarray(np.stack([n, a8], axis=-1), "LA"), p, "PNG"), "LA", alpha=True)
    c, n = grey(np.uint16)
    a16 = alpha_channel(np.uint16)
    # neither Pillow nor OpenCV writes a 16-bit grey+alpha PNG: the engine's own encoder does
    add("png/grey_alpha16.png", c,
        lambda p, n=n: _save_bytes(_png_grey_alpha16(np.stack([n, a16], axis=-1)), p), "LA", alpha=True)
    c, n = colour()
    add("png/rgba.png", c, lambda p, n=n: _save_pil(
        Image.fromarray(np.dstack([n, a8]), "RGBA"), p, "PNG"), "RGBA", alpha=True)
    c, n = colour(np.uint16)
    add("png/rgba16.png", c, lambda p, n=n: _save_cv2(np.dstack([n, alpha_channel(np.uint16)]), p),
        "RGBA", alpha=True)

    # JPEG: baseline, progressive, CMYK, grey, EXIF-rotated (with ICC and camera EXIF).
    c, n = colour()
    add("jpeg/baseline.jpg", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "JPEG", quality=95),
        "RGB", lossless=False)
    c, n = colour()
    add("jpeg/progressive.jpg", c, lambda p, n=n: _save_pil(
        Image.fromarray(n), p, "JPEG", quality=95, progressive=True), "RGB", lossless=False)
    c, n = colour()
    add("jpeg/cmyk.jpg", c, lambda p, n=n: _save_pil(
        Image.fromarray(n).convert("CMYK"), p, "JPEG", quality=95), "CMYK", lossless=False)
    c, n = grey()
    add("jpeg/grey.jpg", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "JPEG", quality=95),
        "L", lossless=False)
    c, n = colour()
    # Orientation 6: the viewer rotates 90 degrees clockwise, so store it turned counter-clockwise.
    add("jpeg/rotated.jpg", c, lambda p, n=n: _save_pil(
        Image.fromarray(np.ascontiguousarray(np.rot90(n, 1))), p, "JPEG", quality=95,
        exif=camera_exif(6), icc_profile=srgb_profile()), "RGB", lossless=False, orientation=6)

    # TIFF 8/16-bit, BMP, WebP (lossy and lossless with alpha), GIF (two frames), PGM/PPM.
    c, n = grey()
    add("tiff/grey8.tif", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "TIFF"), "L")
    c, n = grey(np.uint16)
    add("tiff/grey16.tif", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "TIFF"), "I;16")
    c, n = colour()
    add("tiff/rgb8.tif", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "TIFF",
                                                      compression="tiff_lzw"), "RGB")
    c, n = colour(np.uint16)
    add("tiff/rgb16.tif", c, lambda p, n=n: _save_cv2(n, p), "RGB")
    c, n = colour()
    add("other/image.bmp", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "BMP"), "RGB")
    c, n = colour()
    add("other/lossy.webp", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "WEBP", quality=90),
        "RGB", lossless=False)
    c, n = colour()
    add("other/lossless_alpha.webp", c, lambda p, n=n: _save_pil(
        Image.fromarray(np.dstack([n, a8]), "RGBA"), p, "WEBP", lossless=True, exact=True),
        "RGBA", alpha=True)
    c, n = colour()

    def gif(p, n=n):
        first = Image.fromarray(n).quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        second = Image.fromarray(255 - n).quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        _save_pil(first, p, "GIF", save_all=True, append_images=[second], duration=100, loop=0)

    add("other/animation.gif", c, gif, "P", lossless=False)
    c, n = grey()
    add("other/grey.pgm", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PPM"), "L")
    c, n = grey(np.uint16)
    add("other/grey16.pgm", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PPM"), "I")
    c, n = colour()
    add("other/colour.ppm", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PPM"), "RGB")
    c, n = colour(np.uint16)
    add("other/colour16.ppm", c, lambda p, n=n: _save_cv2(n, p), "RGB")

    # Nested folders and names with spaces and non-ASCII letters.
    c, n = grey()
    add("with spaces/a photo (1).png", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PNG"), "L")
    c, n = colour()
    add("ünïcödé/日本語 ß.png", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PNG"), "RGB")
    c, n = grey()
    add("deep/a/b/c/nested.png", c, lambda p, n=n: _save_pil(Image.fromarray(n), p, "PNG"), "L")

    files.extend(_broken_files(noisy_dir))
    return files


def _broken_files(folder: Path) -> list[CorpusFile]:
    bad = folder / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(clean_colour(0)).save(buf, "PNG")
    (bad / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(clean_colour(0)).save(buf, "JPEG")
    (bad / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("These are my notes, not a picture.\n")
    (bad / "bomb.png").write_bytes(png_header_only(100_000, 100_000))  # 10 GP: Pillow's own limit
    (bad / "big_header.png").write_bytes(png_header_only(12_000, 12_000))  # 144 MP: our limit
    (bad / "absurd.png").write_bytes(png_header_only(1_000_000, 1))
    return [
        CorpusFile("bad/truncated.png", "truncated"),
        CorpusFile("bad/truncated.jpg", "truncated"),
        CorpusFile("bad/empty.png", "empty"),
        CorpusFile("bad/notes.png", "not_an_image"),
        CorpusFile("bad/bomb.png", "too_large"),
        CorpusFile("bad/big_header.png", "too_large"),
        CorpusFile("bad/absurd.png", "bad_dimensions"),
    ]


def corpus_fixture(tmp_path_factory, name: str) -> tuple[Path, dict[str, CorpusFile]]:
    """For module-scoped fixtures: ``(root, {rel: CorpusFile})`` with the noisy files under
    ``root / "noisy"`` and the clean ones under ``root / "clean"``; skips the tests when the
    Fashion-MNIST files are missing."""
    import pytest

    from tests.helpers import fashion_mnist_available

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST files missing (make setup): the corpus is made from them")
    root = tmp_path_factory.mktemp(name)
    return root, {f.rel: f for f in make_corpus(root / "noisy", root / "clean")}
