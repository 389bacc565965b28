"""Denoise whole folders: ``python -m app.batch IN_DIR OUT_DIR --model NAME_OR_PATH``.

OUT_DIR mirrors IN_DIR's folders; each output keeps its input's format, mode and bit depth
(``--format`` converts). Safe by default:

- nothing is ever written inside IN_DIR (an OUT_DIR inside IN_DIR, or around it, is refused) and
  no input is opened for writing;
- each output is written atomically (a hidden ``.NAME.XXXX.partial`` file, then a rename), so a
  killed run leaves no half-written image; a later run removes the ``.partial`` files it finds
  once they are an hour old (younger ones may be another run's, writing into the same OUT_DIR);
- existing outputs are skipped unless ``--overwrite``: rerunning the same command resumes. OUT_DIR's
  ``.dae-batch.json`` records the settings that made its outputs (:func:`batch_settings`): a rerun
  with other settings is refused (``--overwrite`` redoes every file with them), and an output
  older than its input is redone;
- one bad file never stops the run: it is reported with its reason, and the exit status is 1
  when anything failed (2 when the command itself is wrong); so is a folder that cannot be
  listed, whose files would otherwise be left out unseen;
- a file the output format cannot hold (alpha into BMP, or into JPEG with ``--format jpeg``) is
  refused when read, before it is denoised.

Small images of the same size go through the model together; reader threads load (and
writer threads save) files while the model works. A progress bar shows files/s and MP/s; a
summary follows, and ``--manifest FILE.csv|FILE.json`` records one row per file (status,
reason, size, seconds, the model and settings, and PSNR/SSIM of input and output against
``--reference DIR``, whose files are matched by relative path, any image suffix; a reference
that cannot be read leaves its file denoised and unscored, the row saying why; a rerun keeps the
figures of the outputs it skips, and a file under that name that is no manifest is never
replaced). ``--ensemble 2|8`` averages a
photo model's output over flipped (and rotated) copies (:mod:`app.engine`). ``--bit-depth 12``
(9 to 16) says a 16-bit file's samples are 12-bit data (0..4095, as scientific cameras store
them): they are denoised at full brightness and written back as 0..4095, a file holding larger
values fails with its reason, and 16-bit references are read on the same scale; 8-bit files are
denoised as usual.

Bad settings (a ``--glob`` pattern, a ``--tile`` the model cannot use, a manifest or OUT_DIR that
cannot be written) are refused with a one-line message before anything is denoised. File names
that are not valid UTF-8 appear in the manifest and on stdout with their undecodable bytes
backslash-escaped (``bad\\xffname.png``): both stay UTF-8 text (:func:`printable`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import dataclasses
import fnmatch
import io
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path, PurePosixPath

import numpy as np

from app.engine import (
    COLOUR_POLICIES,
    DEFAULT_BATCH_PIXELS,
    DEFAULT_TILE,
    ENSEMBLE_HELP,
    ENSEMBLES,
    as_denoiser,
    check_ensemble,
    denoise_many,
    max_ensemble,
    tiling,
)
from data.datasets import IMAGE_SUFFIXES
from data.images import (
    BIT_DEPTHS,
    DEFAULT_MAX_PIXELS,
    FORMATS,
    PARTIAL_SUFFIX,
    SIXTEEN_BIT_FORMATS,
    BitDepthError,
    ImageFile,
    ImageReadError,
    ImageWriteError,
    atomic_write_bytes,
    atomic_write_json,
    check_writable,
    existing_ancestor,
    format_for,
    from_full_scale,
    load_image,
    match_channels,
    save_image,
    to_full_scale,
    to_model,
)
from models.registry import AUTO_PRECISION_HELP, PRECISION_CHOICES, check_precision
from training.cli import parse_config

BUFFER_SAMPLES = 100_000_000
"""Samples (pixels x channels) of decoded images the batch holds between reading and writing,
besides the one being denoised: a folder of 24-megapixel photos keeps 2-4 in memory, not 128."""

PARTIAL_MAX_AGE_S = 3600
"""Age after which a ``.partial`` file in OUT_DIR is a killed run's and is removed. A write's
temporary lives for the seconds its bytes take to reach the disk (the image is encoded first),
so one an hour old belongs to no run still going, on this machine or on another writing into
the same folder (where process ids would tell nothing)."""

MANIFEST_FIELDS = (
    "input", "output", "status", "reason", "detail", "width", "height", "pages", "mode", "bit_depth",
    "bytes_in", "bytes_out", "seconds", "model", "psnr_input", "psnr_output", "ssim_input", "ssim_output",
    "model_sha256", "strength", "colour", "ensemble", "precision", "tile", "reference",
)
"""Manifest columns: ``status`` is ``done``, ``skipped`` or ``failed``; ``reason`` a short code
(``output_exists``, ``input_changed``, ``truncated``, ``not_an_image``, ...), ``detail`` the full
message; ``width``/``height`` the first page's; ``pages`` how many pages were denoised and
written (a multi-page TIFF's all, into a TIFF; 1 otherwise); ``bit_depth`` the bits per sample
the file was denoised as (its own 8 or 16, or ``--bit-depth`` for a 16-bit file; ``8+16`` for a
stack of 8- and 16-bit pages); the settings that made the output follow (``precision`` as
computed, ``auto`` resolved), and the ``--reference`` folder PSNR/SSIM were measured against."""

SETTINGS_FILE = ".dae-batch.json"
"""In OUT_DIR: the settings its outputs were made with (:func:`batch_settings`), so that a rerun
with other settings cannot leave a folder of outputs made two ways without a word."""

COMPARED_SETTINGS = ("model_sha256", "strength", "colour", "ensemble", "precision", "format", "bit_depth")
"""The settings that change an output; the model counts by its file's sha256, whichever name or
path led to it. The model name and path, ``--tile`` (tiled output equals untiled within 1e-3, so
a resume may change it, to fit memory) and the app version are recorded, not compared."""


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Settings of one batch run (the command line is generated from this)."""

    in_dir: Path = dataclasses.field(metadata={
        "positional": True, "help": "folder of images to denoise, read recursively and never written"})
    out_dir: Path = dataclasses.field(metadata={
        "positional": True, "help": "folder for the results (mirrors IN_DIR; must not be inside it)"})
    model: str = dataclasses.field(metadata={
        "help": "bundled model name, run folder or .keras file"})
    reference: Path | None = dataclasses.field(default=None, metadata={
        "help": "folder of clean originals, matched by relative path: adds PSNR/SSIM to the manifest"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "redo files whose output exists, whatever settings made them (default: skip those "
                "not older than their input, so a rerun resumes; refuse settings other than OUT_DIR's)"})
    manifest: Path | None = dataclasses.field(default=None, metadata={
        "help": "write one row per file to this .csv or .json file"})
    format: str | None = dataclasses.field(default=None, metadata={
        "choices": tuple(f.lower() for f in FORMATS) + ("jpg", "tif"),
        "help": "write every output in this format (default: each input's own)"})
    bit_depth: int | None = dataclasses.field(default=None, metadata={
        "help": f"bits a 16-bit input's samples use ({BIT_DEPTHS.start}-{BIT_DEPTHS.stop - 1}: a "
                "12-bit camera's 0..4095): denoised at full brightness, written back on that "
                "scale; a file holding larger values fails. 8-bit inputs are denoised as usual "
                "(default: each file's own depth)"})
    glob: str | None = dataclasses.field(default=None, metadata={
        "help": "only inputs matching this pattern relative to IN_DIR, e.g. '**/*.png' "
                "(default: every file with an image suffix)"})
    dry_run: bool = dataclasses.field(default=False, metadata={
        "help": "list what would be done and stop"})
    strength: float = dataclasses.field(default=1.0, metadata={
        "help": "blend between input (0) and denoised output (1)"})
    colour: str = dataclasses.field(default="per_channel", metadata={
        "choices": COLOUR_POLICIES,
        "help": "how a grey model treats colour images: each channel, or the luminance only"})
    tile: int = dataclasses.field(default=DEFAULT_TILE, metadata={
        "help": "tiles of large images hold at most TILE x TILE pixels (memory stays bounded)"})
    precision: str = dataclasses.field(default="auto", metadata={
        "choices": PRECISION_CHOICES, "help": AUTO_PRECISION_HELP})
    ensemble: int = dataclasses.field(default=1, metadata={
        "choices": tuple(ENSEMBLES), "help": ENSEMBLE_HELP})
    max_pixels: int = dataclasses.field(default=DEFAULT_MAX_PIXELS, metadata={
        "help": "refuse images with more pixels than this (decompression-bomb guard; a multi-page "
                "TIFF's pages together, where a TIFF output keeps them all)"})
    batch_size: int = dataclasses.field(default=64, metadata={
        "help": "small images per model call (same-size images are stacked)"})
    threads: int = dataclasses.field(default=2, metadata={
        "help": "reader threads and writer threads each, overlapping file I/O with the model"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"--strength must be in [0, 1], got {self.strength}")
        check_precision(self.precision)
        if self.bit_depth is not None and self.bit_depth not in BIT_DEPTHS:
            raise ValueError(f"--bit-depth must be {BIT_DEPTHS.start} to {BIT_DEPTHS.stop - 1} (the bits "
                             f"a 16-bit file's samples use), got {self.bit_depth}")
        if self.glob is not None and (Path(self.glob).is_absolute() or ".." in Path(self.glob).parts):
            raise ValueError(f"--glob must be a pattern inside IN_DIR (no '..', not absolute), "
                             f"got {self.glob!r}")
        if self.glob is not None:
            glob_parts(self.glob)
        if self.manifest is not None and self.manifest.suffix.lower() not in (".csv", ".json"):
            raise ValueError(f"--manifest must end in .csv or .json, got {self.manifest}")
        for name in ("tile", "max_pixels", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


class BatchError(Exception):
    """The command cannot run at all (bad folders, unknown model); the message says why."""


@dataclasses.dataclass
class Item:
    """One input file and its planned output."""

    source: Path
    rel: str
    target: Path
    row: dict
    pixels: int = 0
    """Pixels denoised, every page's (the summary's megapixels)."""


@dataclasses.dataclass
class Summary:
    """Counts and rows of a finished (or interrupted) run."""

    rows: list[dict]
    seconds: float = 0.0
    megapixels: float = 0.0
    removed_partials: int = 0
    interrupted: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    """Files denoised with a caveat the user should see (only the first of several frames)."""
    manifest_error: str = ""
    """Why the manifest could not be written at the end (the run itself went on)."""
    precision: str = ""
    """How the model computed (:attr:`app.engine.Denoiser.precision`); empty in a dry run."""

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.count("failed") or self.manifest_error else 0)


# ---------------------------------------------------------------- planning


def check_folders(config: BatchConfig) -> tuple[Path, Path]:
    """Resolved ``(in_dir, out_dir)``; refuses any layout that could write among the inputs."""
    try:
        return _check_folders(config)
    except OSError as err:  # Path.exists() and is_dir() raise where a folder may not be entered
        raise BatchError(f"{err.filename} cannot be looked at: {err.strerror or err}") from err


def _check_folders(config: BatchConfig) -> tuple[Path, Path]:
    in_dir, out_dir = config.in_dir.resolve(), config.out_dir.resolve()
    if not in_dir.is_dir():
        raise BatchError(f"IN_DIR {config.in_dir} does not exist or is not a folder")
    if out_dir == in_dir or out_dir.is_relative_to(in_dir):
        raise BatchError(f"OUT_DIR {config.out_dir} is inside IN_DIR {config.in_dir}: outputs are never "
                         "written among the inputs; choose a folder outside it")
    if in_dir.is_relative_to(out_dir):
        raise BatchError(f"IN_DIR {config.in_dir} is inside OUT_DIR {config.out_dir}: mirrored outputs could "
                         "land on inputs; choose an OUT_DIR that does not contain IN_DIR")
    if config.manifest is not None and config.manifest.resolve().is_relative_to(in_dir):
        raise BatchError(f"--manifest {config.manifest} is inside IN_DIR: nothing is written there")
    if config.manifest is not None and (manifest := config.manifest.resolve()).is_relative_to(
            out_dir) and manifest.name.startswith("."):
        raise BatchError(f"--manifest {config.manifest} is a hidden file in OUT_DIR, where the batch "
                         f"keeps its own ({SETTINGS_FILE}, .*{PARTIAL_SUFFIX}): choose another name")
    if config.reference is not None and not config.reference.is_dir():
        raise BatchError(f"--reference {config.reference} does not exist or is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"OUT_DIR {config.out_dir} exists and is not a folder")
    if not (ancestor := existing_ancestor(out_dir)).is_dir():
        raise BatchError(f"OUT_DIR {config.out_dir} cannot be created: {ancestor} is a file, not a folder")
    if config.manifest is not None:
        manifest = config.manifest.resolve()
        if manifest.is_dir():
            raise BatchError(f"--manifest {config.manifest} is a folder: give a file name ending in "
                             f"{config.manifest.suffix}")
        if not (ancestor := existing_ancestor(manifest)).is_dir():
            raise BatchError(f"--manifest {config.manifest} cannot be written: {ancestor} is a file, "
                             "not a folder")
    return in_dir, out_dir


def check_tile(config: BatchConfig, stride: int) -> None:
    """Refuses a ``--tile`` the engine cannot cut images into, for a model of this ``stride``."""
    try:
        tiling(stride, config.tile, None)
    except ValueError as err:
        raise BatchError(f"--tile {config.tile}: {err}") from err


def glob_parts(pattern: str) -> tuple[str, ...]:
    """The path components of a ``--glob`` pattern, or ``ValueError`` saying what is wrong.

    Each component is matched against one name as :func:`fnmatch.fnmatchcase` does (``*``,
    ``?``, ``[seq]``); a whole ``**`` component matches any number of folders, as in pathlib's
    glob, which cannot be used itself: it skips folders it cannot list without a word."""
    parts = PurePosixPath(pattern).parts
    if not parts:
        raise ValueError(f"--glob {pattern!r} is not a valid pattern: it is empty")
    if any("**" in part and part != "**" for part in parts):
        raise ValueError(f"--glob {pattern!r} is not a valid pattern: '**' can only be a whole "
                         "path component")
    return parts


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...], folder: bool = False) -> bool:
    """Whether a file's path ``parts`` match the ``pattern`` components; with ``folder``, whether
    files below the folder of those ``parts`` may."""
    if not pattern:
        return not parts and not folder
    if not parts:
        return folder
    if pattern[0] == "**":  # zero folders, or one more (a file's last part is no folder)
        return _matches(parts, pattern[1:], folder) or (len(parts) > 1 or folder) and _matches(
            parts[1:], pattern, folder)
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:], folder)


def list_inputs(in_dir: Path, pattern: str | None,
                out_dir: Path | None = None) -> tuple[list[Path], list[tuple[Path, OSError]]]:
    """Input files below ``in_dir``: matching ``pattern`` (:func:`glob_parts`), or with an image
    suffix; hidden ones left out. Links that lead nowhere (or in a loop) are listed too, so the
    run reports them. Links to folders are followed, each real folder once (no loops) and never
    into ``out_dir``; with a pattern, only folders it may reach are opened.

    Returns:
        ``(files, unlisted)``: the files, sorted, and each folder that could not be listed
        (no permission, an I/O error) with its error.
    """
    parts = glob_parts(pattern) if pattern else None
    found, unlisted = [], []
    seen = set()

    def reachable(folder: Path) -> bool:
        rel = folder.relative_to(in_dir).parts
        return not folder.name.startswith(".") and (parts is None or _matches(rel, parts, folder=True))

    for root, dirs, files in os.walk(in_dir, followlinks=True, onerror=unlisted.append):
        st = os.stat(root)
        real = Path(root).resolve()
        if (st.st_dev, st.st_ino) in seen or (out_dir is not None and real.is_relative_to(out_dir)):
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if reachable(Path(root) / d))  # the first name of a folder wins
        listed = []
        try:
            for name in files:
                path = Path(root) / name
                rel = path.relative_to(in_dir).parts
                wanted = path.suffix.lower() in IMAGE_SUFFIXES if parts is None else _matches(rel, parts)
                if wanted and not name.startswith(".") and (path.is_file() or _broken_link(path)):
                    listed.append(path)
        except OSError as err:  # names listed, but not to be looked at (a folder without x)
            unlisted.append(OSError(err.errno, err.strerror, root))
            dirs[:] = []
        else:
            found += listed
    return sorted(found), [(Path(err.filename), err) for err in unlisted]


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def plan(config: BatchConfig, in_dir: Path, out_dir: Path, settings: dict | None = None,
         by_mtime: bool = False) -> list[Item]:
    """One :class:`Item` per input, with ``row["status"]`` set for those decided already.

    Args:
        settings: this run's :func:`batch_settings`, copied into each row's columns.
        by_mtime: skip an existing output only if it is at least as new as its input (OUT_DIR
            records its settings); else skip every existing output (an older OUT_DIR's way).
    """
    suffix = FORMATS[_format(config.format)] if config.format else None
    items, claimed = [], {}
    columns = {k: v for k, v in (settings or {}).items()  # bit_depth: each file's, once read
               if k in MANIFEST_FIELDS and k != "bit_depth"} | {
        "model": config.model, "reference": str(config.reference) if config.reference is not None else ""}
    sources, unlisted = list_inputs(in_dir, config.glob, out_dir)
    for folder, err in unlisted:
        rel = folder.relative_to(in_dir).as_posix()
        row = dict.fromkeys(MANIFEST_FIELDS, "") | columns
        row.update(input=f"{rel}/")
        _fail(row, "cannot_list", f"{rel}/: the folder cannot be listed ({err.strerror or err}); "
                                  "the images in it were not denoised")
        items.append(Item(folder, f"{rel}/", out_dir / rel, row))
    for source in sources:
        rel = source.relative_to(in_dir).as_posix()
        target = out_dir / rel if suffix is None else (out_dir / rel).with_suffix(suffix)
        row = dict.fromkeys(MANIFEST_FIELDS, "") | columns
        row.update(input=rel, output=target.relative_to(out_dir).as_posix())
        if _broken_link(source):
            _fail(row, "broken_link", f"{rel}: a link to a file that does not exist (or a link loop)")
        elif target.parent.resolve().is_relative_to(in_dir):  # a symlinked folder pointing back in
            _fail(row, "unsafe_output", f"{rel}: its output folder leads back into IN_DIR; not written")
        elif target in claimed:
            _fail(row, "output_clash", f"{rel}: writes the same output as {claimed[target]}; not written")
        elif (exists := _exists(target)) is None:
            _fail(row, "cannot_write", f"{rel}: its output {row['output']} cannot be looked at "
                                       "(permission denied); not denoised")
        elif exists and not config.overwrite:
            if by_mtime and _older_than(target, source):
                row.update(reason="input_changed", detail="input changed since its output was written")
            else:
                row.update(status="skipped", reason="output_exists",
                           detail="output exists; --overwrite redoes it")
        claimed.setdefault(target, rel)
        items.append(Item(source, rel, target, row))
    return items


def _exists(path: Path) -> bool | None:
    """Whether ``path`` exists; ``None`` where that cannot be found out (a folder on the way may
    not be entered)."""
    try:
        return path.exists()
    except OSError:
        return None


def _older_than(target: Path, source: Path) -> bool:
    """Whether ``target`` was last written before ``source`` (also when either cannot be read)."""
    try:
        return target.stat().st_mtime_ns < source.stat().st_mtime_ns
    except OSError:
        return True


def _format(name: str | None) -> str | None:
    return None if name is None else {"jpg": "JPEG", "tif": "TIFF"}.get(name.lower(), name.upper())


def _fail(row: dict, reason: str, detail: str) -> None:
    row.update(status="failed", reason=reason, detail=detail)


def _reading_error(err: Exception, path) -> str:
    """What went wrong reading ``path``: an :class:`ImageReadError` names the file itself; any
    other error (a decoder's own) is named with its type."""
    return str(err) if isinstance(err, ImageReadError) else f"{path}: {type(err).__name__}: {err}"


def _note(row: dict, text: str) -> None:
    """Adds ``text`` to the row's detail (after what is there, if anything)."""
    row["detail"] = f"{row['detail']}; {text}" if row["detail"] else text


def remove_partials(out_dir: Path) -> int:
    """Deletes the temporary files killed runs left in ``out_dir``, those last written more than
    :data:`PARTIAL_MAX_AGE_S` ago (younger ones may be a concurrent run's); returns how many."""
    if not out_dir.is_dir():
        return 0
    cutoff = time.time() - PARTIAL_MAX_AGE_S
    removed = 0
    for p in out_dir.rglob(f".*{PARTIAL_SUFFIX}"):
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:  # renamed into place, or removed by another run, meanwhile
            pass
    return removed


# ---------------------------------------------------------------- settings


def batch_settings(config: BatchConfig) -> dict:
    """The settings that make this run's outputs, as OUT_DIR's :data:`SETTINGS_FILE` records them,
    known before the model loads: ``precision`` is ``--precision``, left out for ``auto`` (which
    depends on the machine) until the loaded model says what it computes in.

    Raises:
        BatchError: no model under ``--model``, or its file cannot be read.
    """
    from models.registry import ModelNotFoundError, model_sha256, resolve_model_path

    try:
        path = resolve_model_path(config.model).resolve()
        digest = model_sha256(path)
    except (ModelNotFoundError, OSError) as err:
        raise BatchError(f"--model {config.model}: {err}") from err
    settings = {"app_version": app_version(), "model": config.model, "model_path": str(path),
                "model_sha256": digest, "strength": config.strength, "colour": config.colour,
                "ensemble": config.ensemble, "precision": config.precision, "format": _format(config.format),
                "tile": config.tile, "bit_depth": config.bit_depth}
    if config.precision == "auto":
        del settings["precision"]
    return settings


def app_version() -> str:
    """The project's version, from its ``pyproject.toml`` ("" where there is none)."""
    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ""


def read_settings(config: BatchConfig, out_dir: Path) -> dict | None:
    """OUT_DIR's recorded settings; ``None`` where it has none (new, or made by older code).

    Raises:
        BatchError: the file is there but unreadable, and ``--overwrite`` was not given.
    """
    path = out_dir / SETTINGS_FILE
    try:
        if not path.exists() and not path.is_symlink():
            return None
    except OSError as err:
        raise BatchError(f"OUT_DIR {config.out_dir} cannot be looked into: {err.strerror or err}") from err
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    except (OSError, ValueError) as err:
        if config.overwrite:
            return None
        raise BatchError(f"OUT_DIR {config.out_dir}: {SETTINGS_FILE} cannot be read ({err}); pass "
                         "--overwrite to redo every file, or choose another OUT_DIR") from err
    return record


def check_settings(config: BatchConfig, record: dict | None, settings: dict) -> None:
    """Refuses (without ``--overwrite``) an OUT_DIR whose outputs were made with other settings,
    naming each that differs (old -> new); settings left out of ``settings`` are not compared."""
    if record is None or config.overwrite:
        return
    changed = [key for key in COMPARED_SETTINGS if key in settings and record.get(key) != settings[key]]
    if changed:
        shown = ", ".join(_change(key, record, settings) for key in changed)
        raise BatchError(f"OUT_DIR {config.out_dir} holds outputs made with other settings ({shown}): pass "
                         "--overwrite to redo every file with the new settings, or choose another OUT_DIR")
    if record.get("unfinished"):
        raise BatchError(f"OUT_DIR {config.out_dir}: a run with --overwrite did not redo every file "
                         "(interrupted, limited by --glob, or a file that has an output failed), so "
                         "some outputs may be from earlier settings: pass --overwrite to redo them, "
                         "or choose another OUT_DIR")


def _change(key: str, old: dict, new: dict) -> str:
    """One setting that differs, ``"strength 1.0 -> 0.5"``; the model by name and sha256."""
    if key == "model_sha256":
        return (f"model {old.get('model')} (sha256 {str(old.get(key))[:12]}) -> "
                f"{new['model']} (sha256 {new[key][:12]})")

    def shown(value) -> str:
        return "(each input's own)" if key in ("format", "bit_depth") and value is None else str(value)

    return f"{key} {shown(old.get(key))} -> {shown(new[key])}"


def write_settings(out_dir: Path, settings: dict, unfinished: bool) -> None:
    """Writes OUT_DIR's :data:`SETTINGS_FILE` (atomically). ``unfinished``: a run with
    ``--overwrite`` has not yet redone every file, so outputs of earlier settings may remain."""
    atomic_write_json(out_dir / SETTINGS_FILE, settings | {"unfinished": unfinished})


# ---------------------------------------------------------------- the run


def run(config: BatchConfig, out=None) -> Summary:
    """Runs a batch: plans, denoises what is to do, writes outputs and the manifest.

    Raises:
        BatchError: the folders or the model are unusable.
    """
    out = out or sys.stdout
    in_dir, out_dir = check_folders(config)
    earlier, written_ns = _earlier_manifest(config)
    record = read_settings(config, out_dir)
    settings = batch_settings(config)
    check_settings(config, record, settings)  # before the model loads (auto precision: after)
    if config.dry_run:
        from models.registry import ModelNotFoundError, model_card

        try:
            card = model_card(config.model)
        except (ModelNotFoundError, ValueError, OSError) as err:
            raise BatchError(f"--model {config.model}: {err}") from err
        try:
            check_ensemble(config.ensemble, max_ensemble(card), config.model)
        except ValueError as err:
            raise BatchError(f"--ensemble {config.ensemble}: {err}") from err
        # A bundled model's card names its stride; a run folder's gives its widths (stride 2**depth).
        check_tile(config, int(card.get("stride") or 2 ** len(card.get("config", {}).get("widths", ()))))
        items, _ = _plan(config, in_dir, out_dir, record, settings, out)
        for it in items:
            action = it.row["status"] or "denoise"
            note = f" ({it.row['detail']})" if it.row["detail"] else ""
            print(printable(f"{action:8} {it.rel} -> {it.target}{note}"), file=out)
        return Summary([it.row for it in items])
    try:
        denoiser = as_denoiser(config.model, precision=config.precision)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise BatchError(f"--model {config.model}: {err}") from err
    try:
        denoiser = denoiser.with_ensemble(config.ensemble)
    except ValueError as err:
        raise BatchError(f"--ensemble {config.ensemble}: {err}") from err
    check_tile(config, denoiser.stride)
    settings = settings | {"precision": denoiser.precision}
    check_settings(config, record, settings)
    items, versions = _plan(config, in_dir, out_dir, record, settings, out)
    if versions:  # recorded until an --overwrite redoes every file
        settings = settings | {"other_versions": versions}
    todo = [it for it in items if not it.row["status"]]
    unfinished = config.overwrite and _other_outputs(record, settings, items)
    legacy = _legacy(record, items)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BatchError(f"OUT_DIR {config.out_dir} cannot be created: {err}") from err
    try:  # what the user may write, not what the permission bits say (root, ACLs, read-only mounts)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise BatchError(f"OUT_DIR {config.out_dir} cannot be written: {err.strerror or err}") from err
    carry_over(earlier, items, written_ns)
    summary = Summary([it.row for it in items], removed_partials=remove_partials(out_dir),
                      precision=denoiser.precision)
    if config.manifest is not None:  # written now, so a manifest that cannot be is refused up front
        try:
            write_manifest(config.manifest, summary.rows)
        except OSError as err:
            raise BatchError(f"--manifest {config.manifest} cannot be written: "
                             f"{err.strerror or err}") from err
    try:
        if not legacy and record != settings | {"unfinished": unfinished}:  # a resume rewrites nothing
            write_settings(out_dir, settings, unfinished)
    except OSError as err:
        raise BatchError(f"OUT_DIR {config.out_dir}: {SETTINGS_FILE} cannot be written: "
                         f"{err.strerror or err}") from err
    start = time.perf_counter()
    try:
        _Pipeline(config, denoiser, summary).process(todo)
    except KeyboardInterrupt:
        summary.interrupted = True
        for it in todo:
            if not it.row["status"]:
                _fail(it.row, "interrupted", "the run was interrupted before this file")
    finally:
        summary.seconds = time.perf_counter() - start
        if config.manifest is not None:
            try:
                write_manifest(config.manifest, summary.rows)
            except OSError as err:  # a full disk at the end costs the manifest, not the report
                summary.manifest_error = f"{config.manifest}: {err.strerror or err}"
    # Finished only when every file was redone: a failed one keeps its output of earlier settings
    # (or of another version of the app), if it has one; one that never had an output blocks nothing.
    redone = (config.overwrite and not summary.interrupted and config.glob is None
              and not any(it.row["status"] == "failed" and _exists(it.target) is not False
                          for it in items))
    if redone and (unfinished or "other_versions" in settings):
        try:
            write_settings(out_dir, {k: v for k, v in settings.items() if k != "other_versions"},
                           unfinished=False)
        except OSError as err:  # a later rerun without --overwrite is refused: said here
            summary.notes.append(f"{SETTINGS_FILE}: cannot be updated ({err.strerror or err}); "
                                 "a rerun needs --overwrite")
    return summary


def _earlier_manifest(config: BatchConfig) -> tuple[list[dict], int | None]:
    """The rows of the manifest a rerun replaces and when it was written (``None``: no file),
    refusing a file that is no manifest."""
    if config.manifest is None:
        return [], None
    try:
        rows = read_manifest(config.manifest)
        return rows, config.manifest.stat().st_mtime_ns if rows else None
    except ValueError as err:
        raise BatchError(f"--manifest {config.manifest}: {err}; it is not replaced: choose another "
                         "file name") from err
    except OSError as err:
        raise BatchError(f"--manifest {config.manifest} cannot be read: {err.strerror or err}") from err


def _other_outputs(record: dict | None, settings: dict, items: list[Item]) -> bool:
    """Whether OUT_DIR may hold outputs made with settings other than ``settings`` (or unknown
    ones): they remain there until a run with ``--overwrite`` has redone every file."""
    if record is None:
        return any(_exists(it.target) is not False for it in items)
    changed = any(record.get(key) != settings[key] for key in COMPARED_SETTINGS)
    return changed or bool(record.get("unfinished"))


def _legacy(record: dict | None, items: list[Item]) -> bool:
    """Whether OUT_DIR holds outputs that older code made, with settings it did not record: they
    are kept, and no record claims them, until ``--overwrite`` redoes them."""
    return record is None and _keeps_outputs(items)


def _plan(config: BatchConfig, in_dir: Path, out_dir: Path, record: dict | None, settings: dict,
          out) -> tuple[list[Item], list[str]]:
    """:func:`plan`, and the other app versions whose outputs OUT_DIR may hold
    (:func:`_other_versions`), with a note on ``out`` where OUT_DIR has outputs but no recorded
    settings, or keeps outputs of other versions."""
    items = plan(config, in_dir, out_dir, settings, by_mtime=record is not None)
    if _legacy(record, items):
        print(printable(f"note: OUT_DIR {config.out_dir} has outputs but no {SETTINGS_FILE} (older "
                        "code made them): they are kept whatever settings made them, and no "
                        "settings are recorded until --overwrite redoes them"), file=out)
    versions = _other_versions(config, record, settings, items)
    if versions and not config.overwrite and _keeps_outputs(items):
        print(printable(f"note: OUT_DIR {config.out_dir} holds outputs of other versions of this app "
                        f"({', '.join(versions)}; this is {settings['app_version'] or 'unknown'}): "
                        "files skipped as done may be as those versions wrote them (0.1.0 builds "
                        "before multi-page support wrote a multi-page TIFF's first page only); "
                        "--overwrite redoes them with this one"), file=out)
    return items, versions


def _keeps_outputs(items: list[Item]) -> bool:
    """Whether this run skips existing outputs (keeps them as they are)."""
    return any(it.row["reason"] == "output_exists" for it in items)


def _other_versions(config: BatchConfig, record: dict | None, settings: dict, items: list[Item]) -> list[str]:
    """The app versions other than this one whose outputs OUT_DIR may hold after this run: those
    the record says earlier runs left (``other_versions``), and the record's own where this run
    may leave some of its outputs (it skips existing ones, is limited by ``--glob``, or is an
    ``--overwrite`` that may not finish). Recorded by every run, so that each later resume says
    so too, until an ``--overwrite`` has redone every file."""
    if record is None:
        return []
    earlier = record.get("other_versions")
    versions = {v for v in earlier if isinstance(v, str)} if isinstance(earlier, list) else set()
    leaves = config.overwrite or config.glob is not None or _keeps_outputs(items)
    if record.get("app_version") != settings["app_version"] and leaves:
        versions.add(str(record.get("app_version") or "unknown"))
    return sorted(versions - {settings["app_version"]})


class _Pipeline:
    """Readers -> model (main thread, grouped calls) -> writers, with bounded look-ahead."""

    def __init__(self, config: BatchConfig, denoiser, summary: Summary):
        self.config, self.denoiser, self.summary = config, denoiser, summary
        self.readers = cf.ThreadPoolExecutor(config.threads, thread_name_prefix="read")
        self.writers = cf.ThreadPoolExecutor(config.threads, thread_name_prefix="write")
        self.writing: collections.deque = collections.deque()
        self.bar = None
        self.last_manifest = time.monotonic()
        self.largest = 0  # samples (pixels x channels) of the largest image read so far
        self.pending = 0  # samples of the images waiting to be written

    def process(self, todo: list[Item]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=len(todo), unit="file", disable=not self.config.progress or not todo,
                        dynamic_ncols=True, file=sys.stderr)
        self.started = time.perf_counter()
        try:
            self._loop(todo)
            while self.writing:
                self._finish_write(self.writing.popleft())
        finally:
            self.readers.shutdown(wait=True, cancel_futures=True)
            self.writers.shutdown(wait=True, cancel_futures=True)
            self.bar.close()

    def _ahead(self) -> int:
        """Files to read ahead: enough to keep the model fed, and, once the largest image read
        so far is known, no more of them than :data:`BUFFER_SAMPLES` holds."""
        most = max(8, 2 * self.config.batch_size)
        if not self.largest:
            return min(most, self.config.threads)
        return max(2, min(most, BUFFER_SAMPLES // self.largest))

    def _loop(self, todo: list[Item]) -> None:
        reading = collections.deque()
        queue = iter(todo)
        group: list[tuple[Item, object, object, float]] = []
        while True:
            while len(reading) < self._ahead() and (item := next(queue, None)) is not None:
                reading.append(self.readers.submit(self._read, item))
            if not reading:
                break
            item, image, reference, seconds = reading.popleft().result()
            if image is None:
                self._done(item)
                continue
            self.largest = max(self.largest, _samples(image) + _samples(reference))
            big = max(max(page.pixels.shape[:2]) for page in _pages(image)) > self.config.tile
            if group and (big or not self._fits(group, image)):
                self._denoise(group)
                group = []
            group.append((item, image, reference, seconds))
            if big or len(group) >= self.config.batch_size or not reading:
                self._denoise(group)
                group = []
        if group:
            self._denoise(group)

    def _fits(self, group, image) -> bool:
        pixels = sum(_samples(g[1], alpha=False) for g in group) + _samples(image, alpha=False)
        return len(group) < self.config.batch_size and pixels <= DEFAULT_BATCH_PIXELS

    def _read(self, item: Item):
        start = time.perf_counter()
        try:
            item.row["bytes_in"] = item.source.stat().st_size
            # A multi-page TIFF keeps every page only in a TIFF: read them only for one (where
            # the name does not tell, the file's own format decides: it may be a TIFF).
            stack = self._output_format(item, own_format="TIFF") == "TIFF"
            image = load_image(item.source, max_pixels=self.config.max_pixels, pages=stack)
        except Exception as err:  # noqa: BLE001 - one bad file never stops the run
            reason = err.reason if isinstance(err, ImageReadError) else "unreadable"
            _fail(item.row, reason, _reading_error(err, item.rel))
            return item, None, None, 0.0
        height, width = image.pixels.shape[:2]
        item.row.update(width=width, height=height, pages=1 + len(image.pages), mode=image.mode,
                        bit_depth=_bit_depths(image, None))
        item.pixels = sum(page.pixels.shape[0] * page.pixels.shape[1] for page in _pages(image))
        try:
            check_writable(image, self._output_format(item, image.format))
        except ImageWriteError as err:
            _fail(item.row, err.reason, f"{item.rel}: {err} (--format png); not denoised")
            return item, None, None, 0.0
        try:
            image = self._full_scale_pages(image)
        except BitDepthError as err:
            _fail(item.row, err.reason, f"{item.rel}: {err} (--bit-depth {self.config.bit_depth}); "
                                        "not denoised")
            return item, None, None, 0.0
        item.row["bit_depth"] = _bit_depths(image, self.config.bit_depth)
        if image.info.get("frames", 1) > 1 and not image.pages:
            keep = " (a TIFF output keeps every page)" if image.format == "TIFF" else ""
            _note(item.row, f"first of {image.info['frames']} frames: only it is denoised and written{keep}")
            self.summary.notes.append(f"{item.rel}: {item.row['detail']}")
        reference = None
        if self.config.reference is not None:  # a stack's whole, where every page is scored
            reference = self._reference(item, pages=bool(image.pages))
        return item, image, reference, time.perf_counter() - start

    def _reference(self, item: Item, pages: bool):
        """The reference image for ``item``, or a string saying why there is none to score against."""
        base = self.config.reference / item.rel
        candidates = [base] + sorted(p for p in base.parent.glob(f"{_glob_escape(base.stem)}.*")
                                     if p.suffix.lower() in IMAGE_SUFFIXES and p != base)
        for path in candidates:
            try:
                is_file = path.is_file()
            except OSError:  # a folder on the way may not be entered
                return f"reference unusable: {path} cannot be looked at (permission denied)"
            if is_file:
                try:
                    found = load_image(path, max_pixels=self.config.max_pixels, pages=pages)
                    return self._full_scale_pages(found)
                except BitDepthError as err:
                    return f"reference unusable: {path}: {err} (--bit-depth {self.config.bit_depth})"
                except Exception as err:  # noqa: BLE001 - a bad reference costs its scores, never the file
                    return f"reference unusable: {_reading_error(err, path)}"
        return f"no reference for {item.rel} in {self.config.reference}"

    def _output_format(self, item: Item, own_format: str) -> str:
        """``--format``, else the output name's, else ``own_format`` (the input's)."""
        return _format(self.config.format) or format_for(item.target, own_format)

    def _full_scale(self, page) -> np.ndarray:
        """The pixels of a 16-bit ``page`` of ``--bit-depth`` bits brought to the full 16-bit
        range the model expects (:func:`data.images.to_full_scale`: values above that depth
        raise :class:`BitDepthError`); 8-bit ones, ones that declare their own depth (a PGM's
        maxval, read at full scale already), or any without ``--bit-depth``, as they are."""
        bits = self.config.bit_depth
        return to_full_scale(page.pixels, bits) if bits and page.bit_depth == 16 else page.pixels

    def _full_scale_pages(self, image):
        """``image`` with :meth:`_full_scale` applied to every page."""
        return dataclasses.replace(image, pixels=self._full_scale(image), pages=tuple(
            dataclasses.replace(page, pixels=self._full_scale(page)) for page in image.pages))

    def _file_scale(self, item: Item, image, pixels: np.ndarray) -> np.ndarray:
        """Denoised full-range ``pixels`` back on the input's ``--bit-depth`` scale, where the
        output holds 16 bits; an 8-bit output (``--format jpeg``) takes the full range."""
        bits = self.config.bit_depth
        sixteen_bit_output = self._output_format(item, image.format) in SIXTEEN_BIT_FORMATS
        own_maxval = image.info.get("maxval") and self._output_format(item, image.format) == "PPM"
        if bits and pixels.dtype == np.uint16 and sixteen_bit_output and not own_maxval:
            return from_full_scale(pixels, bits)
        return pixels

    def _denoise(self, group) -> None:
        start = time.perf_counter()
        try:
            results = iter(denoise_many([page.pixels for g in group for page in _pages(g[1])], self.denoiser,
                                        strength=self.config.strength, tile=self.config.tile,
                                        colour=self.config.colour))
        except Exception as err:  # noqa: BLE001 - e.g. out of memory on one huge image
            if len(group) > 1:  # retry one by one so one image cannot sink its group
                for g in group:
                    self._denoise([g])
                return
            item = group[0][0]
            _fail(item.row, "denoise_failed", f"{item.rel}: {type(err).__name__}: {err}")
            self._done(item)
            return
        share = (time.perf_counter() - start) / len(group)
        for item, image, reference, seconds in group:
            first, *rest = (self._file_scale(item, image, next(results).output) for _ in _pages(image))
            pages = zip(image.pages, rest, strict=True)
            denoised = dataclasses.replace(image, pixels=first, pages=tuple(
                dataclasses.replace(page, pixels=pixels) for page, pixels in pages))
            samples = _samples(image) + _samples(reference)  # the reference waits with it
            while self.writing and (len(self.writing) >= 2 * self.config.batch_size
                                    or self.pending + samples > BUFFER_SAMPLES):
                self._finish_write(self.writing.popleft())
            self.pending += samples
            self.writing.append((self.writers.submit(self._write, item, image, denoised, reference,
                                                     seconds + share), samples))
        while self.writing and self.writing[0][0].done():
            self._finish_write(self.writing.popleft())

    def _write(self, item: Item, image, denoised, reference, seconds: float) -> Item:
        start = time.perf_counter()
        try:
            item.target.parent.mkdir(parents=True, exist_ok=True)
            save_image(denoised, item.target, format=_format(self.config.format))
        except ImageWriteError as err:
            _fail(item.row, err.reason, f"{item.rel}: {err}")
            return item
        except Exception as err:  # noqa: BLE001 - a full disk or an encoder error fails this file only
            _fail(item.row, "write_failed", f"{item.rel}: {type(err).__name__}: {err}")
            return item
        item.row.update(status="done", bytes_out=item.target.stat().st_size)
        if reference is not None:
            try:
                self._score(item, image, reference)
            except Exception as err:  # noqa: BLE001 - scoring is a report, never a failure
                _note(item.row, f"not scored: {type(err).__name__}: {err}")
        item.row["seconds"] = round(seconds + time.perf_counter() - start, 4)
        return item

    def _score(self, item: Item, image, reference) -> None:
        """PSNR/SSIM of the input and of the written output (read back) against the reference;
        for a multi-page TIFF, the mean over its pages (the reference must have as many)."""
        from data.metrics import psnr, ssim

        if isinstance(reference, str):
            _note(item.row, reference)
            return
        # All three on one scale; the output read back as it was written (every page or one).
        written = self._full_scale_pages(load_image(item.target, max_pixels=self.config.max_pixels,
                                                    pages=bool(image.pages)))
        inputs, cleans = _pages(image), _pages(reference)
        if len(inputs) == 1:  # one page denoised: the reference's first is its clean version
            cleans = cleans[:1]
        if len(cleans) != len(inputs):
            _note(item.row, f"reference has {len(cleans)} page(s), input {len(inputs)}: not scored")
            return
        for number, (page, clean) in enumerate(zip(inputs, cleans, strict=True), 1):
            (height, width), (ref_height, ref_width) = page.pixels.shape[:2], clean.pixels.shape[:2]
            if (height, width) != (ref_height, ref_width):
                where = f" (page {number})" if len(inputs) > 1 else ""
                _note(item.row, f"reference{where} is {ref_width} x {ref_height}, input "
                                f"{width} x {height}: not scored")
                return
        scores = {}  # into the row only once input and output have both been scored
        for label, pages in (("input", inputs), ("output", _pages(written))):
            for metric, score, digits in (("psnr", psnr, 3), ("ssim", ssim, 4)):
                values = []
                for page, clean in zip(pages, cleans, strict=True):
                    estimate = to_model(page.pixels)
                    target = match_channels(to_model(clean.pixels), estimate.shape[-1])
                    values.append(float(score(target, estimate)))
                scored = [v for v in values if not np.isnan(v)]  # SSIM is nan below 3 px: left out
                value = float(np.mean(scored)) if scored else float("nan")  # none: left empty
                scores[f"{metric}_{label}"] = round(value, digits) if np.isfinite(value) else None
        item.row.update(scores)

    def _finish_write(self, writing: tuple[cf.Future, int]) -> None:
        """Waits for one write (a future and the samples it holds) and counts it done."""
        future, samples = writing
        self.pending -= samples
        self._done(future.result())

    def _done(self, item: Item) -> None:
        self.bar.update(1)
        if item.row["status"] == "done":
            self.summary.megapixels += item.pixels / 1e6
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{self.summary.megapixels / elapsed:.2f} MP/s", refresh=False)
        if self.config.manifest is not None and time.monotonic() - self.last_manifest > 5.0:
            self.last_manifest = time.monotonic()
            try:
                write_manifest(self.config.manifest, self.summary.rows)
            except OSError:  # written again at the end, where a failure is reported
                pass


def _pages(image) -> tuple:
    """``image`` and its further pages (a multi-page TIFF's), in order."""
    return (image, *image.pages)


def _bit_depths(image, declared: int | None) -> int | str:
    """The manifest's ``bit_depth``: bits per sample as denoised (``declared``, ``--bit-depth``,
    for 16-bit pages): one number, or where a stack's pages differ, the depths it holds
    (``"8+16"``: a spreadsheet would read ``8/16`` as a date)."""
    bits = {declared if declared and page.bit_depth == 16 else page.bit_depth for page in _pages(image)}
    return bits.pop() if len(bits) == 1 else "+".join(map(str, sorted(bits)))


def _samples(image, alpha: bool = True) -> int:
    """Samples an image holds in memory, every page's: its pixels times its channels (and its
    alpha, unless not ``alpha``); 0 for no image (a reference that is a reason instead)."""
    if not isinstance(image, ImageFile):
        return 0
    return sum(page.pixels.size + (0 if page.alpha is None or not alpha else page.alpha.size)
               for page in _pages(image))


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)


# ---------------------------------------------------------------- reporting


CARRIED_FIELDS = ("width", "height", "pages", "mode", "bit_depth", "bytes_in", "bytes_out", "seconds",
                  "psnr_input", "psnr_output", "ssim_input", "ssim_output")
"""What a rerun keeps of an earlier manifest row for an output it skips (:func:`carry_over`)."""

_MANIFEST_KEYS = frozenset({"input", "output", "status"})
"""The columns every version of the manifest had: a file without them is no manifest."""


def read_manifest(path: Path) -> list[dict]:
    """The rows of the manifest at ``path`` (none where there is no file yet).

    Raises:
        ValueError: the file is not a manifest (of any version of this app): it is not replaced.
        OSError: it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")  # (a spreadsheet's save adds a byte-order mark)
        if not text.strip():  # an empty file loses nothing
            return []
        if path.suffix.lower() == ".json":
            rows = json.loads(text)
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = list(reader) if _MANIFEST_KEYS <= set(reader.fieldnames or ()) else None
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as err:
        raise ValueError(f"it exists and is not a manifest ({err})") from err
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and _MANIFEST_KEYS <= r.keys() for r in rows):
        raise ValueError("it exists and is not a manifest (no input, output and status columns)")
    return rows


def carry_over(earlier: list[dict], items: list[Item], written_ns: int | None = None) -> int:
    """Gives each output this run skips as done the figures (size, seconds, PSNR/SSIM) of its
    ``earlier`` manifest row, where that row made this very output: same input, same settings,
    the file still the size it wrote and not written since the manifest was (``written_ns``,
    its modification time); PSNR/SSIM only where the ``reference`` folder is the same.
    Returns how many rows were carried over."""
    compared = [k for k in COMPARED_SETTINGS if k in MANIFEST_FIELDS and k != "bit_depth"]  # (each file's)
    by_input = {(r.get("input"), r.get("output")): r for r in earlier}
    carried = 0
    for it in items:
        row = it.row
        old = by_input.get((row["input"], row["output"]))
        if row["reason"] != "output_exists" or old is None or old.get("status") not in ("done", "skipped"):
            continue
        try:
            stat = it.target.stat()
        except OSError:
            continue
        if written_ns is not None and stat.st_mtime_ns > written_ns:  # another run rewrote it since
            continue
        if str(old.get("bytes_out")) == str(stat.st_size) and all(
                str(old.get(k)) == str(row[k]) for k in compared):
            same_reference = str(old.get("reference", "")) == str(row["reference"])
            row.update({k: old.get(k, "") for k in CARRIED_FIELDS
                        if same_reference or not k.startswith(("psnr", "ssim"))})
            row["detail"] = ("output exists (its figures are from the run that wrote it); "
                             "--overwrite redoes it")
            carried += 1
    return carried


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Writes the rows (atomically) as CSV or JSON, by the file's suffix, in UTF-8.

    Text goes through :func:`printable`: a file name that is not valid UTF-8 is written with
    its undecodable bytes backslash-escaped (``bad\\xffname.png``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{k: printable(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    if path.suffix.lower() == ".json":
        data = json.dumps(rows, indent=1, ensure_ascii=False, default=_plain).encode()
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        data = buf.getvalue().encode()
    atomic_write_bytes(path, data)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else printable(str(value))


def printable(text: str) -> str:
    """``text`` as valid UTF-8 text: bytes of a file name that were not UTF-8 (which Python keeps
    as lone surrogates) become backslash escapes, so ``b"bad\\xffname.png"`` reads
    ``bad\\xffname.png``; other text is unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name's bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def report(summary: Summary, config: BatchConfig, out=None) -> None:
    """Prints the summary: counts, throughput, and each failure with its reason."""
    out = out or sys.stdout
    done, skipped, failed = (summary.count(s) for s in ("done", "skipped", "failed"))
    if config.dry_run:
        print(f"dry run: {len(summary.rows) - skipped - failed} to denoise, {skipped} skipped, "
              f"{failed} refused", file=out)
        return
    rate = done / summary.seconds if summary.seconds else 0.0
    mp_rate = summary.megapixels / summary.seconds if summary.seconds else 0.0
    print(f"denoised {done} file(s), {summary.megapixels:.2f} MP in {summary.seconds:.1f} s "
          f"({rate:.2f} files/s, {mp_rate:.2f} MP/s, {summary.precision}); skipped {skipped} "
          f"(output exists); failed {failed}", file=out)
    if summary.removed_partials:
        print(f"removed {summary.removed_partials} partial file(s) left by an earlier, interrupted run",
              file=out)
    for note in summary.notes:
        print(printable(f"  NOTE {note}"), file=out)
    for row in summary.rows:
        if row["status"] == "failed" and row["reason"] != "interrupted":
            print(printable(f"  FAILED {row['input']}: {row['reason']}: {row['detail']}"), file=out)
    if summary.interrupted:
        left = sum(row["reason"] == "interrupted" for row in summary.rows)
        print(f"interrupted: {left} file(s) not done; rerun the same command to resume", file=out)
    if summary.manifest_error:
        print(printable(f"manifest NOT written: {summary.manifest_error}"), file=out)
    elif config.manifest is not None:
        print(printable(f"manifest: {config.manifest}"), file=out)


def main(argv=None) -> int:
    config = parse_config(BatchConfig, __doc__.split("\n\n")[0], argv)
    try:
        summary = run(config)
    except BatchError as err:
        print(printable(f"error: {err}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while the model loads; once files are read, run() handles it
        print("interrupted before any file was denoised", file=sys.stderr)
        return 130
    report(summary, config)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
