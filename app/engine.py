"""The one denoising function: any image, any size, with any model we ship.

:func:`denoise` takes pixels as :func:`data.images.load_image` gives them (or any ``(H, W)`` /
``(H, W, C)`` uint8, uint16 or float array) and returns the denoised image in the same shape and
dtype. On the way:

- **Input convention from the card.** The model's channels, stride and input range come from
  its card (:func:`models.registry.model_card`) and pixels go in and out through
  :func:`data.images.to_model` / :func:`data.images.from_model` with that range.
- **Channels.** A colour model on a grey image: the grey is repeated into R, G and B and the
  output is turned back into grey with BT.601 luma (:func:`data.images.match_channels`).
  A grey model on a colour image, by ``colour=``:

  * ``"per_channel"`` (default): R, G and B are each denoised as a grey image. Noise in
    colour photos sits in all three channels (chroma noise included), and this removes it
    everywhere; it costs three passes.
  * ``"luminance"``: only the BT.601 luma is denoised and the change is added to R, G and B
    alike, so the colour differences (chroma) stay exactly as they were. One pass, but chroma
    noise stays.
- **Any size.** Each plane is padded (reflect) to a multiple of the model's stride and cut
  into as few equal tiles of at most ``tile`` x ``tile`` pixels as cover it (:func:`tile_shape`),
  overlapping by at least ``overlap`` pixels; each tile's output is
  weighted by a ramp that is zero near interior tile edges (where the network saw zero
  padding instead of the neighbouring pixels) and crossfades linearly to one, so tiles blend
  without seams; the result is cropped back. Tiles go through the model ``batch_pixels`` at
  a time, one row of tiles after another, and finished rows leave the accumulator at once:
  memory holds the image itself, one strip of tile rows and one batch of activations, never
  the activations of the whole image.
- **Strength** blends between input (0) and output (1); ``DenoiseResult.residual`` is what
  was removed (input minus output).

- **Self-ensemble** (``ensemble`` 2 or 8): every batch of tiles also goes through the model
  flipped (2), or flipped and rotated by 90°, 180° and 270° (8), each output is turned back and
  the outputs are averaged. The noise differs in each orientation, the image does not, so the
  average is cleaner (+0.2 dB on the bundled ``photo`` model at 8) for 2 or 8 times the work.
  Only for models trained on flipped and rotated images (:func:`data.pipeline.augments`):
  others denoise a turned image worse, and averaging would lower their quality.

Several small images go through the model together with :func:`denoise_many` (same-size
planes share model calls). The caller keeps an image's alpha channel and metadata: the batch
script and the UI put the output in place of the :class:`~data.images.ImageFile`'s pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data.images import from_model, match_channels, to_model

COLOUR_POLICIES = ("per_channel", "luminance")
"""How a grey model treats a colour image (see the module docstring)."""

DEFAULT_TILE = 1024
"""Largest tile side in pixels: one tile per model call at ``DEFAULT_BATCH_PIXELS`` (the same
activation memory as four 512-pixel tiles); the larger the tiles, the less work their overlaps
repeat, and a 1-megapixel photo goes through in one piece."""

DEFAULT_BATCH_PIXELS = 1 << 20
"""Pixels per model call (one 1024 x 1024 tile, or ~1300 Fashion-MNIST-sized images)."""

ENSEMBLES = {
    1: ((0, False),),
    2: ((0, False), (0, True)),
    8: tuple((k, flip) for k in range(4) for flip in (False, True)),
}
"""Self-ensemble size -> the transforms averaged: (quarter turns, mirrored left-right)."""

ENSEMBLE_NAMES = {1: "off", 2: "×2: flipped", 8: "×8: flipped and rotated"}
"""What each self-ensemble size is called in the UI."""

ENSEMBLE_HELP = ("self-ensemble: average the model's output over 2 (flips) or 8 (flips and 90° "
                 "rotations) turned copies; 2 or 8 times the work, for +0.2 dB on the photo model "
                 "at 8; only for models trained on flipped and rotated photo patches")
"""The command-line help of every ``--ensemble`` flag."""

OVERLAP_STRIDES = 16
"""Default overlap in units of the model's stride: 64 px for our stride-4 ConvDAEs, whose
receptive field is 53 px, so every blended pixel saw its full context in some tile."""


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A loaded model with the input convention its card declares.

    Attributes:
        model: the Keras model.
        name: the name or path it was loaded from (or its Keras name).
        channels: channels the model takes (1 or 3).
        stride: image sides must be multiples of this.
        value_range: ``(low, high)`` the model expects pixels in.
        ensemble: a key of :data:`ENSEMBLES`: how many flips and rotations are averaged.
        max_ensemble: the largest ``ensemble`` the model's training allows.
        precision: how the model computes, ``"float32"`` or ``"bfloat16"``
            (:func:`models.registry.computes_in`, read once when it is loaded).
    """

    model: object
    name: str
    channels: int
    stride: int
    value_range: tuple[float, float] = (0.0, 1.0)
    ensemble: int = 1
    max_ensemble: int = 1
    precision: str = "float32"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Denoises a float batch ``(N, h, w, c)`` in ``[0, 1]``; ``c`` may differ from the model's."""
        have = batch.shape[-1]
        x = to_model(match_channels(batch, self.channels), self.value_range)
        y = None
        for turns, flip in ENSEMBLES[self.ensemble]:
            turned = np.rot90(x[:, :, ::-1] if flip else x, turns, axes=(1, 2))
            out = np.rot90(np.asarray(self.model.predict_on_batch(turned), dtype=np.float32), -turns,
                           axes=(1, 2))
            out = out[:, :, ::-1] if flip else out
            y = out if y is None else y + out
        if self.ensemble > 1:
            y = y / self.ensemble
        return match_channels(from_model(y, np.float32, self.value_range), have)

    def with_ensemble(self, ensemble: int) -> Denoiser:
        """This model averaging over ``ensemble`` flips and rotations (a key of :data:`ENSEMBLES`).

        Raises:
            ValueError: an unknown size, or one the model was not trained for.
        """
        check_ensemble(ensemble, self.max_ensemble, self.name)
        return dataclasses.replace(self, ensemble=int(ensemble))


def max_ensemble(card: dict) -> int:
    """The largest self-ensemble a model's card allows: 8 for a model trained on flipped and
    rotated patches (:func:`data.pipeline.augments` of its config's dataset), else 1."""
    from data.pipeline import augments

    return max(ENSEMBLES) if augments(card.get("config", {}).get("dataset", "")) else 1


def check_ensemble(ensemble, allowed: int, name: str) -> None:
    """Raises ``ValueError`` saying why, unless ``ensemble`` is a key of :data:`ENSEMBLES` no
    larger than ``allowed`` (:func:`max_ensemble`) for the model called ``name``."""
    if isinstance(ensemble, bool) or ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {tuple(ENSEMBLES)}, got {ensemble!r}")
    if ensemble > allowed:
        raise ValueError(
            f"model {name} was not trained on flipped and rotated images (only models trained "
            f"on a folder: of photos are), so it denoises them worse than the image itself and "
            f"averaging over them would lower its quality: use ensemble 1")


def as_denoiser(model, card: dict | None = None, precision: str | None = None,
                ensemble: int | None = None) -> Denoiser:
    """A :class:`Denoiser` from a bundled name, a run folder, a ``.keras`` path or a Keras model.

    Args:
        model: what to load, or an already loaded Keras model (or a :class:`Denoiser`, returned
            as it is).
        card: the model's card, for a Keras model passed in directly. Without one, such a model
            gets the convention every model of this project is trained with
            (:mod:`data.pipeline` feeds it :func:`data.images.to_model` output, range ``[0, 1]``),
            and its channels and stride from the model itself.
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 where the machine has
            bfloat16 units; :data:`models.registry.PRECISION_CHOICES`); ``None``: float32, or
            what a :class:`Denoiser` passed in computes in (another precision is refused).
        ensemble: self-ensemble size (:meth:`Denoiser.with_ensemble`); ``None``: 1, or what a
            :class:`Denoiser` passed in already has.

    Raises:
        models.registry.ModelNotFoundError: no model under that name or path.
        ValueError: the card contradicts the model, the model does not map images to images,
            an unknown precision, or an ensemble the model was not trained for.
    """
    if isinstance(model, Denoiser):
        den = model
        if precision is not None:
            from models.registry import check_precision

            check_precision(precision)
        if precision not in (None, "auto", den.precision):
            raise ValueError(f"model {den.name} was loaded to compute in {den.precision}, not "
                             f"{precision}: load it again with that precision")
    elif isinstance(model, (str, Path)):
        from models.registry import model_version, resolve_model_path

        path = resolve_model_path(model)
        den = _load_denoiser(str(model), str(path.resolve()), model_version(path), precision or "float32")
    else:
        from models.registry import with_precision

        den = _denoiser(with_precision(model, precision or "float32"), card or {},
                        getattr(model, "name", "model"))
    return den if ensemble is None else den.with_ensemble(ensemble)


@functools.lru_cache(maxsize=8)
def _load_denoiser(name: str, _path: str, _version: tuple, precision: str) -> Denoiser:
    from models.registry import load_model, model_card

    return _denoiser(load_model(name, precision), model_card(name), name)


def _denoiser(model, card: dict, name: str) -> Denoiser:
    from models.registry import computes_in

    shape = getattr(model, "input_shape", None)
    own_channels = getattr(model, "channels", None) or (shape[-1] if shape else None)
    channels = int(card.get("channels") or own_channels or 0)
    if channels not in (1, 3):
        raise ValueError(f"model {name}: cannot tell its channels (card says {card.get('channels')}, "
                         f"model says {own_channels}); expected 1 or 3")
    if own_channels and int(own_channels) != channels:
        raise ValueError(f"model {name}: card says {channels} channels but the model takes {own_channels}")
    own_stride = getattr(model, "stride", None)
    stride = int(own_stride or card.get("stride") or 1)
    if own_stride and card.get("stride") and int(card["stride"]) != stride:
        raise ValueError(f"model {name}: card says stride {card['stride']} but the model's is {stride}")
    out_shape = getattr(model, "output_shape", None)  # Keras models have one
    images_out = isinstance(out_shape, tuple) and len(out_shape) == 4 and out_shape[-1] == channels
    if out_shape is not None and not images_out:
        raise ValueError(f"model {name} is not a denoiser: it maps images of {channels} channel(s) "
                         f"to {out_shape}, not to images of the same channels")
    value_range = tuple(float(v) for v in card.get("input", {}).get("range", (0.0, 1.0)))
    return Denoiser(model, name, channels, stride, value_range, max_ensemble=max_ensemble(card),
                    precision=computes_in(model))


@dataclasses.dataclass
class DenoiseResult:
    """What :func:`denoise` returns.

    Attributes:
        output: the denoised pixels, same shape and dtype as the input.
        seconds: wall time spent on this image.
        tiles: model tiles it took (per plane, summed).
        input: the pixels that went in.
    """

    output: np.ndarray
    seconds: float
    tiles: int
    input: np.ndarray = dataclasses.field(repr=False)

    @functools.cached_property
    def residual(self) -> np.ndarray:
        """What was removed: input minus output, float32 in ``[0, 1]`` units, the input's shape."""
        return (to_model(self.input) - to_model(self.output)).reshape(self.input.shape)


def denoise(pixels: np.ndarray, model, *, strength: float = 1.0, tile: int | None = DEFAULT_TILE,
            overlap: int | None = None, colour: str = "per_channel",
            batch_pixels: int = DEFAULT_BATCH_PIXELS,
            progress: Callable[[float], None] | None = None) -> DenoiseResult:
    """Denoises one image of any size.

    Args:
        pixels: ``(H, W)`` or ``(H, W, C)`` with ``C`` 1 or 3 (no alpha); uint8, uint16 or float
            in ``[0, 1]``.
        model: a bundled name, a run folder, a ``.keras`` path, a loaded Keras model or a
            :class:`Denoiser`.
        strength: 0 returns the input, 1 the model's output, in between a blend.
        tile: tiles hold at most ``tile`` x ``tile`` pixels (``tile`` rounded down to the model's
            stride; see :func:`tile_shape`); ``None`` denoises the whole image in one piece
            (memory grows with the image).
        overlap: pixels shared by neighbouring tiles (rounded up to the stride); ``None`` for
            ``OVERLAP_STRIDES`` strides.
        colour: how a grey model treats a colour image: ``"per_channel"`` or ``"luminance"``.
        batch_pixels: pixels per model call.
        progress: called with the fraction done (0..1) as tiles finish.

    Returns:
        A :class:`DenoiseResult`.

    Raises:
        ValueError: pixels or settings out of range, with what was received.
    """
    return denoise_many([pixels], model, strength=strength, tile=tile, overlap=overlap, colour=colour,
                        batch_pixels=batch_pixels, progress=progress)[0]


def denoise_many(images: Sequence[np.ndarray], model, *, strength: float = 1.0,
                 tile: int | None = DEFAULT_TILE, overlap: int | None = None, colour: str = "per_channel",
                 batch_pixels: int = DEFAULT_BATCH_PIXELS,
                 progress: Callable[[float], None] | None = None) -> list[DenoiseResult]:
    """Denoises several images; small ones of the same size share model calls.

    Takes the same arguments as :func:`denoise` (``images`` a sequence of its ``pixels``) and
    returns one :class:`DenoiseResult` per image, in order.
    """
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if colour not in COLOUR_POLICIES:
        raise ValueError(f"colour must be one of {COLOUR_POLICIES}, got {colour!r}")
    if int(batch_pixels) < 1:
        raise ValueError(f"batch_pixels must be positive, got {batch_pixels}")
    started = time.perf_counter()
    den = as_denoiser(model)
    jobs = [_ImageJob(p, den, float(strength), colour) for p in images]
    side, shared = tiling(den.stride, tile, overlap)
    small, large = [], []
    for job in jobs:
        for k, plane in enumerate(job.planes):
            (small if max(plane.shape[:2]) <= side else large).append((job, k))
    work = _Work(progress, sum(_plane_work(job.planes[k].shape, side, shared, den.stride)
                               for job, k in small + large))
    _run_whole_planes(small, den, batch_pixels, work)
    for job, k in large:
        start = time.perf_counter()
        job.tiles += _run_tiled_plane(job, k, den, tile, overlap, batch_pixels, work)
        job.seconds += time.perf_counter() - start
    if len(jobs) == 1:  # one image: all the time was its own (padding and blending included)
        jobs[0].seconds = time.perf_counter() - started
    return [job.result() for job in jobs]


# ---------------------------------------------------------------- per image: planes in, output out


class _ImageJob:
    """One image: the planes the model sees, and how their outputs become the final pixels."""

    def __init__(self, pixels, den: Denoiser, strength: float, colour: str):
        arr = np.asarray(pixels)
        hwc = arr[..., None] if arr.ndim == 2 else arr
        if hwc.ndim != 3 or hwc.shape[-1] not in (1, 3):
            raise ValueError(f"pixels must be (H, W) or (H, W, C) with C 1 or 3 (alpha split off), "
                             f"got shape {arr.shape}")
        if min(hwc.shape[:2]) < 1:
            raise ValueError(f"pixels must have at least one row and column, got shape {arr.shape}")
        if not (arr.dtype in (np.uint8, np.uint16) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"pixels must be uint8, uint16 or float, got {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating):  # to_model would clip: 0..255 floats come out white
            low, high = float(arr.min()), float(arr.max())
            if not 0.0 <= low <= high <= 1.0:  # NaN fails too
                raise ValueError(f"float pixels must be in [0, 1], got values from {low:g} to {high:g}")
        self.input, self.hwc, self.strength = arr, hwc, strength
        self.height, self.width, channels = hwc.shape
        self.output = np.empty_like(hwc)
        self.seconds, self.tiles = 0.0, 0
        self.mode = "luminance" if den.channels == 1 and channels == 3 and colour == "luminance" else (
            "per_channel" if den.channels == 1 and channels == 3 else "whole")
        self.luma = match_channels(to_model(hwc), 1) if self.mode == "luminance" else None
        sources = {"per_channel": [hwc[..., c:c + 1] for c in range(3)],
                   "luminance": [self.luma], "whole": [hwc]}[self.mode]
        self.planes = [_pad_to(p, den.stride) for p in sources]

    def emit(self, k: int, row0: int, rows: np.ndarray) -> None:
        """Writes finished rows ``row0 ..`` of plane ``k`` (float ``[0, 1]``) into the output."""
        n = min(rows.shape[0], self.height - row0)
        if n <= 0:
            return
        denoised = rows[:n, : self.width]
        source = to_model(self.hwc[row0:row0 + n])
        out = self.output[row0:row0 + n]
        if self.mode == "per_channel":
            x = source[..., k:k + 1]
            out[..., k:k + 1] = from_model(x + self.strength * (denoised - x), out.dtype)
        elif self.mode == "luminance":  # the luma change, added to R, G and B alike
            luma = self.luma[row0:row0 + n]
            out[...] = from_model(source + self.strength * (denoised - luma), out.dtype)
        else:
            out[...] = from_model(source + self.strength * (denoised - source), out.dtype)

    def result(self) -> DenoiseResult:
        return DenoiseResult(self.output.reshape(self.input.shape), self.seconds, self.tiles, self.input)


def _pad_to(plane: np.ndarray, stride: int) -> np.ndarray:
    """Reflect-pads bottom and right so both sides are multiples of ``stride``."""
    pad_h, pad_w = -plane.shape[0] % stride, -plane.shape[1] % stride
    if not pad_h and not pad_w:
        return plane
    return np.pad(plane, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")


class _Work:
    """Progress over all planes, in pixels pushed through the model."""

    def __init__(self, callback, total: int):
        self.callback, self.total, self.done = callback, max(1, total), 0

    def advance(self, pixels: int) -> None:
        self.done += pixels
        if self.callback is not None:
            self.callback(min(1.0, self.done / self.total))


# ---------------------------------------------------------------- small planes: whole, batched


def _run_whole_planes(items, den: Denoiser, batch_pixels: int, work: _Work) -> None:
    """Planes that fit one tile: same-shape planes are stacked into shared model calls."""
    groups: dict[tuple, list] = {}
    for job, k in items:
        groups.setdefault(job.planes[k].shape, []).append((job, k))
    for shape, members in groups.items():
        per_call = max(1, batch_pixels // (shape[0] * shape[1]))
        for i in range(0, len(members), per_call):
            chunk = members[i:i + per_call]
            start = time.perf_counter()
            out = den(np.stack([to_model(job.planes[k]) for job, k in chunk]))
            for (job, k), rows in zip(chunk, out, strict=True):
                job.emit(k, 0, rows)
                job.tiles += 1
            share = (time.perf_counter() - start) / len(chunk)
            for job, _ in chunk:
                job.seconds += share
            work.advance(len(chunk) * shape[0] * shape[1])


# ---------------------------------------------------------------- large planes: tiled strips


def tiling(stride: int, tile: int | None, overlap: int | None) -> tuple[int, int]:
    """``(tile, overlap)`` snapped to the stride and checked (``ValueError`` saying why); the
    batch script checks ``--tile`` with it before any work."""
    if tile is None:
        return (1 << 62), 0
    if int(tile) < stride:
        raise ValueError(f"tile must be at least the model's stride ({stride} px), got {tile}")
    asked, tile = int(tile), int(tile) // stride * stride
    overlap = OVERLAP_STRIDES * stride if overlap is None else int(overlap)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    overlap = -(-overlap // stride) * stride
    # Neighbours share ``overlap`` pixels and each blends over its half of them: a tile under
    # twice the overlap would have to share less, and seams show where the shared band is
    # narrower than the model's receptive field (a 32-px tile of a stride-4 model: errors of
    # 0.12 against the whole image).
    if tile < 2 * overlap:
        raise ValueError(f"tile must be at least {2 * overlap} px, twice the {overlap}-px overlap "
                         f"that hides the seams between tiles, got {asked}")
    return tile, overlap


def tile_side(length: int, tile: int, overlap: int, stride: int = 1) -> int:
    """The side of the tiles that cover ``length`` (a multiple of ``stride``): as few tiles as
    sides up to ``tile`` allow, all of one size (rounded up to the stride), neighbours sharing
    at least ``overlap`` pixels. An image a little larger than ``tile`` is cut into two halves
    rather than a full tile plus a second one that mostly repeats it.
    """
    if length <= tile:
        return length
    count = -(-(length - overlap) // (tile - overlap))
    side = -(-(length + (count - 1) * overlap) // count)
    return min(tile, -(-side // stride) * stride)


def tile_shape(height: int, width: int, tile: int, overlap: int, stride: int = 1) -> tuple[int, int]:
    """``(tile height, tile width)`` for a plane: :func:`tile_side` along one side, and along the
    other a side that may grow past ``tile`` while the tile holds at most ``tile * tile``
    pixels (the memory bound), whichever order pushes fewer pixels through the model. A
    1265 x 791 photo with ``tile=1024`` thus goes through in one piece, not two.
    """
    def fit(first, second):
        a = tile_side(first, tile, overlap, stride)
        return a, tile_side(second, max(tile, tile * tile // a // stride * stride), overlap, stride)

    rows_first = fit(height, width)
    cols_first = fit(width, height)[::-1]
    return min(rows_first, cols_first, key=lambda shape: _pushed(height, width, *shape, overlap))


def _pushed(height: int, width: int, th: int, tw: int, overlap: int) -> int:
    """Pixels that tiles of ``th`` x ``tw`` push through the model (overlaps counted twice)."""
    return len(tile_starts(height, th, overlap)) * len(tile_starts(width, tw, overlap)) * th * tw


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length``, ``overlap`` apart.

    The last tile is shifted to end at ``length`` (so it may overlap its neighbour more).
    """
    if length <= tile:
        return [0]
    step = tile - overlap
    return [*range(0, length - tile, step), length - tile]


def tile_weights(starts: list[int], size: int, overlap: int) -> list[np.ndarray]:
    """1-D blending weights for each tile along one axis.

    Near an interior edge the weight is 0 for the first ``3 * overlap // 8`` pixels (where the
    network's view reached its zero padding: a trained U-Net's output feels the tile edge that
    far in), then rises linearly to 1 where the overlap ends; for two neighbours overlapping by
    exactly ``overlap`` the two ramps sum to 1. Image edges keep weight 1.
    """
    margin = 3 * overlap // 8
    idx = np.arange(size, dtype=np.float32)

    def ramp(distance, shared):
        if shared - 2 * margin <= 0:
            return np.ones_like(distance)
        return np.clip((distance - margin + 0.5) / (shared - 2 * margin), 0.0, 1.0)

    weights = []
    for i, start in enumerate(starts):
        w = np.ones(size, dtype=np.float32)
        if i > 0:
            w *= ramp(idx, starts[i - 1] + size - start)
        if i < len(starts) - 1:
            w *= ramp(size - 1 - idx, start + size - starts[i + 1])
        weights.append(w)
    return weights


def _plane_work(shape, tile: int, overlap: int, stride: int) -> int:
    """Pixels a plane pushes through the model (overlaps counted twice)."""
    return _pushed(shape[0], shape[1], *tile_shape(shape[0], shape[1], tile, overlap, stride), overlap)


def _total_weight(starts, weights, length) -> np.ndarray:
    total = np.zeros(length, dtype=np.float32)
    for start, w in zip(starts, weights, strict=True):
        total[start:start + len(w)] += w
    return total


def _run_tiled_plane(job: _ImageJob, k: int, den: Denoiser, tile, overlap, batch_pixels: int,
                     work: _Work) -> int:
    """Denoises plane ``k`` of ``job`` tile row by tile row; returns the number of tiles.

    The tile weights are products ``wy ⊗ wx`` on a grid, so the total weight under every pixel
    is the product of two 1-D sums: no image-sized weight map is needed.
    """
    plane = job.planes[k]
    height, width, channels = plane.shape
    tile, overlap = tiling(den.stride, tile, overlap)
    th, tw = tile_shape(height, width, tile, overlap, den.stride)
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    wy, wx = tile_weights(ys, th, overlap), tile_weights(xs, tw, overlap)
    total_y, total_x = _total_weight(ys, wy, height), _total_weight(xs, wx, width)
    acc = np.zeros((th, width, channels), dtype=np.float32)  # rows base .. base + th
    base = 0
    per_call = max(1, batch_pixels // (th * tw))

    def flush(upto):
        rows = acc[: upto - base] / (total_y[base:upto, None, None] * total_x[None, :, None])
        job.emit(k, base, rows)

    for i, y in enumerate(ys):
        if y > base:
            flush(y)
            acc[: th - (y - base)] = acc[y - base:]
            acc[th - (y - base):] = 0.0
            base = y
        for j0 in range(0, len(xs), per_call):
            cols = range(j0, min(j0 + per_call, len(xs)))
            batch = np.stack([to_model(plane[y:y + th, xs[j]:xs[j] + tw]) for j in cols])
            out = den(batch)
            for j, tile_out in zip(cols, out, strict=True):
                acc[:, xs[j]:xs[j] + tw] += tile_out * (wy[i][:, None, None] * wx[j][None, :, None])
            work.advance(len(cols) * th * tw)
    flush(height)
    return len(ys) * len(xs)
