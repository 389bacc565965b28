"""Gradio web UI: upload an image, denoise it with a DAE, compare, download a lossless PNG.

A thin layer over :mod:`app.engine`: this module reads uploads, optionally corrupts them with the
corruption registry (so clean images can be tried), scores the result when a clean reference is
known, and writes the full-resolution result as PNG at the input's bit depth. Denoising itself
is :func:`app.engine.denoise`.

Run ``python -m app.ui [--host H] [--port P] [--model NAME_OR_PATH ...] [--share]
[--auth user:pass]`` (``make app``). The named API endpoints (``/denoise``, ``/compare``) are
Gradio's own and work from ``gradio_client``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import gradio as gr
import numpy as np

from app import engine
from data.corruption import CORRUPTIONS, corrupt, masked_pixels
from data.images import (
    ImageFile,
    ImageReadError,
    ImageTooLargeError,
    from_model,
    load_image,
    match_channels,
    save_image,
    to_model,
)
from data.metrics import psnr, ssim
from models.classic import CLASSIC_DENOISERS
from models.registry import (
    AUTO_PRECISION_HELP,
    PRECISION_CHOICES,
    ModelNotFoundError,
    bundled_models,
    check_precision,
    model_card,
    resolve_model_path,
)

log = logging.getLogger("app.ui")

NO_CORRUPTION = "none"
ENSEMBLE_INFO = ("average the model's output over flipped (and rotated) copies: a cleaner result "
                 "for 2 or 8 times the time")
ENSEMBLE_LOCKED = ("off: this model was not trained on flipped and rotated images, so averaging over "
                   "them would lower its quality")
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"
OUTPUT_MAX_AGE_S = 3600  # results are copied into Gradio's cache on return; ours can go after an hour

DEFAULT_MAX_PIXELS = 25_000_000  # a 24 MP camera photo (6000 x 4000) fits; a few seconds per MP on 2 cores
COMPARE_SLOW_MAX_PIXELS = 1_000_000
"""Compare runs the slow classic denoisers (BM3D: 19-25 s per megapixel here) only on images
up to this size; on larger ones their row says why they were skipped, so one Compare cannot hold
the server's engine slot for minutes."""
DEFAULT_MAX_FILE_SIZE = "160mb"
"""Gradio's spelling (``mb`` is 2**20 bytes): 167.8 MB, so that a noisy 24 MP photo fits as a
JPEG (~10 MB), an 8-bit PNG (~56 MB) or a 16-bit RGB PNG or TIFF (~144 MB); with 16-bit alpha
(~192 MB) it does not."""


@functools.cache
def private_dir() -> Path:
    """This server process's own temporary folder, made on first use and removed at exit.

    ``tempfile.mkdtemp`` gives it a fresh name and mode 0700: no other user can write into it
    or plant a link in it, and two servers (of one user or of several) never share it. It is
    under the system temp dir, from which Gradio serves the files a handler returns.
    """
    folder = Path(tempfile.mkdtemp(prefix="dae-ui-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def results_dir() -> Path:
    """Where :func:`write_result` puts the result PNGs: a folder of :func:`private_dir`."""
    folder = private_dir() / "results"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def file_size(text: str) -> int:
    """``--max-file-size``: Gradio's ``<number><unit>`` (``b``, ``kb``, ``mb``, ``gb``, ``tb``)
    read by Gradio's own parser, as bytes; anything else is a one-line usage error."""
    from gradio.utils import _parse_file_size

    try:
        size = _parse_file_size(str(text).strip())
    except ValueError:
        size = None
    if not size or size < 1:
        raise argparse.ArgumentTypeError(
            f"--max-file-size must be a positive whole number and a unit (b, kb, mb, gb or tb), "
            f"e.g. 160mb; got {text!r}")
    return size


def upload_path(value) -> str | None:
    """The file path of an image input: a path, or the raw ``FileData`` payload Gradio sends.

    The events run with ``preprocess=False``: ``gr.Image`` would otherwise open every upload
    with Pillow before our function runs, and a non-image or a decompression bomb would show
    up as a bare "Error" instead of our reader's message. A payload (a dict, as a client sends
    it) may then name any path: Gradio checks and moves into its upload folder only the ones
    marked as its ``FileData``, so a payload whose path lies outside that folder is refused,
    before anything is read. A path or a ``FileData`` object comes from the Python caller.
    """
    from gradio.utils import get_upload_folder, is_in_or_equal

    if value is None or value == "":
        return None
    if isinstance(value, dict):
        path = value.get("path")
        if path is not None and not is_in_or_equal(path, get_upload_folder()):
            raise gr.Error("only uploaded files are read: upload the image or reference (a path on "
                           "the server is not accepted)")
        return path
    return str(getattr(value, "path", value))


@dataclasses.dataclass
class Prepared:
    """An upload ready for denoising.

    Attributes:
        image: what the model gets (the upload, corrupted when corruption was asked for).
        clean: the clean reference as float ``(H, W, C)`` in ``[0, 1]`` with the image's
            channels, or ``None`` when none is known.
        name: the upload's file stem, used to name the result.
        masked: where masking noise applied here zeroed pixels (bool ``(H, W)``), which
            Compare tells inpainting; ``None`` for an upload's own zeros or other corruptions.
    """

    image: ImageFile
    clean: np.ndarray | None
    name: str
    masked: np.ndarray | None = None


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the blanks around them) turned into single spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def user_errors(fn):
    """Turns the errors a user can cause into one-line ``gr.Error`` messages; logs the rest.

    Gradio shows a ``gr.Error``'s message in the page; any other exception would show only
    "Error". The reader's and the registry's errors are about the upload or the model asked
    for, and are shown as they are. A ``ValueError`` is most often a refused argument (a
    strength or level out of range) but may be a fault of ours, so it is shown too and also
    logged as a warning with its traceback. Anything else is logged with its traceback and
    reported to the user without it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ImageReadError, ModelNotFoundError) as err:
            raise gr.Error(one_line(err)) from err
        except ValueError as err:
            log.warning("%s refused: %s", fn.__name__, one_line(err), exc_info=True)
            raise gr.Error(one_line(err)) from err
        except Exception as err:  # noqa: BLE001 - the server must keep serving
            log.exception("%s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(err).__name__}); the server log has the details") from err

    return wrapper


def read_upload(path: str | None, what: str, max_pixels: int) -> ImageFile:
    """Reads an uploaded file with the project's reader, refusing images over ``max_pixels``.

    The size is checked from the header, before decoding; we never downscale, so an image too
    large to denoise here is refused with its size rather than shrunk.

    Raises:
        gr.Error: no file, or a file that cannot be used, with the reader's reason.
    """
    if path is None:
        raise gr.Error(f"no {what}: upload an image first")
    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageTooLargeError as err:
        raise gr.Error(f"{what} {_without_path(err, path)}. This server denoises at full resolution and "
                       "never downscales: crop the image, or start it with a larger --max-pixels.") from err
    except ImageReadError as err:
        raise gr.Error(f"{what} {_without_path(err, path)}") from err


def _without_path(err: Exception, path: str) -> str:
    """The reader's message with the server-side temporary path cut to the file's name."""
    return str(err).replace(str(path), repr(Path(path).name))


def number(value, what: str, integer: bool = False) -> float | int:
    """An API argument as a number, or ``ValueError`` saying what came instead. ``integer``
    asks for a whole number in ``[0, 2**63)``, a seed's range."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not integer:
        return x
    whole = int(value) if isinstance(value, int | np.integer) else int(x) if x.is_integer() else -1
    if not 0 <= whole < 2**63:
        raise ValueError(f"{what} must be a whole number from 0 to 2**63 - 1, got {value!r}")
    return whole


def prepare(image_path, reference_path, corruption, level, seed, max_pixels=DEFAULT_MAX_PIXELS) -> Prepared:
    """Reads the upload, applies the requested corruption, and finds the clean reference.

    Args:
        image_path: the uploaded image.
        reference_path: an optional clean version of the same image, for scores.
        corruption: a key of ``CORRUPTIONS`` or ``"none"``.
        level: the corruption's strength.
        seed: the corruption's seed (same seed, same noise).
        max_pixels: the largest image accepted.

    Returns:
        The :class:`Prepared` upload. The clean reference is the uploaded one where there is
        one, with or without a corruption (an upload that is itself noisy is scored against
        the truth); else, with a corruption, the upload itself. Corrupted pixels keep the
        upload's dtype (8 or 16 bit).
    """
    image_path, reference_path = upload_path(image_path), upload_path(reference_path)
    image = read_upload(image_path, "image", max_pixels)
    name = Path(image_path).stem
    clean = None
    if reference_path:
        reference = read_upload(reference_path, "reference", max_pixels)
        if reference.pixels.shape[:2] != image.pixels.shape[:2]:
            rh, rw = reference.pixels.shape[:2]
            ih, iw = image.pixels.shape[:2]
            raise gr.Error(
                f"the reference is {rw} x {rh} but the image is {iw} x {ih}; they must be the same size")
        clean = match_channels(to_model(reference.pixels), to_model(image.pixels).shape[-1])
    if corruption in (None, NO_CORRUPTION):
        return Prepared(image, clean, name)
    if corruption not in CORRUPTIONS:
        raise gr.Error(f"unknown corruption {corruption!r}; expected one of {[NO_CORRUPTION, *CORRUPTIONS]}")
    upload = to_model(image.pixels)
    level, seed = number(level, "level"), number(seed or 0, "seed", integer=True)
    noisy = corrupt(upload, corruption, level, seed=seed)
    pixels = from_model(noisy, image.pixels.dtype).reshape(image.pixels.shape)
    masked = masked_pixels(upload.shape, level, seed) if corruption == "masking" else None
    clean = upload if clean is None else clean
    return Prepared(dataclasses.replace(image, pixels=pixels), clean, name, masked)


def nothing_to_download(path) -> None:
    """A click on Download PNG: says so where there is no result yet to download."""
    if not path:
        gr.Warning("nothing to download yet: denoise an image first")


GREY_IN_COLOUR = ("a grey image in a colour model: its noise is the same in R, G and B, which the model "
                  "was not trained on, so it removes little of it; a grey model does better")


def grey_in_colour(prepared: Prepared, denoiser: engine.Denoiser) -> bool:
    """Whether a grey upload goes to a colour model (measured on a grey photo with Gaussian
    noise 0.1: +0.7 dB with ``photo``, +6.9 dB with the grey ``fashion-mnist``)."""
    return prepared.image.pixels.shape[-1] == 1 and denoiser.channels == 3


def quality(clean: np.ndarray | None, noisy: np.ndarray, denoised: np.ndarray) -> dict:
    """PSNR (dB) and SSIM of the noisy input and of the result against the clean reference.

    Returns an empty dict when there is no reference. A perfect score (PSNR ``inf``) is ``None``.
    """
    if clean is None:
        return {}
    noisy, denoised = to_model(noisy), to_model(denoised)

    def num(x):
        x = float(x)
        return round(x, 4) if np.isfinite(x) else None

    return {"noisy_psnr": num(psnr(clean, noisy)), "denoised_psnr": num(psnr(clean, denoised)),
            "noisy_ssim": num(ssim(clean, noisy)), "denoised_ssim": num(ssim(clean, denoised))}


def for_display(pixels: np.ndarray) -> np.ndarray:
    """8-bit ``(H, W)`` or ``(H, W, 3)`` copy of any image, full resolution, for the browser."""
    out = from_model(to_model(pixels), np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def residual_display(residual: np.ndarray) -> np.ndarray:
    """The residual (input minus output, in ``[-1, 1]``) as an 8-bit image, mid-grey at zero."""
    return for_display(np.clip(0.5 + np.asarray(residual, np.float32), 0.0, 1.0))


def write_result(image: ImageFile, name: str) -> Path:
    """Saves the result as a lossless PNG at the image's bit depth in a fresh folder of this
    process's :func:`results_dir`, first removing its folders over an hour old."""
    results = results_dir()
    _prune(results, OUTPUT_MAX_AGE_S)
    folder = results / uuid.uuid4().hex
    folder.mkdir()
    path = folder / f"{name}-denoised.png"
    # Palette and bilevel files would be re-quantised on writing; keep every denoised value instead.
    mode = {"1": "L", "P": "RGB", "PA": "RGBA"}.get(image.mode, image.mode)
    save_image(dataclasses.replace(image, format="PNG", mode=mode), path, format="PNG")
    return path


def _prune(folder: Path, max_age_s: float) -> None:
    """Removes the entries of ``folder`` older than ``max_age_s`` (Gradio keeps its own copy of
    each result). A link is removed itself, never followed."""
    if not folder.is_dir():
        return
    cutoff = time.time() - max_age_s
    for child in folder.iterdir():
        try:
            if child.lstat().st_mtime >= cutoff:
                continue
            if child.is_symlink() or not child.is_dir():
                child.unlink()
            else:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:  # another request pruned it first
            pass


class DenoiserApp:
    """The UI's handlers, bound to the models it may use and its size limit.

    Args:
        models: dropdown label -> model name or path (what :mod:`app.engine` accepts).
        max_pixels: the largest image (in pixels) accepted.
        precision: how the models compute (:data:`models.registry.PRECISION_CHOICES`); float32
            here, as in the engine, and ``auto`` from the command line (``--precision``).
    """

    def __init__(self, models: dict[str, str], max_pixels: int = DEFAULT_MAX_PIXELS,
                 precision: str = "float32"):
        if not models:
            raise ValueError("no models to serve: none bundled in models/bundled and none given with --model")
        check_precision(precision)
        self.models = dict(models)
        self.max_pixels = int(max_pixels)
        self.precision = precision

    def model(self, choice: str) -> str:
        """The model name or path for a dropdown value (a label or a value of ``models``)."""
        if choice in self.models.values():
            return choice
        if choice in self.models:
            return self.models[choice]
        raise gr.Error(f"unknown model {choice!r}; expected one of {list(self.models)}")

    def denoiser(self, choice: str, ensemble: int = 1) -> engine.Denoiser:
        """The loaded model for a dropdown value, computing in the server's precision and
        averaging over ``ensemble`` flips and rotations (:data:`app.engine.ENSEMBLES`)."""
        return engine.as_denoiser(self.model(choice), precision=self.precision, ensemble=ensemble)

    def ensemble_allowed(self, choice: str) -> bool:
        """Whether a model may use a self-ensemble: trained on flipped and rotated images (for
        the others it would lower the quality); from its card, nothing is loaded."""
        return engine.max_ensemble(model_card(self.model(choice))) > 1

    def ensemble_state(self, choice: str) -> dict:
        """The self-ensemble control's settings for a model: off, and offered only if allowed."""
        allowed = self.ensemble_allowed(choice)
        return {"value": 1, "interactive": allowed, "info": ENSEMBLE_INFO if allowed else ENSEMBLE_LOCKED}

    def ensemble_control(self, choice: str) -> gr.Radio:
        """The self-ensemble control for a newly picked model (:meth:`ensemble_state`)."""
        return gr.Radio(**self.ensemble_state(choice))

    def model_info(self, choice: str) -> str:
        """A short Markdown description of a model, from its card (or why it cannot be used)."""
        try:
            card = model_card(self.model(choice))
        except (ModelNotFoundError, ValueError) as err:
            return f"**{choice}**: cannot be used: {err}"
        channels = card.get("channels") or card.get("config", {}).get("channels") or "?"
        colour = {1: "grey", 3: "colour"}.get(channels, "channels unknown")
        lines = [f"**{card.get('name', choice)}** ({colour})"]
        if card.get("description"):
            lines.append(card["description"])
        if card.get("training", {}).get("corruptions"):
            lines.append("Trained on: " + ", ".join(card["training"]["corruptions"]))
        return "  \n".join(lines)

    def denoise(self, image_path, model_choice, strength, corruption, level, seed, reference_path,
                ensemble=1, progress=gr.Progress()):  # noqa: B008 - Gradio's way to ask for a progress bar
        """Denoises an upload; the ``/denoise`` endpoint (``ensemble``: 1, 2 or 8 flips and
        rotations averaged, :data:`app.engine.ENSEMBLES`).

        Returns:
            ``((input, result), residual, scores, png_path)``: 8-bit full-resolution previews for
            the slider, the residual preview, a dict with PSNR/SSIM (when a reference is known),
            size, mode and seconds, and the path of the full-resolution lossless PNG.
        """
        prepared = prepare(image_path, reference_path, corruption, level, seed, self.max_pixels)
        progress(0.0, desc="Denoising")
        denoiser = self.denoiser(model_choice, ensemble)
        result = engine.denoise(prepared.image.pixels, denoiser,
                                strength=number(strength, "strength"),
                                progress=lambda f: progress(float(f), desc="Denoising tiles"))
        out = dataclasses.replace(prepared.image, pixels=result.output)
        path = write_result(out, prepared.name)
        height, width = result.output.shape[:2]
        report = {**quality(prepared.clean, prepared.image.pixels, result.output),
                  "width": width, "height": height, "mode": prepared.image.mode,
                  "bit_depth": 8 * result.output.dtype.itemsize, "seconds": round(result.seconds, 3),
                  "precision": denoiser.precision, "ensemble": denoiser.ensemble}
        notes = []
        if grey_in_colour(prepared, denoiser):
            notes.append(GREY_IN_COLOUR)
            gr.Warning(GREY_IN_COLOUR)
        if (frames := prepared.image.info.get("frames", 1)) > 1:
            notes.append(f"first of {frames} frames: only it is denoised and in the PNG")
            every = (" The batch script (python -m app.batch) denoises every page of a TIFF into a TIFF."
                     if prepared.image.format == "TIFF" else "")
            gr.Warning(f"This file has {frames} frames (an animation or pages): only the first is "
                       f"denoised and in the PNG.{every}")
        if notes:
            report["note"] = "; ".join(notes)
        preview = (for_display(prepared.image.pixels), for_display(result.output))
        return preview, residual_display(result.residual), report, str(path)

    def compare(self, image_path, model_choice, corruption, level, seed, reference_path,
                progress=gr.Progress()):  # noqa: B008 - Gradio's way to ask for a progress bar
        """Runs the same input through our model and the classic denoisers; ``/compare``.

        Classic denoisers run at their registry defaults; those meant for other corruptions
        (inpainting is for masking) are left out when the corruption is known, and those whose
        optional package is missing, or that cannot take this image (BM3D on images no larger
        than its blocks), are listed with the reason.

        Returns:
            ``(gallery, table)``: ``[(preview, caption), ...]`` with the noisy input first, and
            rows ``[method, PSNR, SSIM, seconds]`` (scores empty without a reference).
        """
        prepared = prepare(image_path, reference_path, corruption, level, seed, self.max_pixels)
        pixels = prepared.image.pixels
        model = self.denoiser(model_choice)
        if grey_in_colour(prepared, model):
            gr.Warning(GREY_IN_COLOUR)
        ours = f"DAE ({model_choice})"
        methods = {ours: lambda x: engine.denoise(x, model).output}
        skipped = []
        for denoiser in CLASSIC_DENOISERS.values():
            if corruption in CORRUPTIONS and corruption not in denoiser.corruptions:
                continue
            if denoiser.unavailable():
                label = f"{denoiser.label} (skipped: {denoiser.requires} not installed)"
                skipped.append([label, None, None, None])
                continue
            if denoiser.slow and pixels.shape[0] * pixels.shape[1] > COMPARE_SLOW_MAX_PIXELS:
                label = (f"{denoiser.label} (skipped: it takes seconds per megapixel; Compare runs it on "
                         f"images up to {COMPARE_SLOW_MAX_PIXELS / 1e6:g} MP)")
                skipped.append([label, None, None, None])
                continue
            methods[denoiser.label] = lambda x, d=denoiser: d(to_model(x), mask=prepared.masked)
        gallery = [(for_display(pixels), "noisy input")]
        rows = [self._row("noisy input", prepared.clean, pixels, pixels, 0.0)]
        for i, (label, method) in enumerate(methods.items()):
            progress(i / len(methods), desc=f"Running {label}")
            start = time.perf_counter()
            try:
                output = from_model(to_model(method(pixels)), pixels.dtype).reshape(pixels.shape)
            except ValueError as err:  # a classic denoiser that cannot take this image (BM3D on 8 x 8)
                if label == ours:
                    raise
                skipped.append([f"{label} (skipped: {err})", None, None, None])
                continue
            seconds = time.perf_counter() - start
            gallery.append((for_display(output), f"{label}: {seconds:.2f} s"))
            rows.append(self._row(label, prepared.clean, pixels, output, seconds))
        return gallery, rows + skipped

    @staticmethod
    def _row(label, clean, noisy, output, seconds):
        scores = quality(clean, noisy, output)
        return [label, scores.get("denoised_psnr"), scores.get("denoised_ssim"), round(seconds, 3)]


def sample_examples(models: dict[str, str]) -> list[list]:
    """Example rows ``[image, reference, corruption, level, model]`` from ``data/samples``.

    Each sample comes with the model made for it when ``models`` (dropdown label -> value)
    holds it: the clothes with ``fashion-mnist``, the photo with ``photo``; else the first.
    """
    rows = [["clothes_gaussian.png", "clothes_clean.png", NO_CORRUPTION, 0.0, "fashion-mnist"],
            ["clothes_salt_pepper.png", "clothes_clean.png", NO_CORRUPTION, 0.0, "fashion-mnist"],
            ["clothes_clean.png", None, "masking", 0.3, "fashion-mnist"],
            ["photo_gaussian.png", "photo_clean.png", NO_CORRUPTION, 0.0, "photo"]]
    values = list(models.values())
    return [[str(SAMPLES_DIR / r[0]), str(SAMPLES_DIR / r[1]) if r[1] else None, r[2], r[3],
             r[4] if r[4] in values else values[0]]
            for r in rows if (SAMPLES_DIR / r[0]).is_file()]


def _corruption_controls():
    with gr.Row():
        corruption = gr.Dropdown([NO_CORRUPTION, *CORRUPTIONS], value=NO_CORRUPTION, label="Add corruption",
                                 info="try a model on a clean image (which then is its own reference)")
        level = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="Corruption level",
                          info="noise std (gaussian) or fraction of pixels hit")
        seed = gr.Number(0, precision=0, label="Seed", minimum=0)
    return corruption, level, seed


def _inputs(app: DenoiserApp, tab: str):
    """The image upload, model choice (with its card) and clean-reference upload of a tab."""
    image = gr.Image(type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"],
                     label="Noisy image (PNG, JPEG, TIFF, ...; 8 or 16 bit)", elem_id=f"{tab}-image")
    first = next(iter(app.models))
    model = gr.Dropdown(list(app.models.items()), value=app.models[first], label="Model",
                        elem_id=f"{tab}-model")
    info = gr.Markdown(app.model_info(first))
    model.change(app.model_info, model, info, api_visibility="private", queue=False)  # never "busy"
    return image, model


def _reference(tab: str):
    return gr.Image(type="filepath", image_mode=None, format="png", sources=["upload"], height=160,
                    label="Clean reference (optional, for PSNR/SSIM)", elem_id=f"{tab}-reference")


def build_app(app: DenoiserApp, concurrency: int = 1, queue_size: int = 32) -> gr.Blocks:
    """Builds the Blocks UI (tabs Denoise / Compare / Score field) with a request queue.

    Args:
        app: the handlers and their models.
        concurrency: denoising requests (Denoise and Compare together) run at once; more wait
            in the queue.
        queue_size: requests that may wait; beyond it new ones are refused with a message.
    """
    from app.score_tab import build_score_tab

    # One engine slot shared by both tabs; raw payloads so that our reader reports bad files.
    engine_event = {"concurrency_limit": concurrency, "concurrency_id": "engine", "preprocess": False}
    with gr.Blocks(title="DAE denoiser", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown("# Denoising autoencoder\nUpload a noisy image (or corrupt a clean one), denoise it at "
                    "full resolution, and download the result as a lossless PNG with the input's bit depth.")
        with gr.Tab("Denoise"):
            with gr.Row():
                with gr.Column():
                    image, model = _inputs(app, "denoise")
                    strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength",
                                         info="0 keeps the input, 1 is the model's full output")
                    ensemble = gr.Radio([(engine.ENSEMBLE_NAMES[n], n) for n in engine.ENSEMBLES],
                                        label="Self-ensemble", elem_id="denoise-ensemble",
                                        **app.ensemble_state(next(iter(app.models))))
                    model.change(user_errors(app.ensemble_control), model, ensemble, api_visibility="private",
                                 queue=False)
                    corruption, level, seed = _corruption_controls()
                    reference = _reference("denoise")
                    run = gr.Button("Denoise", variant="primary", elem_id="denoise-run")
                with gr.Column():
                    slider = gr.ImageSlider(format="png", label="Before / after (full resolution)",
                                            type="numpy", interactive=False, elem_id="denoise-slider")
                    scores = gr.JSON(label="Scores", elem_id="denoise-scores")
                    # Given its file by the run itself: a property update (enabling it) would leave
                    # each result in Gradio's cache untracked, never deleted.
                    download = gr.DownloadButton("Download PNG", variant="primary",
                                                 elem_id="denoise-download")
                    residual = gr.Image(format="png", label="Residual (input − output; mid-grey = 0)",
                                        interactive=False, elem_id="denoise-residual")
            if sample_examples(app.models):
                gr.Examples(sample_examples(app.models), [image, reference, corruption, level, model],
                            label="Samples", elem_id="denoise-samples")
            denoising = run.click(user_errors(app.denoise), [image, model, strength, corruption, level, seed,
                                                             reference, ensemble],
                                  [slider, residual, scores, download], api_name="denoise", **engine_event)
            # A new input clears the old result, so a refused run cannot leave it on show (or to
            # download) beside the new image, and cancels this page's denoising of the old one:
            # a waiting run leaves the queue; a running one is dropped (Gradio frees its slot at
            # once, though its thread computes on to the end) and its result never shows.
            image.change(lambda: (None, None, None, None), None, [slider, residual, scores, download],
                         api_visibility="private", queue=False, cancels=[denoising])
            # The button keeps its look without a result (above): a click then says why nothing comes.
            # (Queued: a warning reaches the page only through the queue's messages.)
            download.click(nothing_to_download, download, None, api_visibility="private",
                           show_progress="hidden", concurrency_limit=None)
        with gr.Tab("Compare"):
            gr.Markdown("The same input through our model and the classic denoisers, with scores and times.")
            with gr.Row():
                with gr.Column():
                    c_image, c_model = _inputs(app, "compare")
                    c_corruption, c_level, c_seed = _corruption_controls()
                    c_reference = _reference("compare")
                    c_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                with gr.Column():
                    table = gr.Dataframe(headers=["method", "PSNR (dB)", "SSIM", "seconds"],
                                         label="Scores against the clean reference", interactive=False,
                                         elem_id="compare-table")
                    gallery = gr.Gallery(format="png", label="Results", columns=3, object_fit="contain",
                                         elem_id="compare-gallery")
            if sample_examples(app.models):
                gr.Examples(sample_examples(app.models),
                            [c_image, c_reference, c_corruption, c_level, c_model],
                            label="Samples", elem_id="compare-samples")
            c_inputs = [c_image, c_model, c_corruption, c_level, c_seed, c_reference]
            comparing = c_run.click(user_errors(app.compare), c_inputs, [gallery, table], api_name="compare",
                                    **engine_event)
            c_image.change(lambda: (None, None), None, [gallery, table], api_visibility="private",
                           queue=False, cancels=[comparing])
        with gr.Tab("Score field"):
            build_score_tab(concurrency)
    return demo.queue(max_size=queue_size)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")``; ``None`` stays ``None``."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError(f"--auth must look like user:password, got {text!r}")
    return user, password


def model_choices(extra: list[str] | None = None) -> dict[str, str]:
    """Dropdown label -> model for the bundled models plus ``extra`` names or paths.

    Raises:
        ModelNotFoundError: an ``extra`` entry leads to no model.
    """
    choices = {name: name for name in bundled_models()}
    for item in extra or []:
        if item in choices.values():
            continue
        path = resolve_model_path(item)
        choices[str(item)] = str(path)
    return choices


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.ui", description="Serve the denoising web UI.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--model", action="append", default=[], metavar="NAME_OR_PATH",
                        help="extra model: bundled name, run folder or .keras file (repeatable)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--auth", type=parse_auth, default=None, metavar="USER:PASS", help="require a login")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="requests denoised at once (the model already uses every core)")
    parser.add_argument("--queue-size", type=int, default=32, help="requests that may wait before refusal")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image, in pixels")
    parser.add_argument("--max-file-size", type=file_size, default=DEFAULT_MAX_FILE_SIZE,
                        help=f"largest upload: a number and b, kb, mb (2**20 bytes), gb or tb "
                             f"(default {DEFAULT_MAX_FILE_SIZE})")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=AUTO_PRECISION_HELP)
    args = parser.parse_args(argv)
    for name in ("concurrency", "queue_size", "max_pixels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_subprocess(args=(), log_path: str | Path | None = None, timeout_s: float = 240.0):
    """Runs ``python -m app.ui`` on a free local port; yields its URL once it answers.

    The e2e tests and the load benchmark use this to talk to the real server. The process is
    stopped (terminate, then kill) when the block exits.

    Args:
        args: extra command-line arguments (``--port``/``--host`` are set here).
        log_path: file for the server's output (default: discarded).
        timeout_s: how long start-up (TensorFlow import, model load) may take.

    Raises:
        RuntimeError: the server exited or did not answer in time; the message has its log tail.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "app.ui", "--host", "127.0.0.1", "--port", str(port), *map(str, args)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(proc, url, timeout_s, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()


def _wait_until_up(proc, url: str, timeout_s: float, log_path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the UI server exited with code {proc.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):  # up, behind --auth
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the UI server did not answer at {url} within {timeout_s:.0f} s:\n{_tail(log_path)}")


def _tail(log_path, lines: int = 30) -> str:
    if not log_path or not Path(log_path).is_file():
        return "(no log)"
    return "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-lines:])


def main(argv=None) -> None:
    """Starts the server (blocks until interrupted)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        models = model_choices(args.model)
    except ModelNotFoundError as err:
        raise SystemExit(f"error: {err}") from err
    app = DenoiserApp(models, args.max_pixels, args.precision)
    first = next(iter(models))
    log.info("loading %s (precision %s)", models[first], args.precision)
    # load and trace it before the first user waits
    denoiser = app.denoiser(first)
    engine.denoise(np.zeros((32, 32, 1), np.uint8), denoiser)
    log.info("%s computes in %s", models[first], denoiser.precision)
    # Gradio's cache (uploads, and its copies of what the handlers return) defaults to one
    # folder per host, /tmp/gradio, which the first user to start a server owns; unless one is
    # set, each server keeps it in its own private folder, as it keeps its results.
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = str(private_dir() / "gradio")
    demo = build_app(app, args.concurrency, args.queue_size)
    from app.score_tab import CACHE_DIR  # imported by build_app already

    # A plain SIGTERM (systemd, the tests' terminate) would skip the exit handlers that remove
    # the private folder; as an exit, it runs them.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Gradio serves files only from the cwd and the temp dir unless told: the Score field tab's
    # pictures live in the repository's runs/score-ui/, whatever folder the server starts in
    # (the results folder is in the temp dir already; named here so that it stays allowed).
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=args.auth,
                max_file_size=args.max_file_size, footer_links=["api", "settings"],
                allowed_paths=[str(CACHE_DIR), str(results_dir())])


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    main()
