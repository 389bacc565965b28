"""Classic denoisers, the yardsticks a learned denoiser has to beat.

``CLASSIC_DENOISERS`` is the one registry of them: the benchmark (``training.benchmark``) tunes
each over its ``grid`` and the UI's Compare tab runs them at their ``default``. Every denoiser
maps a float image ``(H, W, C)`` in ``[0, 1]`` (``C`` = 1 or 3, RGB order) and a dict of
parameters to a float32 image of the same shape in ``[0, 1]``.

BM3D comes from the optional ``bm3d`` package, which is free for non-commercial use only: it is
imported when first used, listed in ``requirements-bench.txt`` (never in the runtime
requirements), and :meth:`ClassicDenoiser.unavailable` says how to install it when it is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import numpy as np

from data.images import from_model

# On images this large or larger BM3D runs in its conventional white-noise mode (nf=0): measured
# here on 128x128 and 256x256 colour crops at sigma 25/255 it scores within 0.02 dB of the default
# profile's noise-spectrum analysis and runs 6.5x faster. On smaller images (28x28) that analysis
# is worth 0.05-0.5 dB, so they keep the default profile, single-threaded (thread start-up costs
# more than it saves there).
_BM3D_LARGE_IMAGE = 256 * 256


def _check_image(image) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected a float image (H, W, 1) or (H, W, 3), got shape {arr.shape}")
    return arr


def _as_float(out: np.ndarray, shape) -> np.ndarray:
    """OpenCV drops a single channel axis and may return uint8; this restores ``shape`` and [0, 1]."""
    out = np.asarray(out)
    if out.dtype == np.uint8:
        out = out.astype(np.float32) / 255.0
    return np.clip(out.astype(np.float32).reshape(shape), 0.0, 1.0)


def median(image: np.ndarray, params: dict) -> np.ndarray:
    """Median filter over a ``size`` x ``size`` window (``cv2.medianBlur``, per channel)."""
    import cv2

    return _as_float(cv2.medianBlur(np.ascontiguousarray(image), int(params["size"])), image.shape)


def nl_means(image: np.ndarray, params: dict) -> np.ndarray:
    """OpenCV non-local means on the uint8 image, filter strength ``h`` in uint8 units.

    ``template`` and ``search`` are the patch and search window sides (odd; OpenCV recommends
    7 and 21, but 3x3 patches do better on 28x28 images, so the grid tries both).

    Colour images go through ``fastNlMeansDenoisingColored`` (which filters in CIELAB, ``h``
    for lightness and colour alike); grey ones through ``fastNlMeansDenoising``. Both take
    8-bit pixels, so a 16-bit or float image is filtered, and returned, at 8-bit precision.
    """
    import cv2

    u8 = from_model(image, np.uint8)
    h, template, search = float(params["h"]), int(params["template"]), int(params["search"])
    if image.shape[-1] == 1:
        out = cv2.fastNlMeansDenoising(u8[..., 0], None, h, template, search)
    else:
        bgr = np.ascontiguousarray(u8[..., ::-1])  # OpenCV's colour conversions expect BGR
        out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, template, search)[..., ::-1]
    return _as_float(out, image.shape)


def total_variation(image: np.ndarray, params: dict) -> np.ndarray:
    """Total-variation denoising, Chambolle's algorithm (scikit-image), strength ``weight``."""
    from skimage.restoration import denoise_tv_chambolle

    return _as_float(denoise_tv_chambolle(image, weight=float(params["weight"]), channel_axis=-1),
                     image.shape)


def bm3d_white_noise_mode(height: int, width: int) -> bool:
    """Whether :func:`bm3d_denoise` runs an image of this size in BM3D's white-noise mode (nf=0)
    rather than its default profile: a sigma tuned in one mode is not the best in the other."""
    return height * width >= _BM3D_LARGE_IMAGE


def bm3d_denoise(image: np.ndarray, params: dict) -> np.ndarray:
    """BM3D (the ``bm3d`` package) for white noise of std ``sigma``; colour in opponent space.

    Large images use the conventional white-noise mode, small ones the default profile (see
    ``_BM3D_LARGE_IMAGE``).
    """
    import bm3d
    from bm3d.profiles import BM3DProfile

    profile = BM3DProfile()
    block = max(profile.bs_ht, profile.bs_wiener)
    if min(image.shape[:2]) <= block:  # bm3d 4.0.3 raises below its block size, crashes at it
        raise ValueError(f"BM3D needs both sides longer than its {block}-pixel blocks, "
                         f"got {image.shape[1]} x {image.shape[0]}")
    if np.ptp(image) == 0:  # nothing to denoise; bm3d's normalisation would divide by zero
        return image.copy()
    if bm3d_white_noise_mode(*image.shape[:2]):
        profile.nf = 0
    else:
        profile.num_threads = 1
    sigma = float(params["sigma"])
    if image.shape[-1] == 3 and not (image == image[..., :1]).all():
        out = bm3d.bm3d_rgb(image, sigma, profile)
    else:  # grey, or grey stored as RGB: bm3d_rgb's empty chroma would come back NaN
        out = np.repeat(bm3d.bm3d(image[..., 0], sigma, profile)[..., None], image.shape[-1], -1)
    if not np.isfinite(out).all():
        raise ValueError("BM3D returned non-finite pixels for this image")
    return _as_float(out, image.shape)


def inpaint(image: np.ndarray, params: dict, mask: np.ndarray | None = None) -> np.ndarray:
    """``cv2.inpaint`` of the pixels in ``mask`` (bool ``(H, W)``: where masking noise put its
    zeros, :func:`data.corruption.masked_pixels`); without a mask, of the pixels that are 0 in
    every channel, as a user sees them, truly black pixels of the scene included.

    ``method`` is ``"telea"`` or ``"ns"`` (Navier-Stokes), ``radius`` the neighbourhood in
    pixels. Pixels off the mask are kept.
    """
    import cv2

    methods = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if params["method"] not in methods:
        raise ValueError(f"inpaint method must be one of {sorted(methods)}, got {params['method']!r}")
    if mask is None:
        mask = np.all(image == 0.0, axis=-1)
    elif np.shape(mask) != image.shape[:2]:
        raise ValueError(f"the inpainting mask is {np.shape(mask)}, the image {image.shape[:2]}")
    mask = np.asarray(mask).astype(np.uint8)
    radius, method = float(params["radius"]), methods[params["method"]]
    if image.shape[-1] == 1:  # float32 keeps full precision; colour input must be 8-bit
        # Telea's method assumes 8-bit value scale even on floats: it fails on [0, 1] inputs.
        out = cv2.inpaint(np.ascontiguousarray(image[..., 0] * 255.0), mask, radius, method) / 255.0
    else:
        out = cv2.inpaint(from_model(image, np.uint8), mask, radius, method)
    # Only the holes take the inpainted (for colour, 8-bit) values: the rest stays as it was.
    return np.where(mask[..., None].astype(bool), _as_float(out, image.shape), image)


@dataclasses.dataclass(frozen=True)
class ClassicDenoiser:
    """A classic denoiser with the parameter grid the benchmark searches.

    Attributes:
        name: registry key (also the benchmark's contender name).
        label: a short human-readable name for tables and the UI.
        function: ``f(image (H, W, C) float [0, 1], params dict) -> float image``.
        grid: the parameter sets tried when tuning, weakest filtering first.
        default: the parameters used when none are given (the UI's starting point).
        corruptions: the corruptions it is meant for (``cv2.inpaint`` only fits masking).
        requires: an optional package that must be installed, or ``""``.
        slow: seconds per image rather than milliseconds; benchmarks score it on fewer images.
        told_mask: ``function`` takes a third argument, where masking noise zeroed pixels
            (inpainting); the others are not told it.
    """

    name: str
    label: str
    function: Callable[[np.ndarray, dict], np.ndarray]
    grid: tuple[dict, ...]
    default: dict
    corruptions: tuple[str, ...] = ("gaussian", "salt_pepper", "masking")
    requires: str = ""
    slow: bool = False
    told_mask: bool = False

    def unavailable(self) -> str | None:
        """Why this denoiser cannot run here (a missing optional package), or ``None``."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return (f"{self.label} skipped: the optional package {self.requires!r} is not installed "
                    f"(free for non-commercial use only; `pip install -r requirements-bench.txt`)")
        return None

    def __call__(self, image: np.ndarray, params: dict | None = None, mask: np.ndarray | None = None
                 ) -> np.ndarray:
        """Denoises one float image ``(H, W, C)`` in ``[0, 1]`` with ``params`` (default:
        ``default``); ``mask`` (bool ``(H, W)``), where masking noise zeroed pixels, goes to the
        denoisers ``told_mask`` and no others.

        Raises:
            ValueError: bad image shape, or parameter names this denoiser does not take.
            ImportError: its optional package is missing (message says how to install it).
        """
        params = dict(self.default if params is None else params)
        unknown = sorted(set(params) - set(self.default))
        if unknown:
            raise ValueError(f"{self.name} takes parameters {sorted(self.default)}, got unknown {unknown}")
        reason = self.unavailable()
        if reason:
            raise ImportError(reason)
        image, params = _check_image(image), {**self.default, **params}
        if self.told_mask and mask is not None:
            return self.function(image, params, mask)
        return self.function(image, params)


CLASSIC_DENOISERS: dict[str, ClassicDenoiser] = {
    d.name: d
    for d in (
        ClassicDenoiser("median3", "median 3x3", median, ({"size": 3},), {"size": 3}),
        ClassicDenoiser("median5", "median 5x5", median, ({"size": 5},), {"size": 5}),
        ClassicDenoiser(
            "nl_means", "non-local means (OpenCV)", nl_means,
            tuple({"h": h, "template": t, "search": s} for t in (3, 5, 7) for s in (11, 21)
                  for h in (3, 5, 7, 10, 13, 17, 22, 28, 35, 45, 60, 80)),
            {"h": 20, "template": 7, "search": 21}),
        ClassicDenoiser(
            "tv", "total variation (Chambolle)", total_variation,
            tuple({"weight": w} for w in (0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.0)),
            {"weight": 0.1}),
        ClassicDenoiser(
            "bm3d", "BM3D", bm3d_denoise,
            tuple({"sigma": s} for s in (0.03, 0.06, 0.1, 0.2, 0.35, 0.5)), {"sigma": 0.1},
            requires="bm3d", slow=True),
        ClassicDenoiser(
            "inpaint", "inpainting of the masked pixels (OpenCV)", inpaint,
            tuple({"radius": r, "method": m} for m in ("telea", "ns") for r in (1, 2, 3, 5)),
            {"radius": 3, "method": "telea"}, corruptions=("masking",), told_mask=True),
    )
}
"""Classic denoisers by name; the benchmark's contenders and the UI's Compare choices."""
