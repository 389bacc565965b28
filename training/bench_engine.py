"""Engine throughput and memory: files/s and MP/s on folders of small images, seconds and peak
memory on one very large photo. Prints a Markdown table.

The small-image folders go through the batch script's own pipeline (:func:`app.batch.run`:
reader threads, grouped model calls, atomic writes) on files written to a temporary folder:

- ``small grey``: Fashion-MNIST test images (28 x 28 PNG) with Gaussian noise;
- ``small colour``: crops of the mate-backgrounds photos (JPEG) with Gaussian noise;
- ``large photo``: one mate-backgrounds photo upscaled to ``--megapixels`` (JPEG): load, denoise
  in tiles, save, each step timed (the same calls the batch script makes for one file).

Each scenario runs once untimed first, which traces the model for the scenario's own batch and
tile shapes, then ``--repeat`` times timed (the fastest is reported). Peak memory is the
process's resident set (psutil, sampled every 10 ms) above what it held before the scenario
(model loaded and warmed up), over those runs, and the peak of numpy/Python allocations
(tracemalloc), which excludes TensorFlow's own buffers, from one more run: tracemalloc slows
every allocation (by half on a folder of small PNGs), so no timed run has it on.

Example::

    nice -n 10 python -m training.bench_engine --model fashion-mnist --megapixels 24
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import field
from pathlib import Path

import numpy as np

from app.batch import BatchConfig, run
from app.engine import COLOUR_POLICIES, DEFAULT_TILE, ENSEMBLE_HELP, ENSEMBLES, as_denoiser, denoise, tiling
from data.corruption import LEVEL_BOUNDS, corrupt
from data.datasets import DatasetNotFoundError
from data.images import from_model, load_image, save_image, to_model
from models.registry import PRECISION_HELP, PRECISIONS, ModelNotFoundError, cpu_description
from training.cli import parse_config

PHOTOS = Path("/usr/share/backgrounds/mate/nature")


@dataclasses.dataclass(frozen=True)
class BenchEngineConfig:
    """What to measure."""

    model: str = field(default="fashion-mnist", metadata={"help": "bundled name, run folder or .keras file"})
    small_grey: int = field(default=1000, metadata={"help": "Fashion-MNIST images in the small grey folder"})
    small_colour: int = field(default=200, metadata={"help": "photo crops in the small colour folder"})
    colour_side: int = field(default=96, metadata={"help": "side of the colour crops in pixels"})
    megapixels: float = field(default=24.0, metadata={"help": "size of the large photo (0 skips it)"})
    photo: str = field(default=str(PHOTOS / "Garden.jpg"), metadata={"help": "photo to upscale"})
    repeat: int = field(default=1, metadata={
        "help": "time each scenario this many times and report the fastest (after one untimed "
                "run that traces the model for the scenario's shapes)"})
    tile: int = field(default=DEFAULT_TILE, metadata={"help": "engine tiles hold at most TILE x TILE pixels"})
    precision: str = field(default="float32", metadata={"choices": PRECISIONS, "help": PRECISION_HELP})
    ensemble: int = field(default=1, metadata={"choices": tuple(ENSEMBLES), "help": ENSEMBLE_HELP})
    colour: str = field(default="per_channel", metadata={
        "choices": COLOUR_POLICIES, "help": "how a grey model treats colour images"})
    noise: float = field(default=0.1, metadata={"help": "Gaussian noise std added to the small images"})

    def __post_init__(self):
        # What needs no file or model; main checks the photos, the dataset and --tile (which
        # depends on the model's stride) before any scenario runs.
        for name in ("small_grey", "small_colour", "megapixels"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 skips that scenario), "
                                 f"got {getattr(self, name)}")
        if self.colour_side < 1:
            raise ValueError(f"--colour-side must be at least 1 pixel, got {self.colour_side}")
        if self.repeat < 1:
            raise ValueError(f"--repeat must be at least 1, got {self.repeat}")
        low, high = LEVEL_BOUNDS["gaussian"]
        if not low <= self.noise <= high:
            raise ValueError(f"--noise must be a standard deviation in [{low:g}, {high:g}] (pixels "
                             f"span [0, 1]), got {self.noise}")


class PeakMemory:
    """Peak resident memory inside a ``with`` block, sampled by a thread (which costs the
    measured work next to nothing, unlike tracemalloc: see :func:`measure`)."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return False

    @property
    def above_baseline_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


def measure(step: Callable[[], object], repeat: int) -> tuple[list[tuple[float, object]], PeakMemory, int]:
    """Runs ``step`` once untimed, then ``repeat`` times timed, then once under tracemalloc.

    The untimed run traces the model's predict function for the scenario's own shapes (the
    batch pipeline stacks as many files per call as its readers have ready, so only the
    scenario itself has them all), which would otherwise land in the first timed run.

    Returns:
        ``(runs, memory, allocations)``: ``(seconds, what step returned)`` of each timed run;
        the resident memory over the untimed and timed runs; the peak of numpy/Python
        allocations in bytes, from the last run, which is not timed: tracemalloc slows every
        allocation (by half on a folder of small PNGs).
    """
    runs = []
    with PeakMemory() as memory:
        step()
        for _ in range(repeat):
            start = time.perf_counter()
            result = step()
            runs.append((time.perf_counter() - start, result))
    tracemalloc.start()
    try:
        step()
        allocations = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return runs, memory, allocations


def write_small_grey(folder: Path, images: np.ndarray, noise: float) -> None:
    """Fashion-MNIST test ``images`` (uint8), made noisy, as 28 x 28 PNG."""
    from PIL import Image

    clean = to_model(images)
    noisy = from_model(corrupt(clean, "gaussian", noise, seed=0), np.uint8)
    folder.mkdir(parents=True)
    for i, image in enumerate(noisy):
        Image.fromarray(image[..., 0]).save(folder / f"{i:05d}.png")


def largest_colour_crop() -> int:
    """The largest ``--colour-side`` :func:`write_small_colour` can cut from every photo: one
    less than the short side of the smallest photo at half size. ``ValueError`` if none."""
    from PIL import Image

    paths = sorted(PHOTOS.glob("*.jpg"))
    if not paths:
        raise ValueError(f"no photos in {PHOTOS}: install the mate-backgrounds package "
                         "(--small-colour 0 skips that scenario)")
    sizes = []
    for path in paths:
        with Image.open(path) as im:  # reads the header only
            sizes.append(min(-(-side // 2) for side in im.size))  # Image.reduce rounds up
    return min(sizes) - 1


def write_small_colour(folder: Path, count: int, side: int, noise: float) -> None:
    """``count`` noisy ``side`` x ``side`` crops of the mate-backgrounds photos as JPEG
    (``side`` at most :func:`largest_colour_crop`)."""
    from PIL import Image

    photos = [np.asarray(Image.open(p).convert("RGB").reduce(2)) for p in sorted(PHOTOS.glob("*.jpg"))]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        crop = to_model(photo[top:top + side, left:left + side])
        noisy = from_model(corrupt(crop, "gaussian", noise, seed=i), np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}.jpg", quality=95)


def write_large_photo(path: Path, photo: str, megapixels: float) -> tuple[int, int]:
    """The photo upscaled (Lanczos) to about ``megapixels``, as a JPEG; returns its size."""
    from PIL import Image

    with Image.open(photo) as im:
        scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(path, quality=95)
    return size


def measure_batch(name: str, in_dir: Path, out_dir: Path, config: BenchEngineConfig) -> dict:
    """Runs the batch pipeline on a folder (:func:`measure`) and returns one table row."""
    batch = BatchConfig(in_dir, out_dir, config.model, tile=config.tile, colour=config.colour,
                        precision=config.precision, ensemble=config.ensemble, overwrite=True,
                        progress=False)  # overwrite: every run redoes every file

    def step():
        with open(os.devnull, "w") as out:
            summary = run(batch, out=out)
        failed = [r for r in summary.rows if r["status"] != "done"]
        if failed:
            raise SystemExit(f"{name}: {len(failed)} file(s) not denoised, e.g. {failed[0]}")
        return summary.count("done"), summary.megapixels

    runs, memory, allocations = measure(step, config.repeat)
    seconds, (done, megapixels) = min(runs, key=lambda r: r[0])
    return {"scenario": name, "files": done, "megapixels": megapixels, "seconds": seconds,
            "memory": memory, "allocations": allocations}


def measure_large(path: Path, out: Path, config: BenchEngineConfig) -> dict:
    """Load, denoise and save one large file (what the batch script does for it), each step
    timed (:func:`measure`: ``config.repeat`` times, the fastest reported)."""
    den = as_denoiser(config.model, precision=config.precision, ensemble=config.ensemble)

    def step():  # returns no pixels: the runs kept for the report must not hold on to memory
        start = time.perf_counter()
        image = load_image(path)
        loaded = time.perf_counter()
        result = denoise(image.pixels, den, tile=config.tile, colour=config.colour)
        denoised = time.perf_counter()
        save_image(dataclasses.replace(image, pixels=result.output), out)
        steps = (loaded - start, denoised - loaded, time.perf_counter() - denoised)
        return image.pixels.shape[:2], result.tiles, steps

    runs, memory, allocations = measure(step, config.repeat)
    seconds, ((height, width), tiles, (load, denoised, save)) = min(runs, key=lambda r: r[0])
    every = ", ".join(f"{r[0]:.2f}" for r in runs)
    return {"scenario": f"large photo {width}x{height} JPEG", "files": 1, "megapixels": width * height / 1e6,
            "seconds": seconds, "memory": memory, "allocations": allocations, "tiles": tiles,
            "steps": f"load {load:.2f} s, denoise {denoised:.2f} s, save {save:.2f} s"
                     + (f" (fastest of {len(runs)}: {every} s)" if len(runs) > 1 else "")}


def warm_up(config: BenchEngineConfig) -> None:
    """Loads the model and traces its predict function, so that no scenario's memory includes
    building it (each scenario's first, untimed run traces it for that scenario's shapes)."""
    den = as_denoiser(config.model, precision=config.precision, ensemble=config.ensemble)
    side = min(config.tile, 256)
    denoise(np.zeros((side, side, den.channels), np.uint8), den)
    denoise(np.zeros((28, 28, den.channels), np.uint8), den)


def markdown(rows: list[dict]) -> str:
    """The Markdown table."""
    lines = ["| scenario | files | MP | seconds | files/s | MP/s | peak RSS above baseline (MB) "
             "| peak numpy/Python allocations (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    return "\n".join(lines + [table_row(r) for r in rows])


def table_row(r: dict) -> str:
    """One scenario as a Markdown table row."""
    m = r["memory"]
    return (f"| {r['scenario']} | {r['files']} | {r['megapixels']:.2f} | {r['seconds']:.3g} | "
            f"{r['files'] / r['seconds']:.3g} | {r['megapixels'] / r['seconds']:.3g} | "
            f"{m.above_baseline_mb:.0f} | {r['allocations'] / 2**20:.0f} |")


def _finished(rows: list[dict], row: dict) -> None:
    rows.append(row)
    print(f"finished {table_row(row)}", file=sys.stderr, flush=True)


def run_benchmark(config: BenchEngineConfig, grey: np.ndarray | None = None) -> list[dict]:
    """Writes the test files to a temporary folder, measures every scenario, returns the rows.

    ``grey``: the Fashion-MNIST test images of the small-grey scenario (read by :func:`main`
    before the model loads)."""
    warm_up(config)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
        tmp = Path(tmp)
        if config.small_grey:
            write_small_grey(tmp / "grey", grey, config.noise)
            _finished(rows, measure_batch(f"small grey 28x28 PNG (x{len(grey)})", tmp / "grey",
                                          tmp / "grey_out", config))
        if config.small_colour:
            write_small_colour(tmp / "colour", config.small_colour, config.colour_side, config.noise)
            side = config.colour_side
            _finished(rows, measure_batch(f"small colour {side}x{side} JPEG (x{config.small_colour})",
                                          tmp / "colour", tmp / "colour_out", config))
        if config.megapixels > 0:
            (tmp / "large").mkdir()
            write_large_photo(tmp / "large" / "photo.jpg", config.photo, config.megapixels)
            _finished(rows, measure_large(tmp / "large" / "photo.jpg", tmp / "large_out.jpg", config))
    return rows


def main(argv=None) -> int:
    """CLI entry point: prints the machine, the settings and the table."""
    config = parse_config(BenchEngineConfig, __doc__.split("\n\n")[0], argv)
    try:  # what the scenarios read, checked before the model loads and warms up
        if config.megapixels > 0:
            if not Path(config.photo).is_file():
                raise ValueError(f"--photo {config.photo}: no such file (the large-photo scenario "
                                 "upscales it; --megapixels 0 skips that scenario)")
            from PIL import Image

            Image.open(config.photo).close()  # not an image: PIL's OSError names the file
        if config.small_colour:
            largest = largest_colour_crop()
            if config.colour_side > largest:
                raise ValueError(f"--colour-side {config.colour_side}: the crops must fit the smallest "
                                 f"photo in {PHOTOS} at half size, so at most {largest} px")
        grey = None
        if config.small_grey:
            from data.datasets import load_named

            grey = load_named("fashion_mnist", download=False).x_test
            if config.small_grey > len(grey):
                raise ValueError(f"--small-grey {config.small_grey}: the Fashion-MNIST test split has "
                                 f"{len(grey)} images")
            grey = grey[: config.small_grey]
        den = as_denoiser(config.model, precision=config.precision, ensemble=config.ensemble)
        try:
            tiling(den.stride, config.tile, None)
        except ValueError as err:
            raise ValueError(f"--tile {config.tile}: {err}") from err
    except (DatasetNotFoundError, ModelNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"machine: {platform.machine()}, {cpu_description()}, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"model {config.model} ({den.channels} channel(s), stride {den.stride}, {config.precision}); "
          f"tile {config.tile}, colour policy {config.colour}, ensemble {config.ensemble}\n")
    rows = run_benchmark(config, grey)
    print(markdown(rows))
    for r in rows:
        if "steps" in r:
            print(f"\n{r['scenario']}: {r['steps']}; {r['tiles']} tiles")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other jobs share these cores)")
    print(f"\ncommand: python -m training.bench_engine {' '.join(sys.argv[1:] if argv is None else argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
