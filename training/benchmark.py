"""Denoising benchmark: our models against classic denoisers, on one fixed protocol.

The protocol (issue 3): images are floats in ``[0, 1]``; each setting corrupts them with
:func:`data.corruption.corrupt` and a fixed seed (``gaussian`` clip(x + σn, 0, 1),
``salt_pepper`` a fraction p of pixels to 0 or 1 with equal odds, ``masking`` a fraction p to
0); the score is PSNR per image with data range 1.0 averaged over the images
(:func:`data.metrics.psnr`), and SSIM (:func:`data.metrics.ssim`). Every contender is first
tuned over its parameter grid on a separate validation slice, with its own noise draw: for a
dataset the slice of the train split that pretraining holds out (``split_validation(...,
0.1, seed)``), for photos a centre crop of a tuning photo kept out of the test photos. It is
then scored on the test images with the parameters that won, which the report names.
Inpainting, for masking only, is told where the noise zeroed pixels (:func:`masks_of`), not
every black pixel: half of a Fashion-MNIST image is black background.

Examples::

    python -m training.benchmark --model fashion-mnist --dataset fashion_mnist --limit 300 \\
        --json runs/benchmark.json --markdown docs/benchmark.md
    python -m training.benchmark --write-skimage-photos photos
    python -m training.benchmark --model photo --images photos/test \\
        --tune-image photos/tune/motorcycle_right.png --ensemble 1 8

``--ensemble 1 8`` scores each model alone and with the 8-fold self-ensemble
(:mod:`app.engine`), the latter as ``NAME-x8``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import field
from fractions import Fraction
from pathlib import Path

import numpy as np

from app.engine import ENSEMBLE_HELP, ENSEMBLES
from data.corruption import BENCHMARK_SETTINGS, CORRUPTIONS, CorruptionSpec, corrupt, masked_pixels
from data.datasets import list_images, load_named, split_validation
from data.images import atomic_write_bytes, existing_ancestor, read_image, to_model
from data.metrics import psnr, ssim
from models.classic import CLASSIC_DENOISERS, ClassicDenoiser
from models.registry import PRECISIONS, bundled_models, cpu_description, model_card, resolve_model_path
from training.cli import parse_config

PHOTO_SIGMAS = (15, 25, 50)  # in uint8 units, i.e. σ = s/255
SKIMAGE_TEST_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SKIMAGE_TUNE_PHOTO = "motorcycle_right"  # a different scene from every test photo


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What to benchmark, on what, and where to write the tables."""

    model: tuple[str, ...] = field(default=(), metadata={
        "flag": "model", "help": "a model to score: bundled name, run folder or .keras file"})
    dataset: str | None = field(default=None, metadata={
        "help": "named dataset whose test split is scored (default fashion_mnist unless --images)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with the dataset's files"})
    images: str | None = field(default=None, metadata={
        "help": "folder of clean photos to score instead of a dataset"})
    tune_image: str | None = field(default=None, metadata={
        "help": "photo whose centre crop tunes the contenders (default: the first photo in "
                "--images, then left out of the test)"})
    tune_crop: int = field(default=256, metadata={
        "help": "side of the tuning crop: big enough to be a real photo, small enough for BM3D's grid"})
    limit: int = field(default=0, metadata={"help": "score only the first N test images (0: all)"})
    tune_images: int = field(default=32, metadata={
        "help": "validation images used to tune each contender on a dataset"})
    slow_tune_images: int = field(default=16, metadata={
        "help": "validation images used to tune slow contenders (BM3D) on a dataset"})
    slow_limit: int = field(default=300, metadata={
        "help": "slow contenders (BM3D) score only the first N test images (0: all); a full "
                "Fashion-MNIST test split would take BM3D about 9 hours here"})
    contender: tuple[str, ...] = field(default=tuple(CLASSIC_DENOISERS), metadata={
        "flag": "contender", "choices": tuple(CLASSIC_DENOISERS),
        "help": "classic denoisers to include (the noisy input is always scored)"})
    setting: tuple[str, ...] = field(default=(), metadata={
        "flag": "setting",
        "help": "NAME:LEVEL to score, e.g. gaussian:0.3 or gaussian:25/255 (default: the 8 "
                "benchmark settings; for photos gaussian 15, 25 and 50 /255)"})
    precision: str = field(default="float32", metadata={
        "choices": PRECISIONS, "help": "how our models compute (bfloat16: their names get a "
        "'-bfloat16' suffix)"})
    ensemble: tuple[int, ...] = field(default=(1,), metadata={
        "choices": tuple(ENSEMBLES), "help": f"{ENSEMBLE_HELP}; each model is scored at each size "
        "given (sizes above 1 add an '-xN' suffix to its name)"})
    seed: int = field(default=0, metadata={
        "help": "seed of the test noise (tuning uses the next seed; with photos, the seeds after "
                "the test photos') and, for a dataset, of the held-out slice that tunes the classic "
                "denoisers (as pretraining's --seed picks it)"})
    json: str | None = field(default=None, metadata={"help": "write the full report here"})
    markdown: str | None = field(default=None, metadata={"help": "write the Markdown tables here"})
    from_json: tuple[str, ...] = field(default=(), metadata={
        "flag": "from-json", "help": "print (and with --markdown write) the tables of a saved --json "
        "report, then exit; given again, later reports' settings join or replace the first's "
        "(same test and tuning images and seeds)"})
    write_skimage_photos: str | None = field(default=None, metadata={
        "help": "write scikit-image's sample photos to DIR/test and DIR/tune, then exit"})

    def __post_init__(self):
        if self.dataset and self.images:
            raise ValueError("pass either --dataset or --images, not both")
        for name, value in (("limit", self.limit), ("slow_limit", self.slow_limit)):
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        for text in self.setting:
            parse_setting(text)
        if min(self.tune_images, self.slow_tune_images) < 1 or self.tune_crop < 16:
            raise ValueError(f"--tune-images and --slow-tune-images must be >= 1 and --tune-crop >= 16, "
                             f"got {self.tune_images}, {self.slow_tune_images} and {self.tune_crop}")


# ---------------------------------------------------------------- protocol


@dataclasses.dataclass(frozen=True)
class Setting:
    """One corruption at one level; ``label`` names it in tables (``gaussian:25/255``)."""

    name: str
    level: float
    label: str


def parse_setting(text: str) -> Setting:
    """Parses ``NAME:LEVEL`` where LEVEL is a number or a fraction (``gaussian:25/255``)."""
    name, sep, level_text = text.strip().partition(":")
    try:
        level = float(Fraction(level_text.strip()))
    except (ValueError, ZeroDivisionError):
        level = None
    if not sep or level is None:
        raise ValueError(f"a setting must look like NAME:LEVEL (e.g. gaussian:0.3, gaussian:25/255, "
                         f"masking:0.5), got {text!r}")
    CorruptionSpec(name.strip(), level, level)  # checks the name and the level's range
    return Setting(name.strip(), level, f"{name.strip()}:{level_text.strip()}")


def default_settings(photos: bool) -> tuple[Setting, ...]:
    """The issue's grid: 8 settings for datasets, Gaussian σ ∈ {15, 25, 50}/255 for photos."""
    if photos:
        return tuple(Setting("gaussian", s / 255, f"gaussian:{s}/255") for s in PHOTO_SIGMAS)
    return tuple(Setting(n, lv, f"{n}:{lv:g}") for n, lv in BENCHMARK_SETTINGS)


def corrupt_images(images, setting: Setting, seed: int):
    """Corrupts a batch ``(N, H, W, C)`` with one seed (the same noise as model cards get), or
    a list of differently sized photos with seeds ``seed, seed + 1, ...``."""
    if isinstance(images, np.ndarray):
        return corrupt(images, setting.name, setting.level, seed)
    return [corrupt(im, setting.name, setting.level, seed + i) for i, im in enumerate(images)]


def masks_of(images, setting: Setting, seed: int):
    """For masking, where :func:`corrupt_images` (same images, setting and seed) zeroed pixels,
    one bool ``(H, W)`` per image, which inpainting is told; ``None`` for other corruptions."""
    if setting.name != "masking":
        return None
    if isinstance(images, np.ndarray):
        return masked_pixels(images.shape, setting.level, seed)
    return [masked_pixels(im.shape, setting.level, seed + i) for i, im in enumerate(images)]


def score(clean, estimates) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (data range 1.0) and SSIM of estimates clipped to ``[0, 1]``."""
    if isinstance(clean, np.ndarray) and isinstance(estimates, np.ndarray):
        est = np.clip(estimates, 0.0, 1.0)
        return np.atleast_1d(psnr(clean, est)), np.atleast_1d(ssim(clean, est))
    pairs = [(c, np.clip(e, 0.0, 1.0)) for c, e in zip(clean, estimates, strict=True)]
    return (np.asarray([psnr(c, e) for c, e in pairs], np.float64),
            np.asarray([ssim(c, e) for c, e in pairs], np.float64))


# ---------------------------------------------------------------- contenders


@dataclasses.dataclass(frozen=True)
class Contender:
    """Anything that maps noisy images to estimates, with a parameter grid to tune.

    ``run(images, params, masks)`` takes a batch ``(N, H, W, C)`` or a list of ``(H, W, C)``
    photos, and for masking where the noise zeroed pixels (:func:`masks_of`, else ``None``:
    only inpainting uses them), and returns estimates of the same kind.
    """

    name: str
    label: str
    kind: str  # "input", "classic" or "model"
    run: Callable[[Sequence[np.ndarray], dict], Sequence[np.ndarray]]
    grid: tuple[dict, ...] = ({},)
    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)
    slow: bool = False
    about: dict = field(default_factory=dict)  # what the report says of it (a model's file and card)


def noisy_input() -> Contender:
    """The corrupted image itself: the score every denoiser must improve on."""
    return Contender("noisy", "noisy input", "input", lambda images, params, masks=None: images)


def classic_contender(denoiser: ClassicDenoiser) -> Contender:
    """A classic denoiser applied image by image (told the masks when it takes them)."""
    def run(images, params, masks=None):
        masks = [None] * len(images) if masks is None else masks
        out = [denoiser(im, params, mask) for im, mask in zip(images, masks, strict=True)]
        return np.stack(out) if isinstance(images, np.ndarray) else out
    return Contender(denoiser.name, denoiser.label, "classic", run, denoiser.grid,
                     denoiser.corruptions, denoiser.slow)


def model_contender(name_or_path: str, precision: str = "float32", ensemble: int = 1) -> Contender:
    """One of our models, run through the engine (:func:`app.engine.denoise_many`), which
    batches small images of one size together and tiles large ones, as the app does; computing
    in ``precision`` (a name other than float32 is appended to the contender's name) and
    averaging over ``ensemble`` flips and rotations (``-xN`` appended when above 1)."""
    from app.engine import as_denoiser, denoise_many

    denoiser = as_denoiser(name_or_path, precision=precision, ensemble=ensemble)

    def run(images, params, masks=None):
        out = [r.output for r in denoise_many(list(images), denoiser)]
        return np.stack(out) if isinstance(images, np.ndarray) else out

    text = str(name_or_path)
    path = resolve_model_path(text)
    if text in bundled_models():
        name = text
    else:  # a run folder or its model.keras is named after the folder, another file by its stem
        name = path.parent.name if path.name == "model.keras" else path.stem
    if precision != "float32":
        name = f"{name}-{precision}"
    if ensemble > 1:
        name = f"{name}-x{ensemble}"
    modified = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    about = {"path": str(path), "modified": modified, "description": model_card(text).get("description", "")}
    return Contender(name, f"{name} (ours)", "model", run, about=about)


def build_contenders(config: BenchmarkConfig) -> tuple[list[Contender], dict[str, str]]:
    """The noisy input, the available classic denoisers asked for, and the models.

    Returns:
        ``(contenders, skipped)`` where ``skipped`` maps a classic name to why it cannot run.
    """
    contenders, skipped = [noisy_input()], {}
    for name in dict.fromkeys(config.contender):
        denoiser = CLASSIC_DENOISERS[name]
        reason = denoiser.unavailable()
        if reason:
            skipped[name] = reason
        else:
            contenders.append(classic_contender(denoiser))
    names = {c.name for c in contenders}
    for model, ensemble in itertools.product(dict.fromkeys(config.model), dict.fromkeys(config.ensemble)):
        contender = model_contender(model, config.precision, ensemble)
        if contender.name in names:
            raise BenchmarkError(f"two contenders are both named {contender.name!r}; "
                                 "pass each model once, by distinct names or paths")
        names.add(contender.name)
        contenders.append(contender)
    return contenders, skipped


# ---------------------------------------------------------------- tuning and scoring


def _take(images, n: int):
    return images[:n] if n and images is not None else images


def tune(contender: Contender, clean, noisy, masks=None) -> dict:
    """Picks the parameters with the best mean PSNR on the validation images.

    Returns:
        ``{"params": best, "seconds": ..., "grid": [{"params", "psnr"}, ...]}`` (an empty grid
        list when there is nothing to choose).
    """
    if len(contender.grid) == 1:
        return {"params": dict(contender.grid[0]), "seconds": 0.0, "grid": []}
    started = time.perf_counter()
    tried = []
    for params in contender.grid:
        psnrs, _ = score(clean, contender.run(noisy, params, masks))
        tried.append({"params": dict(params), "psnr": round(float(np.mean(psnrs)), 3)})
    best = max(tried, key=lambda t: t["psnr"])
    return {"params": best["params"], "seconds": round(time.perf_counter() - started, 2), "grid": tried}


def evaluate(contender: Contender, params: dict, clean, noisy, first: int = 0,
             warm_up: bool = True, masks=None) -> dict:
    """Scores one contender at fixed parameters, timed after a warm-up.

    A model's warm-up is a whole untimed pass: each new batch or photo shape traces its graph
    again, which the first image alone would not cover. A classic contender's is one image
    (imports, thread pools). ``warm_up=False`` skips it, for callers that keep the scores and
    not the time. ``first`` (fewer than the images) also records the PSNR of the first
    ``first`` images, where a slow contender was scored (:func:`_margin_table`)."""
    if warm_up:
        whole = contender.kind == "model"
        contender.run(noisy if whole else noisy[:1], params, masks if whole or masks is None else masks[:1])
    started = time.perf_counter()
    estimates = contender.run(noisy, params, masks)
    seconds = time.perf_counter() - started
    psnrs, ssims = score(clean, estimates)
    megapixels = sum(im.shape[0] * im.shape[1] for im in clean) / 1e6
    result = {
        "psnr": round(float(np.mean(psnrs)), 3),
        "ssim": round(float(np.mean(ssims)), 4),
        "images": len(clean),
        "seconds": round(seconds, 3),
        "seconds_per_image": seconds / len(clean),
        "seconds_per_megapixel": seconds / megapixels,
    }
    if 0 < first < len(clean):
        result["psnr_first"] = {"images": first, "psnr": round(float(np.mean(psnrs[:first])), 3),
                                "ssim": round(float(np.mean(ssims[:first])), 4)}
    return result


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class BenchmarkData:
    """Clean test and tuning images, and how they were chosen (for the report)."""

    test: np.ndarray | list[np.ndarray]
    tune: np.ndarray | list[np.ndarray]
    description: dict
    photos: bool


def dataset_data(config: BenchmarkConfig) -> BenchmarkData:
    """A named dataset's test split; tuning on the slice of the train split pretraining holds out."""
    name = config.dataset or "fashion_mnist"
    ds = load_named(name, config.data_dir)
    test = to_model(_take(ds.x_test, config.limit))
    _, _, x_val, _ = split_validation(ds.x_train, ds.y_train, 0.1, config.seed)
    tune_set = to_model(x_val[: config.tune_images])
    split = f"{name} test" + (f", first {len(test)} images" if config.limit else f", all {len(test)} images")
    return BenchmarkData(test, tune_set, {
        "test": split,
        "tune": f"{len(tune_set)} images of the {name} train split held out by "
                f"split_validation(fraction=0.1, seed={config.seed})",
    }, photos=False)


def photo_data(config: BenchmarkConfig) -> BenchmarkData:
    """Clean colour photos from ``--images``; tuning on a centre crop of ``--tune-image``."""
    paths = list_images(config.images)
    tune_path = Path(config.tune_image) if config.tune_image else (paths[0] if paths else None)
    if tune_path is None:
        raise BenchmarkError(f"no photos in {config.images}")
    test_paths = [p for p in paths if p.resolve() != tune_path.resolve()]
    if config.limit:
        test_paths = test_paths[: config.limit]
    if not test_paths:
        raise BenchmarkError(f"{config.images} holds no photo besides the tuning photo {tune_path}; "
                             "add test photos or pass --tune-image from elsewhere")
    test = [to_model(read_image(p, mode="RGB")) for p in test_paths]
    whole = to_model(read_image(tune_path, mode="RGB"))
    side = min(config.tune_crop, *whole.shape[:2])
    top, left = (whole.shape[0] - side) // 2, (whole.shape[1] - side) // 2
    crop = whole[top : top + side, left : left + side]
    return BenchmarkData(test, [crop], {
        "test": f"{len(test)} photo{'' if len(test) == 1 else 's'}: " + ", ".join(
            f"{p.name} ({im.shape[1]}x{im.shape[0]})" for p, im in zip(test_paths, test, strict=True)),
        "tune": f"centre {side}x{side} crop of {tune_path.name} (not a test photo)",
    }, photos=True)


def check_bm3d_tuning(data: BenchmarkData) -> None:
    """Refuses a tuning crop that BM3D would run in another mode than most test photos
    (:func:`models.classic.bm3d_white_noise_mode`): its sigma would be tuned for the wrong one."""
    from models.classic import bm3d_white_noise_mode

    tune = bm3d_white_noise_mode(*data.tune[0].shape[:2])
    test = [bm3d_white_noise_mode(*im.shape[:2]) for im in data.test]
    if 2 * sum(mode != tune for mode in test) > len(test):
        side = data.tune[0].shape[0]
        raise BenchmarkError(
            f"the {side}x{side} tuning crop would tune BM3D in its "
            f"{'white-noise' if tune else 'default'} mode, but most test photos run in its "
            f"{'default' if tune else 'white-noise'} mode (the switch is at 256x256 pixels); "
            f"pass a --tune-crop {'below' if tune else 'of at least'} 256 or leave out --contender bm3d")


def write_skimage_photos(folder) -> list[Path]:
    """Writes scikit-image's bundled sample photos: ``test/`` to score, ``tune/`` to tune on.

    None of them is among the photos the ``photo`` model trains on (mate-backgrounds). Files
    that exist already are left alone.
    """
    from PIL import Image
    from skimage import data as samples

    images = {f"test/{name}.png": getattr(samples, name)() for name in SKIMAGE_TEST_PHOTOS}
    images[f"tune/{SKIMAGE_TUNE_PHOTO}.png"] = samples.stereo_motorcycle()[1]
    written = []
    for rel, pixels in images.items():
        path = Path(folder) / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(pixels).save(tmp, format="PNG")
            os.replace(tmp, path)
        written.append(path)
    return written


# ---------------------------------------------------------------- the run


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_benchmark(config: BenchmarkConfig, command: str = "") -> dict:
    """Tunes and scores every contender on every setting.

    Returns:
        The report (what :func:`markdown_report` formats and ``--json`` writes).
    """
    data = photo_data(config) if config.images else dataset_data(config)
    # A setting given twice is scored once (the report is keyed by setting).
    settings = tuple(dict.fromkeys(parse_setting(s) for s in config.setting)) or default_settings(data.photos)
    contenders, skipped = build_contenders(config)
    contenders = [c for c in contenders if any(s.name in c.corruptions for s in settings)]
    if data.photos and any(c.name == "bm3d" for c in contenders):
        check_bm3d_tuning(data)
    for reason in skipped.values():
        _log(reason)
    load_start = os.getloadavg()
    results = {}
    # Photos take seeds seed, seed + 1, ... one each: the tuning photos' follow the test photos',
    # so that no tuning photo shares its noise with a test photo.
    tune_seed = config.seed + (len(data.test) if data.photos else 1)
    # Where slow contenders score only the first images, the others' PSNR there is kept too.
    slow_first = (config.slow_limit if any(c.slow for c in contenders) else 0)
    for setting in settings:
        noisy_test = corrupt_images(data.test, setting, config.seed)
        noisy_tune = corrupt_images(data.tune, setting, tune_seed)
        masks_test = masks_of(data.test, setting, config.seed)
        masks_tune = masks_of(data.tune, setting, tune_seed)
        results[setting.label] = {}
        for c in contenders:
            if setting.name not in c.corruptions:
                continue
            n, n_tune = (config.slow_limit, config.slow_tune_images) if c.slow else (0, 0)
            tuned = tune(c, _take(data.tune, n_tune), _take(noisy_tune, n_tune), _take(masks_tune, n_tune))
            result = evaluate(c, tuned["params"], _take(data.test, n), _take(noisy_test, n),
                              first=0 if c.slow else slow_first, masks=_take(masks_test, n))
            results[setting.label][c.name] = {**result, "params": tuned["params"], "tune": {
                "images": len(_take(data.tune, n_tune)), "seconds": tuned["seconds"], "grid": tuned["grid"]}}
            _log(f"{setting.label:>18} {c.name:>14}: PSNR {result['psnr']:6.2f} dB  SSIM "
                 f"{result['ssim']:.3f}  {result['seconds_per_image']:.4f} s/image  "
                 f"params {tuned['params'] or '-'} (tuned in {tuned['seconds']:.1f} s)")
    return {
        "command": command,
        "config": dataclasses.asdict(config),
        "protocol": {
            **data.description,
            "photos": data.photos,
            "test_images": len(data.test),
            "tune_images": len(data.tune),
            "slow_limit": config.slow_limit,
            "slow_tune_images": config.slow_tune_images,
            "seed": config.seed,
            "tune_seed": tune_seed,
            "score": "PSNR per image (data range 1.0) and SSIM (scikit-image), averaged over images",
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_description(),
                    "load_average_start": [round(v, 2) for v in load_start],
                    "load_average_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": [s.label for s in settings],
        "contenders": {c.name: {"label": c.label, "kind": c.kind, "slow": c.slow, **c.about}
                       for c in contenders},
        "skipped": skipped,
        "results": results,
        "speed": speed_summary(results, [c.name for c in contenders]),
    }


def speed_summary(results: dict, names: Sequence[str]) -> dict:
    """Seconds per image and per megapixel of each contender named, averaged over the settings."""
    speed = {}
    for name in names:
        runs = [r[name] for r in results.values() if name in r]
        if not runs:
            continue
        per_image = float(np.mean([r["seconds_per_image"] for r in runs]))
        speed[name] = {
            "seconds_per_image": per_image,
            "images_per_second": 1.0 / per_image if per_image > 0 else None,
            "seconds_per_megapixel": float(np.mean([r["seconds_per_megapixel"] for r in runs])),
        }
    return speed


# ---------------------------------------------------------------- tables


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns (readable as plain text too)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def _seconds(value: float) -> str:
    return f"{value:.2g}" if value < 0.1 else f"{value:.2f}"


def _format_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def _labels(report: dict) -> dict[str, str]:
    """Row names; a dagger marks contenders scored on fewer images than the rest."""
    partial = bool(_slow_note(report["protocol"]))
    return {n: c["label"] + (" †" if partial and c["slow"] else "") for n, c in report["contenders"].items()}


def _slow_note(proto: dict) -> str:
    """What slow contenders were spared, or ``""`` when they ran on everything."""
    notes = []
    if 0 < proto["slow_limit"] < proto["test_images"]:
        notes.append(f"scored on the first {proto['slow_limit']} test images")
    if proto["slow_tune_images"] < proto["tune_images"]:
        notes.append(f"tuned on the first {proto['slow_tune_images']} tuning images")
    return " and ".join(notes)


def _speed_cells(report: dict, name: str) -> list[str]:
    if report["contenders"][name]["kind"] == "input":
        return ["-", "-"]
    sp = report["speed"][name]
    if report["protocol"]["photos"]:
        return [_seconds(sp["seconds_per_megapixel"]), _seconds(sp["seconds_per_image"])]
    rate = sp["images_per_second"]
    return [_seconds(sp["seconds_per_image"]), f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}"]


def _metric_table(report: dict, metric: str, digits: int, speed: bool) -> str:
    """Contenders by settings, the best per setting in bold, speed columns optional."""
    settings, results = report["settings"], report["results"]
    header = ["contender", *settings]
    if speed:
        header += ["s/MP", "s/photo"] if report["protocol"]["photos"] else ["s/image", "images/s"]
    rows = []
    for name, label in _labels(report).items():
        cells = [label]
        for s in settings:
            r = results[s].get(name)
            text = "" if r is None else f"{r[metric]:.{digits}f}"
            cells.append(f"**{text}**" if name == _winner(results[s], metric) else text)
        rows.append(cells + (_speed_cells(report, name) if speed else []))
    return markdown_table(header, rows)


def _params_table(report: dict) -> str:
    settings, results = report["settings"], report["results"]
    rows = [[label, *(_format_params(results[s][n]["params"]) if n in results[s] else "" for s in settings)]
            for n, label in _labels(report).items()
            if any(results[s].get(n, {}).get("tune", {}).get("grid") for s in settings)]
    return markdown_table(["contender", *settings], rows)


def _psnr_on(result: dict, images: int, metric: str = "psnr") -> float | None:
    """A result's PSNR (or SSIM) over the first ``images`` test images, where the report holds it."""
    if result["images"] == images:
        return result[metric]
    first = result.get("psnr_first") or {}
    return first.get(metric) if first.get("images") == images else None


def _winner(results: dict, metric: str = "psnr") -> str | None:
    """The best of ``results`` (name -> result, at one setting) by ``metric``: among those scored
    on every test image, by their means; one scored on fewer (a slow contender) wins only by
    beating every one of them on its own images, from what they recorded there
    (``psnr_first``). In a report without those figures (written before they were kept), it
    has to beat the best one's mean."""
    if not results:
        return None
    full = max(r["images"] for r in results.values())
    everywhere = [n for n, r in results.items() if r["images"] == full]
    best = max(everywhere, key=lambda n: results[n][metric])
    for name, r in results.items():
        if r["images"] < full:
            there = [_psnr_on(results[n], r["images"], metric) for n in everywhere]
            rival = results[best][metric] if None in there or results[best]["images"] < full else max(there)
            if r[metric] > rival:
                best = name
    return best


def _margin_table(report: dict) -> str:
    """Each model's PSNR minus the best classic contender's, per setting ("" without models).

    The best is :func:`_winner`'s: a slow contender, scored on the first test images only,
    is the best where it beats the best of the others on those images, and a margin against it
    is taken on them too (marked †); against a fast best it is on the whole split. A report
    without the others' figures there (written before they were kept) compares whole-split
    means, and marks a margin against a slow best † as well."""
    kinds = {n: c["kind"] for n, c in report["contenders"].items()}
    models = [n for n, k in kinds.items() if k == "model"]
    if not models or "classic" not in kinds.values():
        return ""
    labels, rows = _labels(report), {}
    for s in report["settings"]:
        results = report["results"][s]
        classic = {n: r for n, r in results.items() if kinds[n] == "classic"}
        if not classic:  # e.g. only inpainting, which is for masking alone
            rows.setdefault("best", ["best classic (dB)"]).append("-")
            for m in models:
                rows.setdefault(m, [f"{labels[m]} minus best classic"]).append("-")
            continue
        best = _winner(classic)
        images = classic[best]["images"]
        partial = any(results[m]["images"] > images for m in models if m in results)
        rows.setdefault("best", ["best classic (dB)"]).append(
            f"{classic[best]['psnr']:.2f} ({best}){'†' if partial else ''}")
        for m in models:
            if m not in results:  # a merged report's setting scored without this model
                rows.setdefault(m, [f"{labels[m]} minus best classic"]).append("-")
                continue
            mine = _psnr_on(results[m], images)
            margin = (results[m]["psnr"] if mine is None else mine) - classic[best]["psnr"]
            mark = "†" if results[m]["images"] > images else ""
            rows.setdefault(m, [f"{labels[m]} minus best classic"]).append(f"{margin:+.2f}{mark}")
    return markdown_table(["", *report["settings"]], list(rows.values()))


def markdown_report(report: dict) -> str:
    """The report's tables in Markdown: PSNR (with speed), SSIM, and the parameters that won."""
    proto = report["protocol"]
    unit = ("seconds per megapixel and per photo" if proto["photos"]
            else "seconds per image and images per second")
    machine = report["machine"]
    cpu = machine.get("cpu") or f"{machine['cpus']} CPUs"  # (older reports name no CPU)
    parts = [
        f"Test: {proto['test']}. Tuning: {proto['tune']}. {_seed_note(proto)} {proto['score']}.", "",
        f"PSNR (dB), higher is better; the best per setting in bold. Speed: {unit}, mean over the "
        f"settings, on this machine ({cpu}, load average {machine['load_average_start'][0]} at the "
        "start).", "",
        _metric_table(report, "psnr", 2, speed=True), "",
    ]
    margins = _margin_table(report)
    if margins:
        parts += ["Our models against the best classic contender of each setting (PSNR, dB):", "",
                  margins, ""]
        if "†" in margins:
            parts += [f"† the best is a slow contender: compared on the first {proto['slow_limit']} "
                      "test images, those it scored.", ""]
    parts += [
        "SSIM:", "", _metric_table(report, "ssim", 3, speed=False), "",
        "Parameters that won on the tuning images:", "", _params_table(report),
    ]
    if any(label.endswith("†") for label in _labels(report).values()):
        parts += ["", f"† slow: {_slow_note(proto)} only."]
    if report["skipped"]:
        parts += ["", *(f"- {reason}" for reason in report["skipped"].values())]
    return "\n".join(parts) + "\n"


def _seed_note(proto: dict) -> str:
    seed, tune = proto["seed"], proto["tune_seed"]
    if proto["photos"]:
        return f"Noise seeds {seed}, {seed + 1}, ... (a test photo each) and {tune}, ... (tuning)."
    return f"Noise seeds {seed} (test) and {tune} (tuning)."


def write_atomic(path: str, text: str) -> None:
    """Writes a text file whole or not at all (temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode())


def check_output(path: str, flag: str) -> None:
    """Raises :class:`BenchmarkError` unless ``path`` can be written as a file: not a folder,
    nor below a file, nor in a folder this process cannot write (checked before a long run)."""
    target = Path(path)
    if target.is_dir():
        raise BenchmarkError(f"{flag} {path} is a folder; give a file path")
    ancestor = existing_ancestor(target)
    if not ancestor.is_dir():
        raise BenchmarkError(f"{flag} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BenchmarkError(f"{flag} {path}: cannot write in {ancestor}")


REPORT_FIELDS = ("command", "protocol", "machine", "settings", "contenders", "skipped", "results",
                 "speed")
"""The top-level fields of a ``--json`` report (what ``--from-json`` needs)."""


# What two reports must share for their settings to stand in one table.
SAME_PROTOCOL = ("test", "tune", "photos", "test_images", "tune_images", "slow_limit", "slow_tune_images",
                 "seed", "tune_seed", "score")


def merge_reports(reports: list[dict], paths: Sequence[str]) -> dict:
    """One report of several: each later one's settings join the first's, or replace a setting
    it holds (its contenders' results there, all of them), so that a setting rescored alone
    updates a full report. Speeds are averaged again over the settings; the command is each
    report's, joined by "; then" (with the settings they gave).

    Raises:
        BenchmarkError: two reports scored different images or noise (``SAME_PROTOCOL``).
    """
    merged = json.loads(json.dumps(reports[0]))
    for path, report in zip(paths[1:], reports[1:], strict=True):
        differ = [k for k in SAME_PROTOCOL if merged["protocol"].get(k) != report["protocol"].get(k)]
        if differ:
            raise BenchmarkError(f"--from-json {path} scored other images or noise than {paths[0]} "
                                 f"(its {', '.join(differ)} differ): its settings cannot join that table")
        for setting in report["settings"]:
            if setting not in merged["settings"]:
                merged["settings"].append(setting)
            merged["results"][setting] = report["results"][setting]
        merged["contenders"].update(report["contenders"])
        merged["skipped"].update(report["skipped"])
        merged["command"] += f"; then {report['command']}"
    if len(reports) > 1:
        order = {s.label: i for i, s in enumerate(default_settings(merged["protocol"]["photos"]))}
        merged["settings"].sort(key=lambda label: order.get(label, len(order)))
        merged["speed"] = speed_summary(merged["results"], list(merged["contenders"]))
    return merged


def read_report(path: str) -> dict:
    """Reads a report written by ``--json``.

    Raises:
        BenchmarkError: the file cannot be read, is not JSON, or is not shaped like a report.
    """
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise BenchmarkError(f"--from-json {path}: no such file") from err
    except OSError as err:
        raise BenchmarkError(f"--from-json {path}: cannot read it ({err.strerror or err})") from err
    except ValueError as err:  # invalid JSON or not text
        raise BenchmarkError(f"--from-json {path} is not JSON ({err})") from err
    what = f"--from-json {path} is not a benchmark report (one written by --json)"
    if not isinstance(report, dict):
        kind = "an array" if isinstance(report, list) else f"a JSON {type(report).__name__}"
        raise BenchmarkError(f"{what}: it holds {kind}, not an object")
    missing = [key for key in REPORT_FIELDS if key not in report]
    if missing:
        raise BenchmarkError(f"{what}: it has no {', '.join(missing)}")
    return report  # fields of the wrong shape: main's "not a complete benchmark report"


def main(argv=None) -> int:
    """CLI entry point: runs the benchmark, prints the tables, writes JSON and Markdown."""
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parse_config(BenchmarkConfig, "Benchmark denoisers against classic ones.", argv)
    try:
        if config.write_skimage_photos:
            for path in write_skimage_photos(config.write_skimage_photos):
                print(path)
            root = Path(config.write_skimage_photos)
            print(f"then: python -m training.benchmark --model RUN_DIR --images {root / 'test'} "
                  f"--tune-image {root / 'tune' / (SKIMAGE_TUNE_PHOTO + '.png')}")
            return 0
        # Checked first: a bad output path is found before the run, not after it.
        if config.json and not config.from_json:
            check_output(config.json, "--json")
        if config.markdown:
            check_output(config.markdown, "--markdown")
            for flag, report_path in (("--json", config.json),
                                      *(("--from-json", path) for path in config.from_json)):
                if report_path and Path(report_path).resolve() == Path(config.markdown).resolve():
                    raise ValueError(f"--markdown {config.markdown} is the {flag} report itself; "
                                     "writing the tables there would replace its numbers")
        if config.from_json:
            report = merge_reports([read_report(path) for path in config.from_json], config.from_json)
        else:
            report = run_benchmark(config, "python -m training.benchmark " + shlex.join(argv))
    except (ValueError, FileNotFoundError) as err:  # our input errors: bad files, names, settings
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.json and not config.from_json:  # first: the numbers are safe even if formatting fails
        write_atomic(config.json, json.dumps(report, indent=2) + "\n")
    try:
        text = markdown_report(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        if not config.from_json:
            raise
        print(f"error: --from-json {' '.join(config.from_json)} is not a complete benchmark report "
              f"({type(err).__name__}: {err})", file=sys.stderr)
        return 2
    print(text)
    if config.markdown:
        write_atomic(config.markdown, f"Command: `{report['command']}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
