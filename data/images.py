"""The one pair of functions through which pixels enter and leave the models, and image files.

``to_model`` owns dtype, range and bit depth on the way in (integers of any depth to float32
in ``[0, 1]``, or the range a model's card asks for, always ``(H, W, C)``); ``from_model`` owns
the way back (clip, round, the requested integer depth). Everything else (datasets, engine, UI,
benchmarks) calls these. Data of fewer bits in a 16-bit file (a 12-bit camera's 0 .. 4095) are
first brought to the full 16-bit range by ``to_full_scale``, and back by ``from_full_scale``.

``load_image`` / ``save_image`` read and write real files: PNG (8/16-bit, palette, grey+alpha,
RGBA), JPEG (baseline, progressive, CMYK, grey, EXIF-rotated), TIFF (8/16-bit, incl. CMYK; every
page with ``pages=True``), BMP, WebP, AVIF (8-bit), GIF (first frame), PGM/PPM. Pixels come out
upright (EXIF orientation applied) with the alpha channel split off, so a denoiser only ever
sees colour; ``save_image`` writes them back in the
original mode and bit depth with the ICC profile (unless a CMYK file's becomes RGB), EXIF
(minus orientation) and XMP (its orientation set to 1), atomically.
Every file that cannot be used raises a subclass of :class:`ImageReadError` that says why.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import stat
import struct
import tempfile
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image ``load_image`` decodes by default (100 MP: a 24 MP photo passes with room to
spare, while a decompression bomb, a few kB claiming gigapixels, is refused before decoding)."""

MAX_SIDE = 65_536
"""Longest side accepted: no JPEG or WebP can be larger, and no camera or scanner comes close."""

EXIF_ORIENTATION = 0x0112

PARTIAL_SUFFIX = ".partial"
"""Suffix of the hidden temporary files ``save_image`` writes before renaming them into place."""
_NAME_MAX = 255
"""Bytes in a file name on Linux, macOS and Windows file systems."""


def to_model(image: np.ndarray, value_range=(0.0, 1.0)) -> np.ndarray:
    """Converts an image or batch to float32 with an explicit channel axis.

    Args:
        image: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; uint8, uint16, bool or float
            (floats are taken to be in ``[0, 1]`` already).
        value_range: ``(low, high)`` the model expects (from its card); black maps to ``low``
            and full scale to ``high``. The default is ``[0, 1]``.

    Returns:
        float32 array, ``(H, W, C)`` or ``(N, H, W, C)``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected an image (H, W[, C]) or batch (N, H, W, C), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating):
        out = np.clip(arr, 0.0, 1.0).astype(np.float32)
    else:
        raise ValueError(f"unsupported pixel type {arr.dtype}; expected integers or floats")
    low, high = _check_range(value_range)
    if (low, high) != (0.0, 1.0):
        out = out * np.float32(high - low) + np.float32(low)
    return out


def from_model(image: np.ndarray, dtype=np.uint8, value_range=(0.0, 1.0)) -> np.ndarray:
    """Converts model output (float, nominally in ``value_range``) to the given pixel type.

    Args:
        image: float array of any shape.
        dtype: ``np.uint8``, ``np.uint16`` or a float type (then clipped to ``[0, 1]`` only).
        value_range: ``(low, high)`` the model works in (from its card); default ``[0, 1]``.

    Returns:
        The clipped, rounded array in ``dtype``.
    """
    arr = np.asarray(image, dtype=np.float32)
    low, high = _check_range(value_range)
    if (low, high) != (0.0, 1.0):
        arr = (arr - np.float32(low)) / np.float32(high - low)
    arr = np.clip(arr, 0.0, 1.0)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return arr.astype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"output pixel type must be uint8, uint16 or float, got {dtype}")
    return np.rint(arr * np.iinfo(dtype).max).astype(dtype)


BIT_DEPTHS = range(9, 17)
"""Bits a 16-bit file's samples may really use (:func:`to_full_scale`): scientific cameras and
microscopes store 10-, 12- or 14-bit data as 0 .. 2**N - 1 in 16-bit PNG and TIFF files."""


def to_full_scale(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Scales ``bits``-bit samples held in uint16 (0 .. 2**bits - 1) to the full 16-bit range.

    ``to_model`` divides uint16 by 65535, so 12-bit data (0 .. 4095) would reach a model at
    0 .. 0.06, far darker than anything it was trained on. Integer arithmetic, rounded to the
    nearest (never a tie: 2**bits - 1 is odd), so :func:`from_full_scale` undoes it exactly.

    Args:
        pixels: uint16 array of any shape.
        bits: the bits the samples use, in :data:`BIT_DEPTHS`.

    Returns:
        uint16 array, ``2**bits - 1`` mapped to 65535.

    Raises:
        BitDepthError: a sample is above ``2**bits - 1`` (the data are not ``bits``-bit; clipping
            them would change the image without a word).
    """
    top = _bit_depth_max(pixels, bits)
    found = int(pixels.max(initial=0))
    if found > top:
        raise BitDepthError(f"holds values up to {found}, above the {bits}-bit maximum {top}")
    wide = pixels.astype(np.uint64)  # 65535 x 65535 overflows 32 bits
    return ((wide * 65535 + top // 2) // top).astype(np.uint16)


def from_full_scale(pixels: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`to_full_scale`: full-range uint16 back to ``0 .. 2**bits - 1``,
    rounded to the nearest.

    Args:
        pixels: uint16 array of any shape.
        bits: the bits to keep, in :data:`BIT_DEPTHS`.

    Returns:
        uint16 array, 65535 mapped to ``2**bits - 1``.
    """
    top = _bit_depth_max(pixels, bits)
    return ((pixels.astype(np.uint64) * top + 32767) // 65535).astype(np.uint16)


def _bit_depth_max(pixels: np.ndarray, bits: int) -> int:
    if bits not in BIT_DEPTHS:
        raise ValueError(f"bit depth must be {BIT_DEPTHS.start} to {BIT_DEPTHS.stop - 1}, got {bits}")
    if pixels.dtype != np.uint16:
        raise ValueError(f"{bits}-bit samples are held in uint16, got {pixels.dtype}")
    return 2**bits - 1


def _check_range(value_range) -> tuple[float, float]:
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value range must be (low, high) with high > low, got {tuple(value_range)}")
    return low, high


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Makes a float ``(..., H, W, C)`` image have ``channels`` channels.

    Colour to grey uses ITU-R BT.601 luma (what Pillow's ``convert("L")`` uses); grey to colour
    repeats the channel.
    """
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1 and have == 3:
        luma = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        return (image @ luma)[..., None].astype(np.float32)
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=-1)
    raise ValueError(f"cannot convert {have} channels to {channels}; expected 1 or 3")


# ---------------------------------------------------------------- errors


class ImageReadError(ValueError):
    """An image file that cannot be used, with a message that says why.

    ``reason`` is a short machine-readable code (for manifests); subclasses set it.
    """

    reason = "unreadable"


class ImageNotFoundError(ImageReadError):
    """The path does not exist or is not a regular file."""

    reason = "not_found"


class ImageAccessError(ImageReadError):
    """The file is there but cannot be read (no permission, an I/O error)."""

    reason = "cannot_read"


class EmptyImageError(ImageReadError):
    """The file has zero bytes."""

    reason = "empty"


class NotAnImageError(ImageReadError):
    """The bytes are not an image in any format we read (a text file named ``.png``, ...)."""

    reason = "not_an_image"


class TruncatedImageError(ImageReadError):
    """The header is fine but the pixel data stops early or is damaged."""

    reason = "truncated"


class ImageTooLargeError(ImageReadError):
    """More pixels than the limit: a decompression bomb, or simply too big to denoise here."""

    reason = "too_large"


class ImageDimensionsError(ImageReadError):
    """The header claims a size no real image has (a zero or absurdly long side)."""

    reason = "bad_dimensions"


class UnsupportedImageError(ImageReadError):
    """A real image in a mode we do not denoise (32-bit float, multi-sample scientific data)."""

    reason = "unsupported"


class BitDepthError(ValueError):
    """Samples above the bit depth they were said to have (a 16-bit file given as 12-bit data
    holding values above 4095): :func:`to_full_scale` refuses rather than clips them."""

    reason = "above_bit_depth"


class ImageWriteError(OSError):
    """An image that cannot be written in the requested format (say, alpha into JPEG)."""

    reason = "write_failed"


# ---------------------------------------------------------------- reading


def read_image(path, mode: str | None = None) -> np.ndarray:
    """Reads an image file into a numpy array, EXIF orientation applied.

    Args:
        path: the file.
        mode: a Pillow mode to convert to (``"L"``, ``"RGB"``), or ``None`` to keep grey as
            ``(H, W)`` uint8/uint16 and everything else as RGB uint8.

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated or too large (one of
            its subclasses, each with a specific message).
    """
    from PIL import Image

    name, data = _read_source(path)
    with _open_pil(name, data, DEFAULT_MAX_PIXELS) as im:
        with _decoding(name):
            im.load()
        orientation = _orientation(im)  # 1 where the EXIF is damaged: the pixels are kept
        with _decoding(name):
            if mode is not None and im.mode.startswith("I"):  # Pillow's convert clips 16 bits at 255
                sixteen = np.clip(_native(np.asarray(im)), 0, 65535).astype(np.uint16)
                im = Image.fromarray(from_model(to_model(sixteen[..., None]), np.uint8)[..., 0])
            if mode is not None:
                im = im.convert(mode)
            elif im.mode not in ("L", "I;16", "RGB"):
                im = im.convert("RGB")
            arr = np.ascontiguousarray(_orient(np.asarray(im), orientation))
    return arr.astype(np.uint16) if arr.dtype.byteorder not in ("=", "|") else arr


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """An image as read from a file, ready for a denoiser and for writing back.

    Attributes:
        pixels: ``(H, W, C)`` uint8 or uint16, ``C`` 1 (grey) or 3 (colour), upright, no alpha.
        alpha: ``(H, W)`` of the same dtype, or ``None``.
        format: Pillow's format name (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``, ``"WEBP"``,
            ``"AVIF"``, ``"GIF"``, ``"PPM"``); a JPEG that Pillow calls ``"MPO"`` (many camera photos, which
            carry a second, preview image) is ``"JPEG"``.
        mode: the file's original Pillow mode (``"1"``, ``"L"``, ``"LA"``, ``"P"``, ``"RGB"``,
            ``"RGBA"``, ``"CMYK"``, ``"I;16"``, ...); 16-bit colour reads as ``"RGB"``/``"RGBA"``
            with uint16 pixels, and CMYK (8- or 16-bit) as RGB pixels of its depth.
        info: what ``save_image`` writes back: ``icc_profile``, ``exif`` (orientation removed),
            ``xmp`` (its ``tiff:Orientation`` set to 1), text (``tiff_tags``, ``png_text``),
            ``subfile_type`` (a TIFF page's NewSubfileType: 1 marks a reduced-resolution copy),
            ``dpi``, and encoder hints (``progressive``, ``lossless``, ``compression``), plus, on
            the first page only, ``frames`` (pages or frames in the file).
        pages: a multi-page TIFF's further pages, each an ``ImageFile`` of its own size, mode and
            metadata, when read with ``load_image(..., pages=True)``; else ``()`` (only the
            first page or frame is used).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    format: str
    mode: str
    info: dict = dataclasses.field(default_factory=dict)
    pages: tuple[ImageFile, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def bit_depth(self) -> int:
        """Bits per sample as the file declares them: 8 or 16, or what a PGM/PPM's own maxval
        holds (12 for 4095; its samples are at full scale in ``pixels`` all the same)."""
        return self.info["maxval"].bit_length() if self.info.get("maxval") else 8 * self.pixels.dtype.itemsize


def load_image(source, max_pixels: int = DEFAULT_MAX_PIXELS, pages: bool = False) -> ImageFile:
    """Reads an image file (path or bytes) for denoising.

    Args:
        source: a path, or the file's bytes.
        max_pixels: refuse images with more pixels than this (checked from the header, before
            any decoding; for ``pages``, the pages' pixels together).
        pages: also read every further page of a multi-page TIFF (a microscope's z-stack or time
            series, a scanner's document) into :attr:`ImageFile.pages`, which
            :func:`save_image` writes back as one multi-page TIFF. Without it, or for another
            format's frames (an animated GIF or WebP), only the first page or frame is read.

    Returns:
        An :class:`ImageFile`.

    Raises:
        ImageReadError: one of its subclasses, whose message names the file and says what is
            wrong: :class:`ImageNotFoundError`, :class:`EmptyImageError`,
            :class:`NotAnImageError`, :class:`TruncatedImageError`,
            :class:`ImageTooLargeError`, :class:`ImageDimensionsError`,
            :class:`UnsupportedImageError`; for a further page, the message names it
            (``scan.tif, page 3 of 12: ...``).
    """
    name, data = _read_source(source)
    with _open_pil(name, data, max_pixels) as im:
        first = _decode_frame(name, data, im, 0)
        count = first.info["frames"]
        if not pages or im.format != "TIFF":
            return first
    found, problem = _tiff_damage(data)  # Pillow read the header: a problem is in the chain
    if problem:  # else the pages past the break would go missing
        raise TruncatedImageError(f"{name}: its list of pages breaks after page {max(found, 1)} "
                                  f"({problem}): the file is damaged or cut short")
    if count < 2:
        return first
    # A fresh reader, walked page by page: n_frames (read for the first page) leaves Pillow 12.3
    # set up wrongly after a page it could not set up (the next "page" is the first again), and
    # makes it apply a palette page's palette to later pages (Pillow #9851).
    total, rest = first.pixels.shape[0] * first.pixels.shape[1], []
    with _open_pil(name, data, max_pixels) as im:
        for index in range(1, count):
            page_name = f"{name}, page {index + 1} of {count}"
            try:
                im.seek(index)
            except (EOFError, struct.error) as err:
                raise TruncatedImageError(
                    f"{page_name}: the file ends or breaks inside this page ({err})") from err
            except Exception as err:  # noqa: BLE001 - Pillow raises many kinds on a page it cannot set up
                if _tiff_damage(data, index)[1]:
                    raise TruncatedImageError(
                        f"{page_name}: its directory is missing or damaged (is the file cut short?)") from err
                raise UnsupportedImageError(
                    f"{page_name}: this page cannot be read here ({type(err).__name__}: {err}); "
                    "expected 8- or 16-bit grey or colour") from err
            if im.mode not in ("P", "PA"):
                im.palette = None  # a P first page's palette would still be applied (Pillow #9851)
            _check_dimensions(page_name, im.size, max_pixels)
            _check_planes(page_name, im)
            total += im.size[0] * im.size[1]
            if total > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: its first {index + 1} of {count} pages hold {total / 1e6:,.1f} MP together, "
                    f"more than the {max_pixels / 1e6:g} MP limit (raise the limit, or split the stack)")
            rest.append(_decode_frame(page_name, data, im, index))
    return dataclasses.replace(first, pages=tuple(rest))


def _decode_frame(name: str, data: bytes, im, index: int) -> ImageFile:
    """The frame of ``im`` it is on (``index``, counted from 0) as an :class:`ImageFile`."""
    mode = "LA" if _is_la16(im) else im.mode  # before getexif(), which loads and drops the tiles
    sixteen = _is_sixteen_bit_colour(im)
    cmyk16 = _is_sixteen_bit_cmyk(im)
    maxval = _own_maxval(im)  # (from the tiles, before loading drops them)
    with _decoding(name):
        if sixteen and index:  # OpenCV decodes a TIFF's first page only
            pixels, alpha = _decode_sixteen_bit_tiff_page(name, data, im, index)
        elif sixteen:
            pixels, alpha = _decode_sixteen_bit_colour(name, data, im, maxval)
        elif cmyk16:
            pixels, alpha = _decode_sixteen_bit_cmyk(name, data, index), None
        else:
            pixels, alpha = _pil_pixels(name, im)
            if im.format == "PNG":
                _check_png_data(name, data)
    # OpenCV's TIFF decoder applies the Orientation tag itself, whatever the flags (even
    # IMREAD_UNCHANGED or IMREAD_IGNORE_ORIENTATION), as Pillow's does on load (which then
    # drops the tag); tifffile leaves it to us (Pillow never loaded those pixels, so the tag
    # is still there), as IMREAD_UNCHANGED does for PNG and the rest.
    # The tag, that is: an orientation held only in the XMP is ours to apply.
    opencv_turned = sixteen and im.format == "TIFF" and not index and 274 in im.tag_v2
    orientation = 1 if opencv_turned else _orientation(im)
    info = _keep_info(im, data, frames=not index)
    if maxval:  # read at full scale, written back at it
        info["maxval"] = maxval
    pixels, alpha = _orient(pixels, orientation), _orient(alpha, orientation)
    return ImageFile(np.ascontiguousarray(pixels), None if alpha is None else np.ascontiguousarray(alpha),
                     _format_of(im), mode, info)


def _format_of(im) -> str:
    """Pillow's format name, but ``"JPEG"`` for a JPEG with a second image appended (a camera's
    preview or stereo pair), which Pillow calls ``"MPO"``: its first image is an ordinary JPEG."""
    return "JPEG" if im.format == "MPO" else im.format or "PNG"


def _read_source(source) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<bytes>"
    else:
        path = Path(source)
        name = str(path)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as err:
            raise ImageNotFoundError(f"{name}: no such file") from err
        if not stat.S_ISREG(st.st_mode):
            raise ImageNotFoundError(f"{name}: not a regular file (a folder, device or pipe)")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageAccessError(f"{name}: cannot read ({err.strerror or err})") from err
    if not data:
        raise EmptyImageError(f"{name}: the file is empty (0 bytes)")
    return name, data


_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, TypeError,
                   OverflowError, IndexError, KeyError, RuntimeError)
"""What the decoders raise on damaged files besides their own errors: Pillow a TypeError for a
TIFF strip offset of another type, an OverflowError for a tile 2**31 wide, an IndexError for a
cut QOI, a RuntimeError for an AVIF without its image item; tifffile a TypeError for a
RowsPerStrip with no value."""


class _decoding:
    """Maps Pillow's, OpenCV's and tifffile's decoding failures to our specific errors."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None or isinstance(err, ImageReadError):
            return False
        from PIL import Image

        text = str(err)
        if isinstance(err, Image.DecompressionBombError):  # a later page, past Pillow's own limit
            raise ImageTooLargeError(f"{self.name}: {text}") from err
        codec = type(err).__module__.partition(".")[0] == "imagecodecs"  # tifffile's decoders
        if codec or isinstance(err, _DECODER_ERRORS):
            if "truncated" in text or isinstance(err, (EOFError, struct.error)) or "broken" in text:
                raise TruncatedImageError(
                    f"{self.name}: the pixel data is truncated or damaged ({text})") from err
            raise TruncatedImageError(f"{self.name}: the pixel data cannot be decoded ({text})") from err
        return False


def _open_pil(name: str, data: bytes, max_pixels: int):
    from PIL import Image, UnidentifiedImageError

    _quiet_decoders()
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        claimed = f"{int(found.group(1)) / 1e6:,.0f} MP" if found else "too many pixels"
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))  # Pillow's hard limit
        raise ImageTooLargeError(
            f"{name}: the header claims {claimed}, past the decompression-bomb limit "
            f"({limit / 1e6:g} MP); refusing to decode it") from err
    except UnidentifiedImageError as err:
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            if problem := _tiff_damage(data, 0)[1]:
                raise TruncatedImageError(f"{name}: the TIFF is damaged or cut short ({problem})") from err
            raise UnsupportedImageError(
                f"{name}: a TIFF whose samples cannot be decoded here (float samples, or 16-bit "
                "grey with alpha, for example); expected 8- or 16-bit grey or colour") from err
        if data.startswith(b"\xff\xd8\xff") and (kind := _jpeg_kind(data)):
            raise UnsupportedImageError(f"{name}: a {kind}, which cannot be decoded here; expected "
                                        "an 8-bit baseline or progressive JPEG") from err
        if fmt := next((f for magic, f in _SIGNATURES if data.startswith(magic)), None):
            raise TruncatedImageError(f"{name}: a {fmt} file whose header is damaged; it cannot be "
                                      "read") from err
        raise NotAnImageError(
            f"{name}: not an image ({len(data)} bytes starting {data[:8]!r}); expected PNG, JPEG, "
            "TIFF, BMP, WebP, AVIF, GIF, PGM or PPM") from err
    except _DECODER_ERRORS as err:
        raise NotAnImageError(f"{name}: the header is damaged ({err})") from err
    _check_dimensions(name, im.size, max_pixels)
    _check_planes(name, im)
    return im


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
               (b"GIF89a", "GIF"))
"""How files of the formats we read begin: one that begins so but that Pillow cannot open is
damaged (a JPEG segment that ends inside a Photoshop resource, say), not something else."""


def _jpeg_kind(data: bytes) -> str | None:
    """What a JPEG's frame header says that Pillow cannot decode ("12-bit JPEG", "lossless
    JPEG", "JPEG-LS file"), found by walking its segments; ``None`` for an 8-bit baseline or progressive
    frame, or where the segments break first (a damaged file)."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xF7:
            return "JPEG-LS file"
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header (SOFn)
            if marker in (0xC3, 0xC7, 0xCB, 0xCF):
                return "lossless JPEG"
            precision = data[offset + 4] if offset + 4 < len(data) else 8
            return f"{precision}-bit JPEG" if precision != 8 else None
        offset += 2 + int.from_bytes(data[offset + 2:offset + 4], "big")
    return None


def _check_planes(name: str, im) -> None:
    """Refuses the TIFF page layouts Pillow decodes wrongly or not at all, as such rather than as
    damage: 16-bit samples in separate colour planes (read as 8-bit: the pixels would come out
    wrong), and uncompressed YCbCr colour (Pillow calls the data truncated)."""
    if im.format != "TIFF":
        return
    if im.tag_v2.get(284) == 2 and max(im.tag_v2.get(258) or (8,)) > 8:
        raise UnsupportedImageError(
            f"{name}: a 16-bit TIFF stored in separate colour planes, which cannot be decoded "
            "here; save it with contiguous samples (PlanarConfiguration 1) or as 8-bit")
    if im.tag_v2.get(262) == 6 and im.tag_v2.get(259, 1) == 1:  # LZW, Deflate, JPEG... decode
        raise UnsupportedImageError(
            f"{name}: an uncompressed TIFF in YCbCr colour, which cannot be decoded here; save it "
            "as RGB, or compressed")


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}
"""Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, ..., IFD8)."""


def _tiff_damage(data: bytes, index: int | None = None) -> tuple[int, str | None]:
    """``(pages, problem)``: the pages found by following a TIFF's chain of page directories,
    and what breaks it (a pointer past the end of the file, one back to an earlier page, a
    directory cut off), or, with ``index``, what is wrong with that page's directory (missing,
    or a value lying past the end of the file); ``None`` where nothing is. Read here, with
    bounds checked at every step: tifffile's walk follows a loop longer than 100 pages for
    ever, and says what it finds only through its log."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return 0, "the file ends inside its header" if order else "not a TIFF"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    if big and len(data) < 16:
        return 0, "the file ends inside its header"
    count_format, entry_size, pointer_format = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, pointer_size = struct.calcsize(count_format), struct.calcsize(pointer_format)
    offset = struct.unpack_from(order + pointer_format, data, 8 if big else 4)[0]
    directories, seen = [], set()
    while offset:
        after = f"the pointer after page {len(directories)}" if directories else "the first page's pointer"
        if offset in seen:
            return len(directories), f"{after} goes back to page {directories.index(offset) + 1}"
        if offset + count_size > len(data):
            return len(directories), f"{after} points past the end of the file"
        entries = struct.unpack_from(order + count_format, data, offset)[0]
        end = offset + count_size + entries * entry_size
        if end + pointer_size > len(data):
            return len(directories), f"page {len(directories) + 1}'s directory is cut off"
        seen.add(offset)
        directories.append(offset)
        offset = struct.unpack_from(order + pointer_format, data, end)[0]
    if index is None:
        return len(directories), None
    if index >= len(directories):
        return len(directories), f"no directory for page {index + 1}"
    first = directories[index] + count_size
    entries = struct.unpack_from(order + count_format, data, directories[index])[0]
    for entry in range(first, first + entries * entry_size, entry_size):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        count, value = struct.unpack_from(order + ("QQ" if big else "II"), data, entry + 4)
        size = count * _TIFF_TYPE_SIZES.get(kind, 1)
        if size > (8 if big else 4) and value + size > len(data):  # held elsewhere, past the end
            return len(directories), f"page {index + 1}'s tag {tag} points past the end of the file"
    return len(directories), None


_PIL_TIFF_WARNINGS = r"PIL\.TiffImagePlugin"


def _quiet_decoders() -> None:
    """Our errors say what is wrong with a file (sizes are checked with a message that says what
    to do), so the decoders' own words on stderr only add noise, in the batch's progress bar
    too: Pillow's decompression-bomb warning and its TIFF reader's ("Truncated File Read",
    "Corrupt EXIF data": a JPEG's EXIF is read by it too), and tifffile's log, which has no
    handler of its own (an application's logging set-up still gets it). The warning filters
    are process-wide (``catch_warnings`` is not thread-safe, and files are read in threads) and
    added where missing (test runners reset them), so a filter the application adds later
    takes precedence. libtiff and libpng, inside Pillow and OpenCV, may still print a line."""
    from PIL import Image

    for category, module in ((Image.DecompressionBombWarning, ""), (UserWarning, _PIL_TIFF_WARNINGS)):
        if not any(f[0] == "ignore" and f[2] is category and getattr(f[3], "pattern", "") == module
                   for f in warnings.filters):
            warnings.filterwarnings("ignore", category=category, module=module, append=True)
    log = logging.getLogger("tifffile")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())  # else Python's last resort prints its warnings


class _QuietOpenCV:
    """OpenCV's log silenced while any thread decodes with it (its libtiff errors on a damaged
    file), then set back to what it was."""

    lock, active, level = threading.Lock(), 0, None

    def __enter__(self):
        import cv2

        with self.lock:
            if not _QuietOpenCV.active:
                _QuietOpenCV.level = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            _QuietOpenCV.active += 1

    def __exit__(self, *exc):
        import cv2

        with self.lock:
            _QuietOpenCV.active -= 1
            if not _QuietOpenCV.active:
                cv2.utils.logging.setLogLevel(_QuietOpenCV.level)


def _check_dimensions(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageDimensionsError(f"{name}: the header says {width} x {height} pixels; a side cannot be 0")
    if max(width, height) > MAX_SIDE:
        raise ImageDimensionsError(
            f"{name}: the header says {width} x {height} pixels; sides longer than {MAX_SIDE} px "
            "are not real images")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width} x {height} = {width * height / 1e6:,.1f} MP is more than the "
            f"{max_pixels / 1e6:g} MP limit (a decompression bomb, or raise the limit)")


def _raw_mode(tile) -> tuple[str, object]:
    args = tile[3]
    if isinstance(args, str):
        return args, None
    if isinstance(args, tuple) and args:
        return (args[0] if isinstance(args[0], str) else ""), (args[1] if len(args) > 1 else None)
    return "", None


def _is_sixteen_bit_colour(im) -> bool:
    """Pillow has no 16-bit colour modes: it reads such files as 8-bit. Spot them."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    for tile in im.tile:
        raw, extra = _raw_mode(tile)
        if ";16" in raw:
            return True
        if im.format == "PPM" and isinstance(extra, int) and extra > 255:
            return True
    return False


def _is_sixteen_bit_cmyk(im) -> bool:
    """A 16-bit CMYK TIFF, which Pillow reads as 8-bit CMYK."""
    return im.mode == "CMYK" and im.format == "TIFF" and any(";16" in _raw_mode(t)[0] for t in im.tile)


def _is_la16(im) -> bool:
    return im.mode == "RGBA" and any(_raw_mode(t)[0].startswith("LA;16") for t in im.tile)


def _own_maxval(im) -> int | None:
    """A PGM/PPM's maxval where it is not its container's full 1, 255 or 65535 (4095 for
    12-bit data); ``None`` for any other file."""
    maxval = _raw_mode(im.tile[0])[1] if im.format == "PPM" and im.tile else None
    return maxval if isinstance(maxval, int) and maxval not in (1, 255, 65535) else None


def _decode_sixteen_bit_colour(name, data, im, maxval: int | None = None):
    """``(pixels, alpha)`` of 16-bit colour, by OpenCV; a PPM's samples scaled from its own
    ``maxval`` (:func:`_own_maxval`) to the full range, as Pillow scales grey PGMs."""
    import cv2

    with _QuietOpenCV():
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None and data[:2] == b"P3":  # OpenCV wants white space after a plain PPM's last sample
            arr = cv2.imdecode(np.frombuffer(data + b"\n", np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.shape[:2] != (im.size[1], im.size[0]):
        raise TruncatedImageError(f"{name}: the 16-bit pixel data cannot be decoded")
    if arr.ndim == 2:
        arr = arr[..., None]
    if maxval:  # OpenCV leaves samples unscaled
        scaled = np.rint(arr.astype(np.float64) * (65535 / maxval))
        arr = np.clip(scaled, 0, 65535).astype(np.uint16)
    if _is_la16(im):
        return arr[..., :1], arr[..., 3]
    rgb = arr[..., 2::-1] if arr.shape[-1] >= 3 else np.repeat(arr, 3, axis=-1)
    alpha = arr[..., 3] if arr.shape[-1] == 4 else None
    return _colour_of(rgb, alpha, im), alpha  # OpenCV hands associated alpha's colour over as stored


def _colour_of(rgb: np.ndarray, alpha: np.ndarray | None, im) -> np.ndarray:
    """16-bit ``rgb`` as colour: un-premultiplied where a TIFF stores it multiplied by its alpha
    (ExtraSamples 1, "associated")."""
    if alpha is not None and im.format == "TIFF" and (im.tag_v2.get(338) or (0,))[0] == 1:
        return _unpremultiply(rgb, alpha)
    return rgb


def _unpremultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """16-bit colour stored multiplied by its alpha (a TIFF's ExtraSamples 1, "associated") as
    the colour itself, which is what the denoiser sees and what ``save_image`` writes (with
    unassociated alpha), as Pillow does for 8-bit files. Fully transparent pixels stay black."""
    def block(rgb, alpha):
        a = alpha.astype(np.uint32)[..., None]  # 65535 * 65535 + 32767 still fits 32 bits
        colour = (rgb.astype(np.uint32) * 65535 + a // 2) // np.maximum(a, 1)
        return np.where(a > 0, np.minimum(colour, 65535), 0).astype(np.uint16)

    return _by_rows(block, rgb, alpha)


_BLOCK_ROWS = 256


def _by_rows(fn, *arrays: np.ndarray) -> np.ndarray:
    """``fn(*arrays)`` computed on blocks of :data:`_BLOCK_ROWS` rows at a time, so that its
    32-bit intermediates never hold more than one block (a 100-megapixel 16-bit CMYK TIFF took
    4.6 GB at once)."""
    height = arrays[0].shape[0]
    first = fn(*(a[:_BLOCK_ROWS] for a in arrays))
    out = np.empty((height, *first.shape[1:]), first.dtype)
    out[:_BLOCK_ROWS] = first
    for top in range(_BLOCK_ROWS, height, _BLOCK_ROWS):
        out[top:top + _BLOCK_ROWS] = fn(*(a[top:top + _BLOCK_ROWS] for a in arrays))
    return out


def _decode_sixteen_bit_tiff_page(name, data, im, index: int):
    """``(pixels, alpha)`` of page ``index`` of a TIFF holding 16-bit colour (RGB or RGBA), as
    :func:`_decode_sixteen_bit_colour` gives the first page's; its orientation is not applied."""
    import tifffile

    arr = tifffile.imread(io.BytesIO(data), key=index)
    stored = im.size[::-1] if im.tag_v2.get(274, 1) < 5 else im.size  # Pillow turns it by the tag
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.shape[:2] != stored:
        raise TruncatedImageError(f"{name}: the 16-bit pixel data cannot be decoded")
    alpha = arr[..., 3] if arr.shape[-1] == 4 else None
    return _colour_of(arr[..., :3], alpha, im), alpha


def _decode_sixteen_bit_cmyk(name, data, index: int = 0) -> np.ndarray:
    """16-bit CMYK (page ``index`` of the TIFF) as 16-bit RGB, by Pillow's own CMYK -> RGB
    formula (R = (1 - C)(1 - K), ...), so that 8- and 16-bit CMYK files read alike."""
    import tifffile

    arr = tifffile.imread(io.BytesIO(data), key=index)
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[-1] != 4:
        raise UnsupportedImageError(
            f"{name}: a 16-bit CMYK TIFF with samples of shape {arr.shape[1:]} {arr.dtype}; expected "
            "four 16-bit inks per pixel")
    def block(inks):
        paper = 65535 - inks.astype(np.uint32)  # integers: the float maths took 14x the file in memory
        return ((paper[..., :3] * paper[..., 3:] + 32767) // 65535).astype(np.uint16)

    return _by_rows(block, arr)


def _pil_pixels(name, im):
    """``(pixels (H, W, C), alpha (H, W) or None)`` of the first frame of a Pillow image."""
    im.load()
    mode = im.mode
    # A colour key (PNG's tRNS chunk in a grey or RGB image): pixels of that value are transparent.
    key = im.info.get("transparency") if mode in ("1", "L", "RGB") or mode.startswith("I;16") else None
    if mode == "F" or mode.startswith("I;32") or mode == "I;16S":
        raise UnsupportedImageError(f"{name}: mode {mode} (float or 32-bit samples); expected 8- or 16-bit")
    if mode.startswith("I;16"):
        arr = _native(np.asarray(im))
        alpha = np.where(arr == key, 0, 65535).astype(np.uint16) if isinstance(key, int) else None
        return arr[..., None], alpha
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise UnsupportedImageError(
                f"{name}: 32-bit integer samples from {arr.min()} to {arr.max()}; expected 0..65535")
        return arr.astype(np.uint16)[..., None], None
    if mode in ("1", "L") and key is None:
        return np.asarray(im.convert("L"))[..., None], None
    if mode in ("LA", "La", "1", "L"):  # Pillow turns a colour key into alpha on the way
        arr = np.asarray(im.convert("LA"))
        return arr[..., :1], arr[..., 1]
    if mode == "P" and "transparency" not in im.info:
        return np.asarray(im.convert("RGB")), None
    if mode in ("RGBA", "RGBa", "PA", "P") or key is not None:
        arr = np.asarray(im.convert("RGBA"))
        return arr[..., :3], arr[..., 3]
    return np.asarray(im.convert("RGB")), None


def _native(arr: np.ndarray) -> np.ndarray:
    return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder not in ("=", "|") else arr


def _orient(arr, orientation: int):
    """Applies an EXIF orientation (1..8) to ``(H, W[, C])`` pixels, as ImageOps.exif_transpose."""
    if arr is None or orientation not in _ORIENTATIONS:
        return arr
    return _ORIENTATIONS[orientation](arr)


_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _orientation(im) -> int:
    """The EXIF orientation, or 1 where the EXIF is damaged (the pixels decoded: keep them)."""
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # Pillow raises SyntaxError, struct.error, TypeError, ... on damaged EXIF
        return 1


def _keep_info(im, data: bytes, frames: bool = True) -> dict:
    """What ``save_image`` writes back; metadata that cannot be read is dropped, not fatal.
    ``frames``: count the file's frames (a first page's info, not a further page's)."""
    info = {}
    if im.info.get("icc_profile"):
        info["icc_profile"] = im.info["icc_profile"]
    if im.format != "TIFF":  # a TIFF's "EXIF" is its own layout tags (strip offsets, ...)
        try:
            exif = im.getexif()
            exif.pop(EXIF_ORIENTATION, None)
            if len(exif):
                info["exif"] = exif.tobytes()
        except Exception:  # damaged EXIF (SyntaxError, struct.error, TypeError, ...): drop it
            pass
    if im.format == "TIFF":  # Pillow decodes ASCII tags as latin-1: these are their bytes again
        tags = {tag: im.tag_v2[tag] for tag in TIFF_TEXT_TAGS if isinstance(im.tag_v2.get(tag), str)}
        if tags := {tag: value.encode("latin-1", "replace") for tag, value in tags.items() if value}:
            info["tiff_tags"] = tags
    if im.format == "TIFF" and isinstance(subfile := im.tag_v2.get(254), int) and subfile & 3:
        # A pyramid's reduced-resolution page (1), a page of a multi-page image (2); not the
        # mask bit (4): its page is written as the image it was read as, not a bilevel mask.
        info["subfile_type"] = subfile & 3
    if im.format == "PNG" and (chunks := _png_text_chunks(data)):
        info["png_text"] = chunks
    dpi = _sane_dpi(im.info.get("dpi"))
    if dpi:
        info["dpi"] = dpi
    fmt = _format_of(im)
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        info["progressive"] = bool(im.info.get("progressive") or im.info.get("progression"))
        if (sampling := JpegImagePlugin.get_sampling(im)) >= 0:  # 4:4:4 stays 4:4:4, 4:2:0 4:2:0
            info["subsampling"] = sampling
    # Pillow fills "xmp" from a PNG's iTXt chunk only; a tEXt or zTXt one is under its key.
    xmp = im.info.get("xmp") or (im.info.get(_PNG_XMP_KEY.decode()) if fmt == "PNG" else None)
    if fmt in _XMP_FORMATS and isinstance(xmp, bytes | str) and xmp:
        info["xmp"] = _upright_xmp(xmp.encode() if isinstance(xmp, str) else xmp)
    if fmt == "JPEG" and isinstance(im.info.get("comment"), bytes) and im.info["comment"]:
        info["comment"] = im.info["comment"]
    if fmt == "JPEG" and (segments := _jpeg_photoshop_segments(im)):
        info["jpeg_photoshop"] = segments
    if im.format == "WEBP":
        info["lossless"] = b"VP8L" in data[:4096]
    if im.format == "TIFF" and im.info.get("compression") in _TIFF_COMPRESSIONS:
        info["compression"] = im.info["compression"]
    if frames:
        try:
            info["frames"] = int(getattr(im, "n_frames", 1))
        except Exception:  # a damaged next-frame pointer (TypeError "Missing dimensions", ...)
            # or a TIFF page Pillow cannot set up: the walk of its chain still counts it, so that
            # load_image(pages=True) refuses that page rather than dropping it without a word.
            info["frames"] = max(1, _tiff_damage(data)[0]) if im.format == "TIFF" else 1
    return info


_XMP_FORMATS = ("JPEG", "WEBP", "AVIF", "TIFF", "PNG")
"""Formats whose XMP packet is read into ``info["xmp"]``, which the JPEG, WebP, AVIF and TIFF
writers write back; a PNG output gets it as iTXt unless it keeps a PNG's own text chunks
(``info["png_text"]``), which hold it already."""

TIFF_TEXT_TAGS = {
    269: "DocumentName", 270: "ImageDescription", 271: "Make", 272: "Model", 285: "PageName",
    305: "Software", 306: "DateTime", 315: "Artist", 316: "HostComputer", 33432: "Copyright",
}
"""A TIFF page's text tags, kept for TIFF outputs (ImageDescription holds an ImageJ stack's
slice spacing and units, or OME-XML)."""

_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_XMP_KEY = b"XML:com.adobe.xmp"
_PNG_DROPPED_TEXT = (b"Raw profile type exif", b"Raw profile type APP1")
"""ImageMagick's hex copies of the EXIF, which the eXIf chunk written from ``info["exif"]``
replaces (orientation removed): kept, they would turn the image again in readers of them."""

PNG_TEXT_LIMIT = 1 << 20
"""Largest text a PNG text chunk may hold, decompressed (Pillow's ``MAX_TEXT_CHUNK``: past it,
Pillow refuses the file); chunks past it, or past 64 MB together, are dropped."""


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type: grey, RGB, palette, grey+alpha, RGBA
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_chunks(data: bytes):
    """Yields a PNG's chunks as ``(type, body, crc)`` up to IEND, or to the first one the file
    cuts short."""
    at = 8
    while at + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body, crc = data[at + 8:at + 8 + length], data[at + 8 + length:at + 12 + length]
        if len(crc) < 4 or kind == b"IEND":
            return
        yield kind, body, crc
        at += 12 + length


def _check_png_data(name: str, data: bytes) -> None:
    """Refuses a PNG whose pixel data ends before its last row: Pillow fills the missing rows
    with black without a word when the compressed stream itself is whole (libpng says "Not
    enough image data"). The data is inflated a piece at a time and only counted."""
    if data[12:16] != b"IHDR":
        return
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = _PNG_CHANNELS.get(colour, 1) * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    sizes = [(-(-(height - y) // dy), -(-(width - x) // dx)) for x, y, dx, dy in passes]
    expected = sum(rows * (1 + -(-cols * bits // 8)) for rows, cols in sizes if rows > 0 and cols > 0)
    inflate, got = zlib.decompressobj(), 0
    for piece in (body for kind, body, _ in _png_chunks(data) if kind == b"IDAT"):
        while piece and got < expected and not inflate.eof:
            try:
                got += len(inflate.decompress(piece, 1 << 20))
            except zlib.error as err:
                raise TruncatedImageError(f"{name}: its pixel data is damaged ({err})") from err
            piece = inflate.unconsumed_tail
        if got >= expected:
            break
    if got < expected:
        raise TruncatedImageError(
            f"{name}: its pixel data ends early ({got:,} of the {expected:,} bytes its header asks "
            "for; the missing rows would be black): the file is damaged or was cut short when written")


def _png_text_chunks(data: bytes) -> tuple[tuple[bytes, bytes, bool], ...]:
    """A PNG's text chunks as ``(type, body, after_idat)``, in order, to be written back where
    they were: tEXt, zTXt and iTXt (captions, authors, a generator's parameters, XMP with its
    orientation set to 1). A chunk that is damaged (checksum, keyword, compression) or too large
    is dropped; a damaged chunk list ends the search, keeping what was found before."""
    chunks, after_idat, total = [], False, 0
    for kind, body, crc in _png_chunks(data):
        after_idat |= kind == b"IDAT"
        if kind not in _PNG_TEXT or zlib.crc32(kind + body) != int.from_bytes(crc, "big"):
            continue
        try:
            key, text = _png_text_of(kind, body)
        except (ValueError, IndexError, zlib.error):
            continue
        total += len(text)
        if total > 64 * PNG_TEXT_LIMIT:
            break
        if key.startswith(_PNG_DROPPED_TEXT):
            continue
        if key == _PNG_XMP_KEY:  # Pillow turns a PNG by it, whichever the chunk type
            body = _png_text_body(kind, body, _upright_xmp(text))
        chunks.append((kind, body, after_idat))
    return tuple(chunks)


def _png_text_of(kind: bytes, body: bytes) -> tuple[bytes, bytes]:
    """``(keyword, text)`` of a text chunk, decompressed; ``ValueError`` if it is malformed."""
    key, rest = body.split(b"\x00", 1)
    if not 1 <= len(key) <= 79:
        raise ValueError(f"a keyword of {len(key)} bytes")
    if kind == b"tEXt":
        return key, rest
    if kind == b"zTXt":
        if rest[0] != 0:
            raise ValueError(f"compression method {rest[0]}")
        return key, _inflate(rest[1:])
    flag, method, rest = rest[0], rest[1], rest[2:]
    if flag not in (0, 1) or method != 0:
        raise ValueError(f"compression flag {flag}, method {method}")
    _language, _translated, text = rest.split(b"\x00", 2)
    return key, _inflate(text) if flag else text


def _png_text_body(kind: bytes, body: bytes, text: bytes) -> bytes:
    """``body`` of a text chunk of ``kind`` with its text replaced by ``text``."""
    key, rest = body.split(b"\x00", 1)
    if kind == b"tEXt":
        return key + b"\x00" + text
    if kind == b"zTXt":
        return key + b"\x00\x00" + zlib.compress(text)
    flag, method, rest = rest[0], rest[1], rest[2:]
    language, translated, _ = rest.split(b"\x00", 2)
    return b"\x00".join([key, bytes([flag, method]) + language, translated,
                          zlib.compress(text) if flag else text])


def _inflate(data: bytes) -> bytes:
    """zlib data inflated to at most :data:`PNG_TEXT_LIMIT` bytes; ``ValueError`` past it or
    when the stream is incomplete."""
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, PNG_TEXT_LIMIT)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("compressed text past the limit, or incomplete")
    return text


_XMP_ORIENTATION = r'(tiff:Orientation(?:="|>))[0-9]'
"""XMP's orientation as Pillow finds it (``Image.getexif`` takes it where EXIF has none)."""


def _jpeg_photoshop_segments(im) -> bytes:
    """A JPEG's APP13 "Photoshop 3.0" segments, whole (marker, length and all), in order: the
    IPTC caption, keywords, credit and copyright that news and stock photos carry, which
    Pillow reads (into ``applist``) but does not write back. The thumbnail they may hold, a
    picture of the noisy input, is left out (:func:`_without_photoshop_thumbnail`)."""
    bodies = (_without_photoshop_thumbnail(body) for marker, body in getattr(im, "applist", ())
              if marker == "APP13" and body.startswith(_PHOTOSHOP))
    return b"".join(b"\xff\xed" + (len(body) + 2).to_bytes(2, "big") + body for body in bodies if body)


_PHOTOSHOP = b"Photoshop 3.0\x00"

_PHOTOSHOP_SIGNATURES = (b"8BIM", b"MeSa", b"PHUT", b"AgHg", b"DCSR")
"""What begins an image resource: Photoshop's "8BIM", ImageReady's "MeSa", and others'."""

_PHOTOSHOP_THUMBNAILS = (0x0409, 0x040C)
"""Photoshop image resources holding a small JPEG of the image (Photoshop 4's and 5's)."""


def _without_photoshop_thumbnail(body: bytes) -> bytes:
    """An APP13 segment's body without its thumbnail resources (``b""`` where nothing else is
    left). Its resources ("8BIM", id, padded name, size, padded data) are walked as Pillow's
    JPEG reader walks them; a segment they do not fill exactly, zeros aside (a resource spread
    over two segments), is kept as it is."""
    kept, offset, dropped = [_PHOTOSHOP], len(_PHOTOSHOP), False
    while offset < len(body):
        start = offset
        if not body[offset:].strip(b"\x00"):  # zeros after the last resource, as some writers pad
            kept.append(body[offset:])
            break
        if body[offset:offset + 4] not in _PHOTOSHOP_SIGNATURES or offset + 7 > len(body):
            return body
        code, offset = int.from_bytes(body[offset + 4:offset + 6], "big"), offset + 6
        offset += 1 + body[offset]
        offset += offset & 1
        if offset + 4 > len(body):
            return body
        offset += 4 + int.from_bytes(body[offset:offset + 4], "big")
        if offset > len(body):
            return body
        offset = min(offset + (offset & 1), len(body))
        if code in _PHOTOSHOP_THUMBNAILS:
            dropped = True
        else:
            kept.append(body[start:offset])
    if not dropped:
        return body
    return b"".join(kept) if len(kept) > 1 else b""


def _upright_xmp(xmp: bytes | str) -> bytes | str:
    """The XMP with ``tiff:Orientation`` set to 1. The pixels are written upright and without
    the EXIF orientation, so Pillow and other XMP-aware readers would otherwise turn them again."""
    if isinstance(xmp, str):
        return re.sub(_XMP_ORIENTATION, r"\g<1>1", xmp)
    return re.sub(_XMP_ORIENTATION.encode(), rb"\g<1>1", xmp)


def _sane_dpi(dpi) -> tuple[float, float] | None:
    """``(x, y)`` when both are finite and 1 to 100,000 dpi; ``None`` for a resolution of 0/0,
    1/0 or absurd, which no encoder can write back."""
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if all(1.0 <= v <= 100_000.0 for v in (x, y)) else None


_TIFF_COMPRESSIONS = {"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"}


# ---------------------------------------------------------------- writing

FORMATS = {
    "PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "GIF": ".gif",
    "PPM": ".ppm", "AVIF": ".avif",
}
"""Formats ``save_image`` writes, with the suffix for each."""

_SUFFIX_FORMATS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".bmp": "BMP", ".webp": "WEBP", ".gif": "GIF", ".ppm": "PPM", ".pgm": "PPM", ".pbm": "PPM", ".pnm": "PPM",
    ".avif": "AVIF",
}
_NO_ALPHA = {"JPEG", "PPM", "BMP"}
SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF", "PPM"})
"""Formats that hold 16-bit samples; ``save_image`` writes 16-bit pixels to the others as 8-bit."""


def format_for(path, default: str | None = None) -> str:
    """The format ``save_image`` picks for ``path`` from its suffix, else ``default``."""
    found = _SUFFIX_FORMATS.get(Path(path).suffix.lower(), default)
    if found is None:
        raise ImageWriteError(
            f"cannot tell the format of {path}; expected a suffix among {', '.join(sorted(_SUFFIX_FORMATS))}")
    return found


def save_image(image: ImageFile, path, format: str | None = None, quality: int = 95) -> Path:
    """Writes an image atomically, in its mode and bit depth, with its ICC profile and EXIF (a
    CMYK profile is left out where the format makes the pixels RGB: PNG, WebP, BMP, ...).

    The file appears complete or not at all: bytes go to a hidden temporary file in the same
    folder (``.NAME.XXXX.partial``), which is then renamed over ``path``.

    Args:
        image: what to write (the ``pixels`` may be new; ``mode``/``info`` come from the source).
        path: the destination; its folder must exist.
        format: a key of :data:`FORMATS`, ``"JPG"``/``"TIF"``, or ``None`` for the path's suffix
            (then the image's own format).
        quality: JPEG/lossy-WebP quality.

    Returns:
        ``path``.

    Raises:
        ImageWriteError: the format cannot hold the image (alpha into JPEG/BMP/PPM), or an
            unknown format.
    """
    path = Path(path)
    fmt = _normalise_format(format) if format else format_for(path, image.format)
    atomic_write_bytes(path, encode_image(image, fmt, quality))
    return path


def _normalise_format(name: str) -> str:
    fmt = {"JPG": "JPEG", "TIF": "TIFF", "PGM": "PPM", "PNM": "PPM"}.get(name.upper(), name.upper())
    if fmt not in FORMATS:
        raise ImageWriteError(f"cannot write format {name!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_process_umask()
"""What ``open()`` would give a new file (read once at import: reading the umask sets it, which
is not thread-safe, and files are written from threads)."""


def existing_ancestor(path) -> Path:
    """The nearest path above ``path`` that exists. Outputs are checked with it before long work
    starts: when it is a file rather than a folder, nothing can be written at ``path``."""
    return next(p for p in Path(path).absolute().parents if p.exists())


def atomic_write_bytes(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``;
    the file gets the permissions ``open()`` would give it (``mkstemp`` alone makes it 0600)."""
    path = Path(path)
    # ".NAME.XXXXXXXX.partial" where that fits in a file name, else ".XXXXXXXX.partial".
    named = len(os.fsencode(path.name)) + 10 + len(PARTIAL_SUFFIX) <= _NAME_MAX
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}." if named else ".",
                               suffix=PARTIAL_SUFFIX)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path, value, **dumps) -> None:
    """``value`` as indented JSON (``json.dumps`` options in ``dumps``), written whole or not at
    all, as :func:`atomic_write_bytes` does."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, **dumps) + "\n").encode())


def check_writable(image: ImageFile, format: str) -> str:
    """The normalised ``format`` if ``image`` can be written in it, else :class:`ImageWriteError`
    saying why (alpha into JPEG, BMP or PPM). The batch asks before denoising, so that no work
    goes into a file that could not be written."""
    fmt = _normalise_format(format)
    if image.alpha is not None and fmt in _NO_ALPHA:
        raise ImageWriteError(f"{fmt} cannot store the alpha channel; choose PNG, TIFF or WEBP")
    return fmt


def encode_image(image: ImageFile, format: str, quality: int = 95) -> bytes:
    """The bytes of ``image`` as a ``format`` file (see :func:`save_image`); with
    :attr:`ImageFile.pages`, a TIFF holds them all, in order, and any other format the first."""
    fmt = check_writable(image, format)
    if image.pages and fmt == "TIFF":
        return _encode_tiff_pages([_as_written(image, 1 + len(image.pages)), *image.pages], quality)
    image = _as_written(image, 1)
    pixels, alpha = _planes(image, fmt)
    if fmt == "PPM" and image.info.get("maxval") and alpha is None and image.mode != "1":
        return _netpbm(pixels, image.info["maxval"])
    if pixels.dtype == np.uint16 and (pixels.shape[-1] == 3 or alpha is not None):
        return _encode_sixteen_bit_colour(pixels, alpha, fmt, image.info, _is_cmyk(image, fmt, alpha))
    im = _pil_image(pixels, alpha, image.mode, fmt)
    buf = io.BytesIO()
    im.save(buf, fmt, **_save_options(image.info, fmt, im.mode, quality))
    return _png_with_text(buf.getvalue(), image.info) if fmt == "PNG" else buf.getvalue()


def _netpbm(pixels: np.ndarray, maxval: int) -> bytes:
    """A binary PGM or PPM whose samples go up to ``maxval``, the input's own (4095 for 12-bit
    data): full-scale ``pixels`` scaled to it and rounded, so a file read and written unchanged
    keeps its samples exactly."""
    height, width, channels = pixels.shape
    samples = np.rint(pixels.astype(np.float64) * (maxval / np.iinfo(pixels.dtype).max))
    header = b"P%d\n%d %d\n%d\n" % (5 if channels == 1 else 6, width, height, maxval)
    return header + samples.astype(">u2" if maxval > 255 else np.uint8).tobytes()


def _as_written(image: ImageFile, pages: int) -> ImageFile:
    """``image`` without its ImageDescription where fewer ``pages`` are written than the file
    had: an ImageJ or OME description of the whole stack would misdescribe the output."""
    tags = image.info.get("tiff_tags", {})
    if 270 not in tags or image.info.get("frames", 1) <= pages:
        return image
    tags = {tag: value for tag, value in tags.items() if tag != 270}
    return dataclasses.replace(image, info={**image.info, "tiff_tags": tags})


def _planes(image: ImageFile, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pixels, alpha)`` checked, in a depth ``fmt`` holds and with alpha of the pixels' dtype."""
    pixels, alpha = image.pixels, image.alpha
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or pixels.dtype not in (np.uint8, np.uint16):
        raise ImageWriteError(
            f"pixels must be (H, W, 1 or 3) uint8/uint16, got {pixels.shape} {pixels.dtype}")
    if pixels.dtype == np.uint16 and fmt not in SIXTEEN_BIT_FORMATS:
        pixels = from_model(to_model(pixels), np.uint8)  # the format holds 8 bits; round, not truncate
    if alpha is not None and alpha.dtype != pixels.dtype:
        alpha = from_model(to_model(alpha), pixels.dtype)[..., 0]
    return pixels, alpha


def _is_cmyk(image: ImageFile, fmt: str, alpha) -> bool:
    """Whether ``image`` goes back to CMYK inks: a CMYK TIFF without alpha (8-bit CMYK JPEGs are
    Pillow's to convert)."""
    return image.mode == "CMYK" and fmt == "TIFF" and alpha is None and image.pixels.shape[-1] == 3


def _encode_tiff_pages(pages: list[ImageFile], quality: int) -> bytes:
    """A multi-page TIFF, each page with its own metadata: by Pillow, which keeps each page's
    mode (palette, 1-bit, CMYK) and compression; by tifffile (zlib) when a page holds 16-bit
    colour, which Pillow cannot write."""
    planes = [_planes(page, "TIFF") for page in pages]
    if any(px.dtype == np.uint16 and (px.shape[-1] == 3 or a is not None) for px, a in planes):
        return _tifffile_pages([(*_tiff_arrays(px, a, _is_cmyk(page, "TIFF", a)), page.info)
                                for page, (px, a) in zip(pages, planes, strict=True)])
    from PIL import TiffImagePlugin

    buf = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(buf) as tiff:
        for page, (px, a) in zip(pages, planes, strict=True):
            im = _pil_image(px, a, page.mode, "TIFF")
            im.save(tiff, "TIFF", **_save_options(page.info, "TIFF", im.mode, quality))
            tiff.newFrame()
    return buf.getvalue()


def _pil_image(pixels, alpha, mode: str, fmt: str):
    from PIL import Image

    grey = pixels.shape[-1] == 1
    im = Image.fromarray(pixels[..., 0] if grey else pixels)  # L, I;16 or RGB
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha))
    if mode == "1" and fmt in ("PNG", "TIFF", "BMP", "PPM", "GIF") and alpha is None:
        return im.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    if mode in ("P", "PA") or fmt == "GIF":
        return _palette(im, fmt)
    if mode == "CMYK" and fmt in ("JPEG", "TIFF") and not grey:
        return im.convert("CMYK")
    if fmt == "WEBP" and im.mode in ("L", "LA"):
        return im.convert("RGBA" if alpha is not None else "RGB")
    return im


def _palette(im, fmt: str):
    """Back to 256 colours (an adaptive palette: denoising makes colours the old one lacks)."""
    from PIL import Image

    if fmt not in ("PNG", "GIF", "BMP", "TIFF"):
        return im
    if im.mode in ("L", "RGB"):
        return im.convert("RGB").quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if fmt == "GIF":  # GIF has one transparent palette index: alpha becomes binary
        rgb, alpha = im.convert("RGB"), np.asarray(im.getchannel("A"))
        quantized = rgb.quantize(255, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        index = np.asarray(quantized).copy()
        index[alpha < 128] = 255
        out = Image.fromarray(index, "P")
        out.putpalette(quantized.getpalette())
        out.info["transparency"] = 255
        return out
    if fmt == "TIFF":  # Pillow writes no transparency with a TIFF palette: the alpha stays a channel
        return im
    return im.convert("RGBA").quantize(256, Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


JPEG_SEGMENT_ROOM = 65533
"""Bytes a JPEG APPn segment holds after its length; EXIF (its "Exif" header included) or XMP
(its 29-byte namespace aside) larger than one segment is not written into a JPEG (Adobe's extended
XMP, which spreads over several, is not written here)."""


def _save_options(info: dict, fmt: str, mode: str, quality: int) -> dict:
    opts = {}
    if _profile(info, mode == "CMYK") and fmt in ("PNG", "JPEG", "TIFF", "WEBP", "AVIF"):
        opts["icc_profile"] = info["icc_profile"]
    if info.get("exif") and fmt in ("PNG", "JPEG", "TIFF", "WEBP", "AVIF"):
        opts["exif"] = info["exif"]
    if info.get("dpi") and fmt in ("PNG", "JPEG", "TIFF", "BMP"):
        opts["dpi"] = info["dpi"]
    if info.get("xmp") and fmt in ("JPEG", "WEBP", "AVIF"):
        opts["xmp"] = info["xmp"]
    if fmt == "JPEG":  # one APP1 segment each: what does not fit is left out, not the image
        for key, room in (("exif", JPEG_SEGMENT_ROOM), ("xmp", JPEG_SEGMENT_ROOM - 29)):
            if len(opts.get(key) or b"") > room:
                del opts[key]
    if fmt == "JPEG":
        opts.update(quality=quality, progressive=bool(info.get("progressive")))
        if "subsampling" in info and mode == "RGB":
            opts["subsampling"] = info["subsampling"]
        if info.get("comment"):
            opts["comment"] = info["comment"]
        if info.get("jpeg_photoshop"):
            opts["extra"] = info["jpeg_photoshop"]  # Pillow's raw segments after its own APPn
    elif fmt == "WEBP":
        if info.get("lossless"):
            opts.update(lossless=True, exact=True)  # exact: keep colour under transparent pixels
        else:
            opts["quality"] = quality
    elif fmt == "AVIF":
        opts["quality"] = quality
    elif fmt == "TIFF":
        opts["compression"] = info.get("compression", "tiff_lzw")
        tags = _tiff_tags(info)
        if info.get("subfile_type"):
            tags[254] = info["subfile_type"]
        if tags or opts.get("exif"):
            # One directory for all: Pillow writes either ``tiffinfo`` or ``exif``, never both.
            from PIL import Image

            directory = Image.Exif()
            if opts.get("exif"):
                directory.load(opts["exif"])
            for tag in (*_TIFF_LAYOUT_TAGS, *(_TIFF_RESOLUTION_TAGS if "dpi" in opts else ())):
                directory.pop(tag, None)  # a camera's record of its own file, not of this one's
            directory.update(tags)
            opts["exif"] = directory
            if any(pointer in directory for pointer in _EXIF_SUB_IFDS):
                opts["compression"] = "raw"  # libtiff's encoders refuse sub-directories
    elif fmt == "GIF" and mode == "P":
        opts["optimize"] = False
    return opts


def _encode_sixteen_bit_colour(pixels, alpha, fmt: str, info: dict, cmyk: bool = False) -> bytes:
    """16-bit colour (or grey + alpha): Pillow cannot write it; tifffile, OpenCV and (for grey +
    alpha PNG, which OpenCV cannot write either) :func:`_png_grey_alpha16` do. ``cmyk``: a 16-bit
    CMYK TIFF, its inks from RGB by Pillow's RGB -> CMYK formula (C = 1 - R, ..., K = 0), as
    8-bit CMYK files are written."""
    if fmt == "TIFF":
        return _tifffile_pages([(*_tiff_arrays(pixels, alpha, cmyk), info)])
    arr = np.concatenate([pixels] + ([alpha[..., None]] if alpha is not None else []), axis=-1)
    import cv2

    if arr.shape[-1] == 2:  # OpenCV writes no grey+alpha PNG
        return _png_with_metadata(_png_grey_alpha16(arr), info)
    bgr = arr[..., [2, 1, 0, 3]] if arr.shape[-1] == 4 else arr[..., ::-1]
    ok, encoded = cv2.imencode(FORMATS[fmt], np.ascontiguousarray(bgr))
    if not ok:
        raise ImageWriteError(f"OpenCV could not encode a 16-bit {fmt} of shape {arr.shape}")
    data = encoded.tobytes()
    return _png_with_metadata(data, info) if fmt == "PNG" else data


def _tiff_arrays(pixels, alpha, cmyk: bool) -> tuple[np.ndarray, str, list[str] | None]:
    """``(samples, photometric, extrasamples)`` for tifffile: grey or RGB with unassociated
    alpha, or (``cmyk``) inks C = 1 - R, M = 1 - G, Y = 1 - B, K = 0."""
    if cmyk:
        inks = np.iinfo(pixels.dtype).max - pixels
        return np.concatenate([inks, np.zeros_like(pixels[..., :1])], axis=-1), "separated", None
    arr = np.concatenate([pixels] + ([alpha[..., None]] if alpha is not None else []), axis=-1)
    photometric = "rgb" if pixels.shape[-1] == 3 else "minisblack"
    if arr.shape[-1] == 1:
        return arr[..., 0], photometric, None
    return arr, photometric, ["unassalpha"] if alpha is not None else None


def _profile(info: dict, cmyk: bool) -> bytes | None:
    """The ICC profile to write, unless it describes the other colour space: a CMYK file's
    profile cannot go with the RGB pixels it becomes in a PNG or WebP (ICC header bytes 16-20
    name the data's colour space)."""
    profile = info.get("icc_profile")
    if profile and (profile[16:20] == b"CMYK") != cmyk:
        return None
    return profile


def _tifffile_pages(pages: list[tuple[np.ndarray, str, list[str] | None, dict]]) -> bytes:
    """A TIFF of one page per ``(samples, photometric, extrasamples, info)``, zlib-compressed,
    each with its ICC profile, resolution, text tags and XMP (and no tags of tifffile's own)."""
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tiff:
        for arr, photometric, extrasamples, info in pages:
            dpi, tags = info.get("dpi"), _tiff_tags(info)
            description = tags.pop(270, None)
            extratags = [(tag, "B" if tag == 700 else "s", 0, value, True) for tag, value in tags.items()]
            try:
                tiff.write(arr, photometric=photometric, extrasamples=extrasamples,
                           iccprofile=_profile(info, photometric == "separated"), compression="zlib",
                           resolution=dpi and (dpi[0], dpi[1]), resolutionunit="INCH" if dpi else None,
                           subfiletype=info.get("subfile_type", 0), metadata=None, software=False,
                           description=description, extratags=extratags)
            except (ValueError, TypeError) as err:
                raise ImageWriteError(f"tifffile could not write a page of shape {arr.shape}: {err}") from err
    return buf.getvalue()


_EXIF_SUB_IFDS = (0x8769, 0x8825, 0xA005)
"""EXIF's pointers to its Exif, GPS and interoperability sub-directories."""

_TIFF_LAYOUT_TAGS = (254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 274, 277, 278, 279, 280, 281,
                     284, 292, 293, 317, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 513, 514,
                     529, 530, 531, 532)
"""TIFF tags that describe how a file's pixels are stored (size, samples, strips, compression,
...): an EXIF block may carry its camera's, which must not describe a TIFF written from it."""

_TIFF_RESOLUTION_TAGS = (282, 283, 296)


def _tiff_tags(info: dict) -> dict[int, bytes]:
    """The TIFF tags to write: the text tags (:data:`TIFF_TEXT_TAGS`, their bytes as read) and
    the XMP packet (700)."""
    tags = dict(info.get("tiff_tags", {}))
    if info.get("xmp"):
        xmp = info["xmp"]
        tags[700] = xmp.encode() if isinstance(xmp, str) else xmp
    return tags


def _png_grey_alpha16(arr: np.ndarray) -> bytes:
    """``(H, W, 2)`` uint16 grey+alpha as a PNG of colour type 4 at 16 bits (big-endian samples)."""
    height, width = arr.shape[:2]
    rows = arr.astype(">u2").reshape(height, 2 * width).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw, 6))
            + _png_chunk(b"IEND", b""))


def _png_with_metadata(png: bytes, info: dict) -> bytes:
    """Inserts pHYs, iCCP, eXIf and the text chunks after IHDR (OpenCV writes none of them)."""
    chunks = b""
    if info.get("dpi"):
        per_metre = (round(d / 0.0254) for d in info["dpi"])
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if _profile(info, False):
        chunks += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(info["icc_profile"]))
    exif = info.get("exif")
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    return _png_with_text(png[:_IHDR_END] + chunks + png[_IHDR_END:], info)


_IHDR_END = 8 + 8 + 13 + 4
"""Where a PNG's IHDR chunk ends (signature, then IHDR's length, type, 13 bytes and CRC)."""


def _png_with_text(png: bytes, info: dict) -> bytes:
    """``png`` with the text chunks to write: a PNG's own (``png_text``) where they were, before
    or after the pixel data, or another format's XMP as iTXt."""
    before = [_png_chunk(kind, body) for kind, body, after in info.get("png_text", ()) if not after]
    after = [_png_chunk(kind, body) for kind, body, after in info.get("png_text", ()) if after]
    xmp = info.get("xmp")
    if xmp and not info.get("png_text"):
        text = xmp.encode() if isinstance(xmp, str) else xmp
        before.append(_png_chunk(b"iTXt", _PNG_XMP_KEY + b"\x00\x00\x00\x00\x00" + text))
    if not before and not after:
        return png
    end = len(png) - 12 if png[-8:-4] == b"IEND" else len(png)
    return png[:_IHDR_END] + b"".join(before) + png[_IHDR_END:end] + b"".join(after) + png[end:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
