"""The one pair of functions through which pixels enter and leave the models.

``to_model`` owns dtype, range and bit depth on the way in (integers of any depth to float32
in ``[0, 1]``, always ``(H, W, C)``); ``from_model`` owns the way back (clip, round, the
requested integer depth). Everything else (datasets, engine, UI, benchmarks) calls these.
"""

from __future__ import annotations

import numpy as np


def to_model(image: np.ndarray) -> np.ndarray:
    """Converts an image or batch to float32 in ``[0, 1]`` with an explicit channel axis.

    Args:
        image: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; uint8, uint16, bool or float
            (floats are taken to be in ``[0, 1]`` already).

    Returns:
        float32 array, ``(H, W, C)`` or ``(N, H, W, C)``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected an image (H, W[, C]) or batch (N, H, W, C), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unsupported pixel type {arr.dtype}; expected integers or floats")


def from_model(image: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """Converts model output (float, nominally ``[0, 1]``) to the given pixel type.

    Args:
        image: float array of any shape.
        dtype: ``np.uint8``, ``np.uint16`` or a float type (then clipped to ``[0, 1]`` only).

    Returns:
        The clipped, rounded array in ``dtype``.
    """
    arr = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return arr.astype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"output pixel type must be uint8, uint16 or float, got {dtype}")
    return np.rint(arr * np.iinfo(dtype).max).astype(dtype)


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


class ImageReadError(ValueError):
    """An image file that cannot be used, with a message that says why."""


def read_image(path, mode: str | None = None) -> np.ndarray:
    """Reads an image file into a numpy array, EXIF orientation applied.

    Args:
        path: the file.
        mode: a Pillow mode to convert to (``"L"``, ``"RGB"``), or ``None`` to keep grey as
            ``(H, W)`` uint8/uint16 and everything else as RGB uint8.

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated or too large.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if mode is not None:
                im = im.convert(mode)
            elif im.mode not in ("L", "I;16", "RGB"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except FileNotFoundError as err:
        raise ImageReadError(f"{path}: no such file") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: image too large ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err
    return arr.astype(np.uint16) if arr.dtype.byteorder not in ("=", "|") else arr
