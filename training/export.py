"""Export what a DAE learned: feature tables for downstream classifiers, and the encoder itself.

    python -m training.export features --model fashion-mnist --dataset fashion_mnist \\
        --split test --out runs/features/fmnist-test.parquet
    python -m training.export features --model fashion-mnist --images photos/ --out photos.npz
    python -m training.export features --model fashion-mnist --images photos/ --labels inferred \\
        --layout wide --out photos.parquet
    python -m training.export encoder --model fashion-mnist --format savedmodel --out exports/enc

**Features** run the encoder's code output through a stated pooling (``avg``: global average
over the code map, the default; ``max``; ``flatten``: the whole map) and write one row per
image: ``id`` (``SPLIT/INDEX`` for a dataset, the path relative to the folder for images),
``label`` (null in Parquet / -1 in ``.npz`` when unknown) and ``features`` (float32; with
``--layout wide``, Parquet columns ``f0..fD-1`` instead). ``--labels inferred`` labels a folder's
images by class folder, as Keras' ``image_dataset_from_directory`` does (``DIR/CLASS/.../x.png``;
the class names, sorted, are labels 0..K-1 and go to the metadata's ``class_names``). Images are
read in batches with a progress bar and written in chunks (Parquet: ``pyarrow.ParquetWriter``;
``.npz``: a disk-backed array), so a folder of any size passes without being held in memory.
Folder images are converted to the model's channels, centre-cropped to a square and resized to
the model's training size (``--image-size`` to override); unreadable files are skipped and
listed. The metadata records the model's file and its sha256, by which ``training.downstream``
tells models apart. The output appears only when complete, and an existing file is kept unless
``--overwrite``.

**Encoder** exports the same image -> features model as ``.keras``, as a TensorFlow SavedModel
(``model.export``, ready for TF Serving; endpoint ``serve``), as ONNX (``tf2onnx``) or as
TFLite/LiteRT, with a ``PATH.json`` beside it stating the input convention, the pooling, the
feature size and the image size the model was trained at (features of other sizes differ).
:func:`load_exported` reloads any of them; the tests check each gives the original's features.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import sys
import zipfile
from dataclasses import field
from pathlib import Path

import numpy as np

from data.datasets import SOURCES, DatasetNotFoundError
from data.images import ImageReadError, atomic_write_json, existing_ancestor
from models.encoder_classifier import POOLINGS
from models.registry import ModelNotFoundError, model_sha256
from training.cli import parse_config

FORMATS = {"keras": ".keras", "savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}
"""Encoder export formats and the suffix each output path needs (a SavedModel is a folder)."""
DATASET_SIZES = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "cifar100": 32}
LAYOUTS = ("list", "wide")
"""Parquet feature layouts: one fixed-size list column ``features``, or columns ``f0..fD-1``."""


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """``python -m training.export features``: encoder features of a split or an image folder."""

    model: str = field(default="fashion-mnist", metadata={
        "help": "a bundled name, a pretraining or fine-tuning run folder, or a .keras file"})
    dataset: str | None = field(default=None, metadata={
        "choices": tuple(SOURCES), "help": "a named dataset (or use --images)"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with the dataset's files"})
    split: str | None = field(default=None, metadata={
        "choices": ("train", "test"), "help": "the --dataset split (default: test)"})
    images: str | None = field(default=None, metadata={
        "help": "a folder of images, searched recursively (instead of --dataset)"})
    labels: str | None = field(default=None, metadata={
        "choices": ("inferred",), "help": "with --images: 'inferred' labels each image by its class "
        "folder, DIR/CLASS/.../x.png (class names sorted -> 0..K-1, as Keras' "
        "image_dataset_from_directory); left out, the images are unlabelled"})
    out: str = field(default="", metadata={"help": "output file, .parquet or .npz"})
    layout: str = field(default="list", metadata={
        "choices": LAYOUTS, "help": "Parquet features as one fixed-size list column 'features', or "
        "wide: one float32 column per feature, f0..fD-1 (pandas and SQL read them as they are)"})
    pooling: str = field(default="avg", metadata={
        "choices": POOLINGS, "help": "code map -> vector: global average, global max or flattened"})
    image_size: int = field(default=0, metadata={
        "help": "side folder images are resized to (0 = the size the model was trained on)"})
    batch_size: int = field(default=256, metadata={"help": "images per forward pass and per chunk"})
    limit: int = field(default=0, metadata={"help": "export only the first N images (0 = all)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output file"})

    def __post_init__(self):
        if (self.dataset is None) == (self.images is None):
            raise ValueError("give exactly one of --dataset or --images, got "
                             f"dataset={self.dataset!r}, images={self.images!r}")
        if Path(self.out).suffix not in (".parquet", ".npz"):
            raise ValueError(f"--out must end in .parquet or .npz, got {self.out!r}")
        if self.labels not in (None, "inferred"):
            raise ValueError(f"--labels must be 'inferred' or left out, got {self.labels!r}")
        if self.images is not None and (self.split is not None or self.data_dir is not None):
            given = [f for f, v in (("--split", self.split), ("--data-dir", self.data_dir)) if v is not None]
            raise ValueError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with --dataset; "
                             f"--images {self.images} is a folder of its own: leave "
                             f"{'them' if len(given) > 1 else 'it'} out, or give --dataset")
        if self.dataset is not None and self.split is None:
            object.__setattr__(self, "split", "test")
        if self.labels is not None and self.images is None:
            raise ValueError(f"--labels {self.labels} takes labels from the class folders of --images; "
                             f"--dataset {self.dataset} has its own labels")
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.layout == "wide" and Path(self.out).suffix != ".parquet":
            raise ValueError(f"--layout wide writes Parquet columns f0..fD-1; it needs --out "
                             f"NAME.parquet, got {self.out!r}")
        if self.batch_size < 1 or self.image_size < 0 or self.limit < 0:
            raise ValueError("--batch-size must be >= 1, --image-size and --limit >= 0; got "
                             f"{self.batch_size}, {self.image_size}, {self.limit}")
        if self.dataset is not None and self.image_size:
            raise ValueError(f"--image-size resizes --images folders only; a --dataset keeps its "
                             f"own size, got --image-size {self.image_size} with --dataset {self.dataset}")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """``python -m training.export encoder``: the image -> features model in a portable format."""

    model: str = field(default="fashion-mnist", metadata={
        "help": "a bundled name, a pretraining or fine-tuning run folder, or a .keras file"})
    format: str = field(default="keras", metadata={"choices": tuple(FORMATS), "help": "export format"})
    out: str = field(default="", metadata={
        "help": "output path: NAME.keras, a folder (savedmodel), NAME.onnx or NAME.tflite"})
    pooling: str = field(default="avg", metadata={
        "choices": POOLINGS, "help": "code map -> vector: global average, global max or flattened"})
    image_size: int = field(default=0, metadata={
        "help": "fix the input side (needed by flatten); 0 = any size for avg/max pooling"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        suffix = FORMATS.get(self.format)
        if suffix is None:
            raise ValueError(f"--format must be one of {list(FORMATS)}, got {self.format!r}")
        if not self.out or Path(self.out).suffix != suffix:
            need = f"a path ending in {suffix}" if suffix else "a folder path without a suffix"
            raise ValueError(f"--format {self.format} needs --out {need}, got {self.out!r}")
        if self.pooling == "flatten" and not self.image_size:
            raise ValueError("--pooling flatten needs --image-size (the flattened size depends on it)")


# ---------------------------------------------------------------------------- the model


def training_image_size(name_or_path) -> int | None:
    """The image side a model was trained on, from its card or run config (None if unknown)."""
    from models.registry import model_card

    return _image_size(model_card(name_or_path).get("config", {}))


def _image_size(config: dict) -> int | None:
    """The image side a card's training ``config`` names (its dataset's, or its patch side)."""
    dataset = str(config.get("dataset", ""))
    if dataset in DATASET_SIZES:
        return DATASET_SIZES[dataset]
    if dataset.startswith("folder:") and config.get("patch_size"):
        return int(config["patch_size"])
    return None


def trained_on(name_or_path) -> dict:
    """The data a model was trained on, as its exported encoder's card states it: the dataset,
    the image side (None if unknown) and, for a folder of images, the patch side."""
    from models.registry import model_card

    config = model_card(name_or_path).get("config", {})
    size = _image_size(config)
    dataset = config.get("dataset")
    info = {"dataset": dataset, "image_size": size}
    if size is None:
        info["note"] = "unknown (the model has no card or run config stating it)"
    elif str(dataset).startswith("folder:"):
        info.update(patch_size=size, note=(
            f"trained on {size}x{size} patches cut from the folder's images; features of other "
            f"sizes differ, and training.export features --images resizes whole images to "
            f"{size}x{size}"))
    else:
        info["note"] = (f"any size runs, but features of images of another size differ from those "
                        f"at {size}x{size}: resize to it (training.export features --images does)")
    return info


def features_model(name_or_path, pooling: str = "avg", image_size: int = 0):
    """The image -> features model of a DAE or a fine-tuned classifier."""
    from models.encoder_classifier import feature_extractor
    from models.registry import load_model

    size = (image_size, image_size) if image_size else None
    return feature_extractor(load_model(name_or_path), pooling, size)


# ---------------------------------------------------------------------------- feature writers


def _partial(path: Path) -> Path:
    """Where an output is written before it is complete (renamed onto ``path`` at the end)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def wide_columns(dim: int) -> list[str]:
    """The feature columns of ``--layout wide``: ``f0 .. f{dim-1}``."""
    return [f"f{i}" for i in range(dim)]


class ParquetFeatureWriter:
    """Appends feature chunks to a Parquet file: ``id`` string, ``label`` int64, then the features
    as one fixed-size list column ``features`` (layout ``list``) or float32 columns ``f0..fD-1``
    (layout ``wide``)."""

    def __init__(self, path: Path, dim: int, metadata: dict, layout: str = "list"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.dim, self.wide = dim, layout == "wide"
        features = ([(name, pa.float32()) for name in wide_columns(dim)] if self.wide
                    else [("features", pa.list_(pa.float32(), dim))])
        self.schema = pa.schema([("id", pa.string()), ("label", pa.int64()), *features])
        self.writer = pq.ParquetWriter(path, self.schema)

    def write(self, ids, labels, features: np.ndarray) -> None:
        import pyarrow as pa

        features = np.ascontiguousarray(features, np.float32)
        columns = [pa.array(ids, pa.string()),
                   pa.array(labels if labels is not None else [None] * len(ids), pa.int64())]
        if self.wide:
            columns += [pa.array(features[:, i]) for i in range(self.dim)]
        else:
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), self.dim))
        self.writer.write_batch(pa.record_batch(columns, schema=self.schema))

    def close(self, path: Path, metadata: dict) -> None:
        self.writer.add_key_value_metadata({"dae": json.dumps(metadata)})
        self.writer.close()

    def abort(self) -> None:
        """Closes the file unfinished (the caller removes it); does nothing after ``close``."""
        self.writer.close()


class NpzFeatureWriter:
    """Collects features in a disk-backed array (a scratch ``.npy`` beside the output);
    ``close`` packs ``ids``, ``labels``, ``features`` and ``meta`` (JSON) into the ``.npz``,
    streaming from disk."""

    def __init__(self, path: Path, dim: int, metadata: dict, capacity: int):
        self.scratch = path.with_suffix(".features.npy")
        self.features = np.lib.format.open_memmap(self.scratch, mode="w+", dtype=np.float32,
                                                  shape=(max(capacity, 1), dim))
        self.ids, self.labels, self.count = [], [], 0

    def write(self, ids, labels, features: np.ndarray) -> None:
        self.features[self.count: self.count + len(ids)] = features
        self.count += len(ids)
        self.ids += list(ids)
        self.labels += list(labels) if labels is not None else [-1] * len(ids)

    def close(self, path: Path, metadata: dict) -> None:
        try:
            with open(path, "wb") as fh:
                np.savez(fh, ids=np.asarray(self.ids, dtype=str),
                         labels=np.asarray(self.labels, dtype=np.int64),
                         features=self.features[: self.count], meta=np.asarray(json.dumps(metadata)))
        finally:
            self.abort()

    def abort(self) -> None:
        """Drops the disk-backed array and deletes its scratch file; safe to call again."""
        self.features = None
        self.scratch.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class FeatureTable:
    """Features read back from an export."""

    ids: np.ndarray
    labels: np.ndarray
    """int64; -1 where the label is unknown."""
    features: np.ndarray
    meta: dict

    @property
    def class_names(self) -> list[str]:
        """The name of each label (``class_names[label]``); empty when the export named none."""
        return list(self.meta.get("class_names", []))


def read_features(path) -> FeatureTable:
    """Reads a ``.parquet`` (either layout) or ``.npz`` written by ``training.export features``.

    ``read_features(path).features`` is the ``(N, D)`` float32 array scikit-learn takes, and
    ``.labels`` the int64 labels (-1 where unknown).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no feature file {path}")
    if path.suffix not in (".parquet", ".npz"):
        raise ValueError(f"feature files are .parquet or .npz, got {path}")
    if path.suffix == ".npz" and not zipfile.is_zipfile(path):  # np.load would try it as a pickle
        raise ValueError(f"{path} is not a feature file: not a .npz (zip) archive")
    try:
        return _read_npz(path) if path.suffix == ".npz" else _read_parquet(path)
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # pyarrow's are ValueErrors
        raise ValueError(f"{path} is not a feature file written by training.export features "
                         f"({err})") from err


def _read_npz(path: Path) -> FeatureTable:
    with np.load(path) as npz:
        return FeatureTable(npz["ids"], npz["labels"], npz["features"], json.loads(str(npz["meta"])))


def _read_parquet(path: Path) -> FeatureTable:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((pq.read_metadata(path).metadata or {}).get(b"dae", b"{}"))
    labels = table.column("label").fill_null(-1).to_numpy()
    return FeatureTable(np.asarray(table.column("id").to_pylist()), labels.astype(np.int64),
                        _parquet_features(table), meta)


def _parquet_features(table) -> np.ndarray:
    """The ``features`` list column, or the wide layout's ``f0..fD-1`` columns, as ``(N, D)``."""
    if "features" in table.column_names:
        features = table.column("features").combine_chunks()
        return features.values.to_numpy(zero_copy_only=False).reshape(-1, features.type.list_size)
    names = [name for name in table.column_names if name not in ("id", "label")]
    if not names or names != wide_columns(len(names)):
        raise ValueError(f"no 'features' column, nor feature columns f0..fN-1; columns: {names[:5]}")
    return np.stack([table.column(name).to_numpy() for name in names], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------- image sources


def _dataset_batches(config: FeaturesConfig):
    """``(total, class_names, batches, side)``: ids, labels, uint8 images per batch of a split,
    and the side of its images."""
    from data.datasets import load_named

    data = load_named(config.dataset, config.data_dir)
    x, y = (data.x_train, data.y_train) if config.split == "train" else (data.x_test, data.y_test)
    n = min(len(x), config.limit) if config.limit else len(x)

    def batches():
        for start in range(0, n, config.batch_size):
            stop = min(start + config.batch_size, n)
            ids = [f"{config.split}/{i}" for i in range(start, stop)]
            yield ids, y[start:stop], x[start:stop], len(ids)

    return n, data.class_names, batches(), int(x.shape[1])


def load_for_model(path: Path, channels: int, size: int) -> np.ndarray:
    """One image file as a float ``(size, size, channels)`` model input.

    Through ``read_image`` and ``to_model`` (any bit depth), ``match_channels``, then a centre
    crop to a square and an antialiased resize.
    """
    import keras

    from data.images import match_channels, read_image, to_model

    image = match_channels(to_model(read_image(path)), channels)
    resized = keras.ops.image.resize(image, (size, size), interpolation="bilinear", antialias=True,
                                     crop_to_aspect_ratio=True)
    return np.clip(keras.ops.convert_to_numpy(resized), 0.0, 1.0)


def inferred_labels(root: Path, paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Labels from class folders, as Keras' ``image_dataset_from_directory(labels="inferred")``
    gives them: an image's class is its first folder below ``root``, and the class names, sorted,
    are numbered 0..K-1.

    Returns:
        The int64 label of each path, and the class names.

    Raises:
        ValueError: images lie directly in ``root``, outside any class folder.
    """
    parts = [path.relative_to(root).parts for path in paths]
    loose = [path for path, part in zip(paths, parts, strict=True) if len(part) == 1]
    if loose:
        raise ValueError(f"--labels inferred takes each image's class from its folder, "
                         f"{root}/CLASS/..., but {len(loose)} image(s) lie directly in {root}, "
                         f"outside any class folder (the first: {loose[0]}); move them into class "
                         "folders, or leave out --labels")
    class_names = sorted({part[0] for part in parts})
    index = {name: label for label, name in enumerate(class_names)}
    return np.asarray([index[part[0]] for part in parts], np.int64), class_names


def _folder_listing(config: FeaturesConfig) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The images of an ``--images`` folder (the first ``--limit``), their labels (None unless
    ``--labels inferred``) and the class names."""
    from data.datasets import list_images

    root = Path(config.images)
    paths = list_images(root)
    labels, class_names = inferred_labels(root, paths) if config.labels == "inferred" else (None, [])
    if config.limit:
        paths = paths[: config.limit]
        labels = None if labels is None else labels[: config.limit]
    return paths, labels, class_names


def _folder_batches(config: FeaturesConfig, paths: list[Path], labels: np.ndarray | None,
                    channels: int, size: int, skipped: list[str]):
    """Batches of ids, labels (or None) and images of ``paths``; unreadable files go to
    ``skipped``."""
    root = Path(config.images)

    def read(path):
        try:
            return load_for_model(path, channels, size)
        except (ImageReadError, ValueError, OSError) as err:
            message = str(err)
            return message if message.startswith(str(path)) else f"{path}: {message}"

    def batches():
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for start in range(0, len(paths), config.batch_size):
                chunk = paths[start: start + config.batch_size]
                ids, images, kept = [], [], []
                for i, (path, result) in enumerate(zip(chunk, pool.map(read, chunk), strict=True)):
                    if isinstance(result, str):
                        skipped.append(result)
                    else:
                        ids.append(path.relative_to(root).as_posix())
                        images.append(result)
                        kept.append(start + i)
                yield (ids, None if labels is None else labels[kept],
                       np.stack(images) if images else None, len(chunk))

    return batches()


# ---------------------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class FeaturesSummary:
    """What ``export_features`` wrote."""

    out: Path
    rows: int
    dim: int
    skipped: list[str]


def _check_free(out: Path, overwrite: bool, folder: bool = False, source: Path | None = None) -> None:
    """Refuses an output that exists (unless ``overwrite``), one that ``--overwrite`` must not
    replace, or one whose folder cannot be made; then makes that folder.

    Args:
        folder: the output is a SavedModel folder: only a folder holding ``saved_model.pb`` is
            ever replaced (never a file, nor any other folder). Otherwise the output is a file
            and an existing folder in its place is never replaced.
        source: the model file being read, which the output must neither be nor contain.
    """
    if source is not None and (out.resolve() == source.resolve()
                               or out.resolve() in source.resolve().parents):
        raise ValueError(f"--out {out} would replace the model being read ({source}); "
                         "choose another --out")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        if out.is_symlink():
            raise FileExistsError(f"{out} is a link; --overwrite does not replace links: "
                                  "choose another --out")
        if folder and not (out.is_dir() and (out / "saved_model.pb").is_file()):
            raise FileExistsError(f"{out} exists and is not a SavedModel folder (no saved_model.pb); "
                                  "--overwrite only replaces a SavedModel: choose another --out")
        if not folder and out.is_dir():
            raise FileExistsError(f"{out} is a folder; --overwrite only replaces a file: "
                                  "choose another --out")
    if not (ancestor := existing_ancestor(out)).is_dir():
        raise ValueError(f"cannot write {out}: {ancestor} is a file, not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot make the folder of {out}: {err.strerror or err}") from err


def export_features(config: FeaturesConfig, progress: bool = True) -> FeaturesSummary:
    """Runs the encoder over a split or a folder and writes the feature table.

    Returns:
        The output path, the rows written, the feature size and the skipped files.
    """
    from tqdm import tqdm

    from models.registry import resolve_model_path

    out = Path(config.out)
    _check_free(out, config.overwrite)
    size = config.image_size
    if config.dataset is not None:
        total, class_names, batches, size = _dataset_batches(config)  # the dataset's own side
    else:
        paths, labels, class_names = _folder_listing(config)  # loose images: refused before the model loads
        total = len(paths)
        if not size:
            size = training_image_size(config.model)
            if size is None:
                raise ValueError(f"cannot tell what image size {config.model!r} was trained on; "
                                 "pass --image-size")
    extractor = features_model(config.model, config.pooling, size)
    channels = int(extractor.inputs[0].shape[-1])
    skipped: list[str] = []
    if config.dataset is None:
        batches = _folder_batches(config, paths, labels, channels, size, skipped)
    dim = int(extractor.outputs[0].shape[-1] or 0)
    meta = {"model": str(config.model), "model_file": str(resolve_model_path(config.model).resolve()),
            "model_sha256": model_sha256(config.model), "pooling": config.pooling, "source":
            f"{config.dataset}:{config.split}" if config.dataset else str(Path(config.images).resolve()),
            "image_size": size, "channels": channels, "class_names": list(class_names),
            "input": "float32 in [0, 1] (data.images.to_model)"}
    partial = _partial(out)
    writer, rows = None, 0
    try:
        with tqdm(total=total, unit="img", desc="features", disable=not progress) as bar:
            for ids, labels, images, files_done in batches:
                if ids:
                    features = _features(extractor, images, channels, meta["source"])
                    if writer is None:
                        dim = features.shape[-1]
                        writer = (ParquetFeatureWriter(partial, dim, meta, config.layout)
                                  if out.suffix == ".parquet"
                                  else NpzFeatureWriter(partial, dim, meta, total))
                    writer.write(ids, None if labels is None else np.asarray(labels, np.int64), features)
                    rows += len(ids)
                bar.update(files_done)
        if writer is None:
            raise ValueError(f"no readable images in {meta['source']} ({len(skipped)} skipped)")
        meta.update(rows=rows, skipped=len(skipped))
        writer.close(partial, meta)
        os.replace(partial, out)
    except OSError as err:
        raise _cannot_write(out, err) from err
    finally:  # also on Ctrl-C: no open file, no scratch array, no partial output left behind
        if writer is not None:
            writer.abort()
        partial.unlink(missing_ok=True)
    return FeaturesSummary(out, rows, dim, skipped)


def _features(extractor, images: np.ndarray, channels: int, source: str) -> np.ndarray:
    from data.images import to_model

    if images.shape[-1] != channels:
        raise ValueError(f"the model takes {channels}-channel images, {source} has {images.shape[-1]}")
    return np.asarray(extractor.predict_on_batch(to_model(images)), np.float32)


def _write_card(out: Path, extractor, config: EncoderConfig) -> Path:
    card = out.with_name(out.name + ".json")
    channels = int(extractor.inputs[0].shape[-1])
    size = config.image_size or None
    description = {
        "source_model": str(config.model), "source_sha256": model_sha256(config.model),
        "format": config.format, "pooling": config.pooling, "trained_on": trained_on(config.model),
        "input": {"shape": [None, size, size, channels], "dtype": "float32", "range": [0.0, 1.0],
                  "layout": "NHWC", "convert_with": "data.images.to_model"},
        "output": {"shape": [None, int(extractor.outputs[0].shape[-1])], "dtype": "float32"},
        "savedmodel_endpoint": "serve" if config.format == "savedmodel" else None,
    }
    try:
        atomic_write_json(card, description)
    except OSError as err:
        raise _cannot_write(card, err) from err
    return card


def _cannot_write(path: Path, err: OSError) -> ValueError:
    """An ``OSError`` met while writing ``path`` (a full disk, a folder made read-only) as the
    error the CLI prints: ``cannot write PATH: reason``."""
    return ValueError(f"cannot write {path}: {err.strerror or err}")


def export_encoder(config: EncoderConfig) -> Path:
    """Writes the image -> features model of ``config.model`` in ``config.format``.

    Returns:
        The output path (a file, or a folder for a SavedModel); ``PATH.json`` describes it.
    """
    from models.registry import resolve_model_path

    out = Path(config.out)
    _check_free(out, config.overwrite, folder=config.format == "savedmodel",
                source=resolve_model_path(config.model))
    _check_free(out.with_name(out.name + ".json"), config.overwrite)  # its card, written beside it
    extractor = features_model(config.model, config.pooling, config.image_size)
    side = config.image_size or 32
    extractor(np.zeros((1, side, side, extractor.inputs[0].shape[-1]), np.float32))  # ONNX needs a call
    partial = _partial(out)
    try:
        _remove(partial)
        if config.format == "keras":
            extractor.save(partial)
        else:
            fmt = {"savedmodel": "tf_saved_model", "onnx": "onnx", "tflite": "litert"}[config.format]
            extractor.export(str(partial), format=fmt, verbose=False)
        _remove(out)
        os.replace(partial, out)
    except OSError as err:
        raise _cannot_write(out, err) from err
    finally:
        _remove(partial)
    try:
        _write_card(out, extractor, config)
    except BaseException:
        _remove(out)  # no export is left without its card
        raise
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def load_exported(path):
    """Reloads an exported encoder as ``fn(images float (N, H, W, C)) -> features (N, D)``.

    The format follows the path: ``.keras``, ``.onnx``, ``.tflite``, or a SavedModel folder.
    ONNX runs on ``onnxruntime`` when it is installed, else on ``onnx``'s reference evaluator.
    """
    path = Path(path)
    if path.is_dir():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda x: loaded.serve(np.asarray(x, np.float32)).numpy()
    if not path.is_file():
        raise FileNotFoundError(f"no exported encoder at {path}")
    if path.suffix == ".keras":
        import keras

        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        return lambda x: np.asarray(model.predict_on_batch(np.asarray(x, np.float32)))
    if path.suffix == ".tflite":
        return _tflite_runner(path)
    if path.suffix == ".onnx":
        return _onnx_runner(path)
    raise ValueError(f"unknown export {path}: expected .keras, .onnx, .tflite or a SavedModel folder")


def _tflite_runner(path: Path):
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT will replace it
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x):
        x = np.asarray(x, np.float32)
        interpreter.resize_tensor_input(source["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"]).copy()

    return run


def _onnx_runner(path: Path):
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.asarray(x, np.float32)})[0]
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(path))
        evaluator, name = ReferenceEvaluator(model), model.graph.input[0].name
        return lambda x: evaluator.run(None, {name: np.asarray(x, np.float32)})[0]


COMMANDS = {"features": FeaturesConfig, "encoder": EncoderConfig}


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.export {features,encoder} --help``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="python -m training.export",
                                         description=__doc__.split("\n\n")[0])
        parser.add_argument("command", choices=list(COMMANDS), help="what to export")
        parser.parse_args(argv[:1])  # prints usage and exits
    command, rest = argv[0], argv[1:]
    config = parse_config(COMMANDS[command], f"python -m training.export {command}", rest)
    try:
        if command == "features":
            summary = export_features(config)
        else:
            out = export_encoder(config)
    # ImportError: an exporter's package is missing; OSError: one that no step above named
    # (writing the output becomes "cannot write OUT: reason" where it happens).
    except (DatasetNotFoundError, ModelNotFoundError, ValueError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if command == "encoder":
        print(f"wrote {config.format} encoder to {out} (described in {out}.json)")
        return 0
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable file(s):", file=sys.stderr)
        for line in summary.skipped:
            print(f"  {line}", file=sys.stderr)
    print(f"wrote {summary.rows} rows of {summary.dim} features ({config.pooling} pooling) to {summary.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
