"""Dataset loaders that read the datasets' original files from a local folder.

Each named dataset is looked for, in order, in: an explicit ``data_dir``; the folder named by
its environment variable (``DAE_MNIST_DIR``, ``DAE_FASHION_MNIST_DIR``, ``DAE_CIFAR10_DIR``,
``DAE_CIFAR100_DIR``); the usual local places (Keras' cache ``~/.keras/datasets``; for
Fashion-MNIST Debian's ``/usr/share/datasets/fashion-mnist``; Keras' fallback
``/tmp/.keras/datasets`` when it exists); then a Keras download. A folder holding the original
files works as-is: the four IDX files of MNIST/Fashion-MNIST (gzipped or not), CIFAR's
``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or the folders they extract to (Keras
3's cache layout included), or Keras' ``mnist.npz``. When nothing is found,
:class:`DatasetNotFoundError` says where it looked, which folder lacks which files, what to put
where and where to download it; when a file is damaged, :func:`load_named` says the same and
names the file at fault.

All loaders return :class:`Dataset`: uint8 images ``(N, H, W, C)`` and int labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import math
import os
import pickle
import re
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from data.images import ImageReadError, read_image

KERAS_CACHE = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
KERAS_TMP_CACHE = Path("/tmp/.keras/datasets")  # where Keras downloads when ~/.keras is read-only
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".avif", ".gif", ".pgm", ".ppm",
                  ".pnm"}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing or damaged; the message says where to put what."""


class DatasetDamagedError(DatasetNotFoundError):
    """A dataset file is there but cannot be read; ``path`` is the file at fault."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = Path(path)


# Whatever a truncated, garbled or foreign file makes the readers raise.
_READ_ERRORS = (OSError, EOFError, KeyError, IndexError, TypeError, ValueError,
                pickle.UnpicklingError, tarfile.TarError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _reading(path: Path, member: str = ""):
    """Turns a read error inside the block into :class:`DatasetDamagedError` naming ``path``."""
    try:
        yield
    except DatasetDamagedError:
        raise
    except _READ_ERRORS as err:
        where = f"{path} (member {member})" if member else f"{path}"
        raise DatasetDamagedError(path, f"{where} is damaged: {err}") from err


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test splits of uint8 images ``(N, H, W, C)`` with integer labels.

    ``y_*`` is ``None`` for unlabelled data (an image folder).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    class_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[-1])


@dataclasses.dataclass(frozen=True)
class _Source:
    env: str
    places: tuple[Path, ...]
    expected: str
    download: str
    debian: str = ""
    fallbacks: tuple[Path, ...] = ()  # searched, and listed, only when they exist


_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_EXPECTED = ", ".join(f"{n}[.gz]" for n in _IDX_FILES.values())
_KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"  # keras.datasets' URLs

SOURCES = {
    "mnist": _Source(
        "DAE_MNIST_DIR", (KERAS_CACHE, KERAS_CACHE / "mnist"), _IDX_EXPECTED + " (or Keras' mnist.npz)",
        f"{_KERAS_MIRROR}mnist.npz (Keras' copy; the IDX files' home is http://yann.lecun.com/exdb/mnist/)",
        fallbacks=(KERAS_TMP_CACHE,),
    ),
    "fashion_mnist": _Source(
        "DAE_FASHION_MNIST_DIR",
        (KERAS_CACHE / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")),
        _IDX_EXPECTED,
        f"{_KERAS_MIRROR}train-images-idx3-ubyte.gz and the other three alike (Keras' copies of "
        "Zalando's files, https://github.com/zalandoresearch/fashion-mnist)",
        debian="dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
        fallbacks=(KERAS_TMP_CACHE / "fashion-mnist",),
    ),
    "cifar10": _Source(
        "DAE_CIFAR10_DIR",
        (KERAS_CACHE,),
        "cifar-10-python.tar.gz, or the cifar-10-batches-py folder it extracts to",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        fallbacks=(KERAS_TMP_CACHE,),
    ),
    "cifar100": _Source(
        "DAE_CIFAR100_DIR",
        (KERAS_CACHE,),
        "cifar-100-python.tar.gz, or the cifar-100-python folder it extracts to",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        fallbacks=(KERAS_TMP_CACHE,),
    ),
}

TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}

_FIRST_TRAIN_LABELS = {
    "mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
    "fashion_mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
}
"""How the official training labels begin. MNIST's and Fashion-MNIST's files share names and
shapes, so this is what tells one from the other."""

_CIFAR100_LABELS = {  # label_mode: (labels key, meta's names key, number of classes), as in Keras
    "fine": (b"fine_labels", b"fine_label_names", 100),
    "coarse": (b"coarse_labels", b"coarse_label_names", 20),
}

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}


# ---------------------------------------------------------------- original file formats


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file as used by MNIST and Fashion-MNIST, gzipped or not whatever its name."""
    path = Path(path)
    with _reading(path):
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic number
            raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetDamagedError(path, f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)  # Python ints: a garbled header's dimensions may overflow int64
    if len(raw) != header + size:
        raise DatasetDamagedError(
            path, f"{path} is damaged: header says {dims} ({size} bytes of data), "
            f"file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes uint8 ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    if array.size and not np.array_equal(array, np.round(array)):
        raise ValueError("IDX files here hold unsigned bytes: got values that are not whole numbers")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"IDX files here hold unsigned bytes (0-255), got {array.min()}-{array.max()}")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with (gzip.open if Path(path).suffix == ".gz" else open)(path, "wb") as fh:
        fh.write(header + array.tobytes())


def _idx_names(stem: str) -> tuple[str, ...]:
    """The names one IDX file goes by: plain, gzipped, and with a dot before ``idx``."""
    return stem, f"{stem}.gz", stem.replace("-idx", ".idx")


def _find_idx(folder: Path) -> dict[str, Path]:
    """The IDX files in ``folder`` by key of :data:`_IDX_FILES`: all four, some, or none."""
    found = {}
    for key, stem in _IDX_FILES.items():
        for candidate in (folder / n for n in _idx_names(stem)):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def _label_range_error(labels: np.ndarray, classes: int) -> str | None:
    """What is wrong with ``labels`` for a dataset of ``classes`` classes (0 to classes - 1), or None."""
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        return (f"it holds labels from {labels.min()} to {labels.max()}, where this dataset's "
                f"{classes} classes are 0-{classes - 1} (a file of another dataset, or a damaged one)")
    return None


def _check_labels(path: Path, labels: np.ndarray, classes: int) -> None:
    if (problem := _label_range_error(labels, classes)) is not None:
        raise DatasetDamagedError(path, f"{path} is not usable: {problem}")


def _load_idx_files(files: dict[str, Path]) -> dict[str, np.ndarray]:
    arrays = {key: read_idx(path) for key, path in files.items()}
    for key, path in files.items():  # a label file under an image file's name, or the reverse
        want = 3 if key.startswith("x") else 1
        if arrays[key].ndim != want:
            raise DatasetDamagedError(
                path, f"{path} holds an array of shape {arrays[key].shape}; "
                f"{'images' if want == 3 else 'labels'} should have {want} dimension(s)")
    for split in ("train", "test"):
        images, labels = files[f"x_{split}"], files[f"y_{split}"]
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DatasetDamagedError(
                labels,
                f"{images} and {labels} disagree in count: {len(arrays[f'x_{split}'])} images, "
                f"{len(arrays[f'y_{split}'])} labels (one of them is truncated or from another set)",
            )
        _check_labels(labels, arrays[f"y_{split}"], 10)  # MNIST's digits, Fashion-MNIST's 10 kinds
    arrays["x_train"] = arrays["x_train"][..., None]
    arrays["x_test"] = arrays["x_test"][..., None]
    return arrays


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except _READ_ERRORS as err:
        raise DatasetDamagedError(path, f"{path} is damaged or not a Keras dataset .npz: {err}") from err
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) != len(y):
            raise DatasetDamagedError(
                path, f"{path} is not a Keras dataset .npz: x_{split} must be uint8 images "
                f"(N, H, W[, C]) with one label each, got {x.dtype} {x.shape} and {len(y)} labels")
        _check_labels(path, np.asarray(y), 10)
    for key in ("x_train", "x_test"):
        if arrays[key].ndim == 3:
            arrays[key] = arrays[key][..., None]
    return arrays


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR file, which may come from anywhere: the files are dicts of byte strings,
    lists and numpy arrays, so only the globals that rebuild an array are let through (numpy < 2
    and the Python 2 originals name ``numpy.core``, numpy >= 2 ``numpy._core``); any other, such
    as a ``__reduce__`` that runs ``os.system``, is refused (Keras refuses the same)."""

    ALLOWED = frozenset({("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                         ("numpy._core.multiarray", "_reconstruct")})

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it would load {module}.{name}; CIFAR files hold only numpy arrays, lists and bytes")
        return super().find_class(module, name)


def _unpickle(fh) -> dict:
    return _CifarUnpickler(fh, encoding="bytes").load()


def _cifar_batch(batch: dict, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One unpickled CIFAR batch as ``(images (N, 32, 32, 3), labels)``; raises on a bad one."""
    x = np.asarray(batch[b"data"]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = np.asarray(batch[label_key]).astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if (problem := _label_range_error(y, classes)) is not None:
        raise ValueError(problem)
    return np.ascontiguousarray(x, dtype=np.uint8), y


def _cifar_members(kind: str, label_mode: str = "fine") -> tuple[str, list[str], str, bytes]:
    if kind == "cifar10":
        return "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"
    return "cifar-100-python", ["train"], "test", _CIFAR100_LABELS[label_mode][0]


def _cifar_archives(kind: str) -> tuple[str, ...]:
    """The names a CIFAR archive goes by: Toronto's, an older one, and Keras 3's cache name
    (``keras.utils.get_file(fname="<top>-target", extract=True)`` keeps it as ``..._archive``)."""
    top = _cifar_members(kind)[0]
    return {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py.tar.gz"),
            "cifar100": ("cifar-100-python.tar.gz",)}[kind] + (f"{top}-target_archive",)


def _load_cifar(folder: Path, kind: str, label_mode: str, incomplete: list) -> dict[str, np.ndarray] | None:
    """CIFAR from an extracted copy in ``folder`` (in Keras 3's ``<top>-target`` cache folder, or
    ``folder`` itself), else from its archive there; extracted copies lacking files go to
    ``incomplete``."""
    top, train_names, test_name, _ = _cifar_members(kind)
    wanted = [*train_names, test_name]
    for base in (folder / top, folder / f"{top}-target" / top, folder):
        if not base.is_dir():
            continue
        missing = [n for n in wanted if not (base / n).is_file()]
        if not missing:
            def read(name, convert, base=base):
                with _reading(base / name), open(base / name, "rb") as fh:
                    return convert(_unpickle(fh))
            return _cifar_dict(read, (base / "meta").is_file(), kind, label_mode)
        if base != folder or len(missing) < len(wanted):
            incomplete.append((base, missing))
    for archive in (folder / n for n in _cifar_archives(kind)):
        if archive.is_file():
            with _reading(archive), tarfile.open(archive, "r:gz") as tar:
                def read(name, convert, tar=tar, archive=archive):
                    with _reading(archive, member=f"{top}/{name}"):
                        return convert(_unpickle(tar.extractfile(f"{top}/{name}")))
                return _cifar_dict(read, f"{top}/meta" in tar.getnames(), kind, label_mode)
    return None


def _meta_names(meta, key: bytes, classes: int):
    """CIFAR-100's class names under ``key`` in its unpickled ``meta``; raises when they do not
    name exactly ``classes`` classes (a head of that many outputs is built from them)."""
    names = dict(meta).get(key)
    if names and len(names) != classes:
        raise ValueError(f"its {key.decode()} hold {len(names)} names for {classes} classes")
    return names


def _cifar_dict(read, has_meta: bool, kind: str, label_mode: str) -> dict:
    """The arrays of a CIFAR copy whose members ``read(name, convert)`` unpickles and converts;
    for CIFAR-100 also ``class_names``, from its ``meta`` member when it has one."""
    _, train_names, test_name, label_key = _cifar_members(kind, label_mode)
    classes = 10 if kind == "cifar10" else _CIFAR100_LABELS[label_mode][2]
    batch = functools.partial(_cifar_batch, label_key=label_key, classes=classes)
    train = [read(n, batch) for n in train_names]
    x_test, y_test = read(test_name, batch)
    arrays = {"x_train": np.concatenate([x for x, _ in train]),
              "y_train": np.concatenate([y for _, y in train]), "x_test": x_test, "y_test": y_test}
    if kind == "cifar100":
        names_key = _CIFAR100_LABELS[label_mode][1]
        names = (read("meta", functools.partial(_meta_names, key=names_key, classes=classes))
                 if has_meta else None)
        if names:  # else :func:`_dataset` numbers the classes
            arrays["class_names"] = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return arrays


def _load_from(folder: Path, name: str, label_mode: str, incomplete: list) -> dict[str, np.ndarray] | None:
    """Dataset ``name`` from ``folder``, or None; a copy there lacking files is appended to
    ``incomplete`` as ``(folder, [missing file, ...])``."""
    if not folder.is_dir():
        return None
    if name in ("cifar10", "cifar100"):
        return _load_cifar(folder, name, label_mode, incomplete)
    files = _find_idx(folder)
    if len(files) == len(_IDX_FILES):
        return _load_idx_files(files)
    if name == "mnist" and (folder / "mnist.npz").is_file():
        return _load_npz(folder / "mnist.npz")
    if files:
        incomplete.append((folder, [f"{stem}[.gz]" for key, stem in _IDX_FILES.items() if key not in files]))
    return None


def _file_names(name: str) -> set[str]:
    """The names of the files that hold (part of) dataset ``name``."""
    if name in ("cifar10", "cifar100"):
        _, train_names, test_name, _ = _cifar_members(name)
        return {*_cifar_archives(name), *train_names, test_name}
    names = {n for stem in _IDX_FILES.values() for n in _idx_names(stem)}
    if name == "mnist":
        names.add("mnist.npz")
    return names


def _folder_of(place: Path, name: str) -> Path:
    """``place``, or the folder holding it when it is one of the dataset's own files."""
    if not place.is_file():
        return place
    if place.name in _file_names(name):
        return place.parent
    raise DatasetNotFoundError(f"{place} is a file; pass the folder that holds {SOURCES[name].expected}")


def _places(name: str, data_dir) -> list[Path]:
    """Where to look for dataset ``name``, in order: ``data_dir`` alone when given."""
    source = SOURCES[name]
    if data_dir is not None:
        return [_folder_of(Path(data_dir), name)]
    places = [_folder_of(Path(os.environ[source.env]), name)] if os.environ.get(source.env) else []
    places += [*source.places, *(p for p in source.fallbacks if p.is_dir())]
    return list(dict.fromkeys(places))


def _check_identity(name: str, arrays: dict[str, np.ndarray], place: Path) -> None:
    """Refuses MNIST's files loaded as Fashion-MNIST and the reverse: they share names and shapes,
    but each official training set's labels begin their own way."""
    if name not in _FIRST_TRAIN_LABELS:
        return
    first = tuple(int(v) for v in arrays["y_train"][:10])
    for other, begins in _FIRST_TRAIN_LABELS.items():
        if other != name and first == begins:
            raise DatasetNotFoundError(
                f"dataset {name!r} cannot be loaded: {place} holds {TITLES[other]}, not {TITLES[name]} "
                f"(its training labels begin {', '.join(map(str, begins[:5]))}, as {TITLES[other]}'s do). "
                f"Load it as {other!r}, or get {TITLES[name]} from {SOURCES[name].download}")


def _keras_download(name: str, label_mode: str) -> dict[str, np.ndarray] | None:
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist,
              "cifar10": keras.datasets.cifar10, "cifar100": keras.datasets.cifar100}[name]
    try:
        (x_train, y_train), (x_test, y_test) = (
            loader.load_data(label_mode=label_mode) if name == "cifar100" else loader.load_data())
    except Exception:  # noqa: BLE001 - any network or cache failure means "not available"
        return None
    arrays = {"x_train": x_train, "y_train": y_train.reshape(-1),
              "x_test": x_test, "y_test": y_test.reshape(-1)}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim == 3:
            arrays[key] = arrays[key][..., None]
    return arrays


def load_named(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
               label_mode: str = "fine") -> Dataset:
    """Loads ``mnist``, ``fashion_mnist``, ``cifar10`` or ``cifar100`` from local files.

    Args:
        name: the dataset.
        data_dir: a folder with the dataset's original files (or one of those files); when
            given, only it is used.
        download: whether to try a Keras download when no local copy is found.
        label_mode: CIFAR-100's labels, as in Keras: ``"fine"`` (100 classes) or ``"coarse"``
            (their 20 superclasses).

    Raises:
        DatasetNotFoundError: with the places looked in, the folders holding only part of the
            dataset and what they lack, what to put where and where to download it; also for
            MNIST's files loaded as Fashion-MNIST, or the reverse.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SOURCES)} or folder:PATH")
    if label_mode not in _CIFAR100_LABELS or (label_mode != "fine" and name != "cifar100"):
        raise ValueError(f"label_mode must be 'fine' (or 'coarse' for cifar100), "
                         f"got {label_mode!r} for {name!r}")
    source = SOURCES[name]
    places = _places(name, data_dir)
    incomplete: list[tuple[Path, list[str]]] = []
    for i, place in enumerate(places):
        try:
            arrays = _load_from(place, name, label_mode, incomplete)
        except DatasetDamagedError as err:
            raise DatasetDamagedError(
                err.path,
                f"dataset {name!r} cannot be loaded: {err}\n"
                + _where_to_put(source, places[: i + 1], download=False, replace=err.path.name),
            ) from err
        if arrays is not None:
            _check_identity(name, arrays, place)
            return _dataset(name, arrays, label_mode)
    if data_dir is None and download:
        arrays = _keras_download(name, label_mode)
        if arrays is not None:
            return _dataset(name, arrays, label_mode)
    found = (f"dataset {name!r} is incomplete: "
             + "; ".join(f"{folder} lacks {', '.join(missing)}" for folder, missing in incomplete) + ".\n"
             if incomplete else f"dataset {name!r} not found. ")
    raise DatasetNotFoundError(found + _where_to_put(source, places, data_dir is None and download))


def _where_to_put(source: _Source, places: list[Path], download: bool, replace: str = "") -> str:
    """The places looked in, what to put where and where to download it: the body of every
    load_named error."""
    looked = "\n".join(f"  - {p}{'' if p.is_dir() else ' (no such folder)'}" for p in places)
    hint = f"\nOn Debian/Ubuntu the package {source.debian} installs them." if source.debian else ""
    put = f"Replace {replace} with a fresh copy, or put" if replace else "Put"
    return (
        f"Looked in:\n{looked}\n"
        + ("  - a Keras download (failed: offline?)\n" if download else "")
        + f"{put} {source.expected} in one of these folders, pass --data-dir DIR, "
        f"or set {source.env}=DIR.\nDownload: {source.download}{hint}"
    )


def _dataset(name: str, arrays: dict[str, np.ndarray], label_mode: str = "fine") -> Dataset:
    numbers = tuple(str(i) for i in range(_CIFAR100_LABELS[label_mode][2]))
    class_names = arrays.get("class_names") or CLASS_NAMES.get(name, numbers)
    return Dataset(name, arrays["x_train"], arrays["y_train"].astype(np.int64),
                   arrays["x_test"], arrays["y_test"].astype(np.int64), class_names)

def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files below ``folder`` (recursively, by suffix), sorted for reproducibility."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist or is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder_image(path: Path, channels: int) -> np.ndarray:
    """One folder image as uint8 ``(H, W, channels)``; raises :class:`ImageReadError`."""
    arr = read_image(path, mode="L" if channels == 1 else "RGB")
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def _usable_images(folder, channels: int, min_size: int, skipped: list):
    """Yields ``(path, image)`` for every readable image below ``folder`` at least ``min_size``
    pixels on its shorter side, one at a time; appends ``"path: reason"`` to ``skipped`` for
    each other file, and raises :class:`DatasetNotFoundError` when nothing was usable."""
    found = False
    for path in list_images(folder):
        try:
            arr = _folder_image(path, channels)
        except ImageReadError as err:
            skipped.append(str(err))
            continue
        if min(arr.shape[:2]) < min_size:
            skipped.append(f"{path}: smaller than {min_size} px")
            continue
        found = True
        yield path, arr
    if not found:
        raise DatasetNotFoundError(
            f"no usable images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}; "
            f"skipped {len(skipped)}" + (f", e.g. {skipped[0]}" if skipped else "") + ")"
        )


def load_folder_images(folder, channels: int = 3, min_size: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Reads every readable image below ``folder`` as uint8 ``(H, W, channels)``.

    Returns:
        ``(images, skipped)``: the arrays, and ``"path: reason"`` for each file left out.
    """
    skipped: list[str] = []
    images = [arr for _, arr in _usable_images(folder, channels, min_size, skipped)]
    return images, skipped


def split_validation(x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int):
    """Holds out a seeded random ``fraction`` of the training split for validation.

    Returns:
        ``(x_train, y_train, x_val, y_val)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    val, train = order[:n_val], order[n_val:]
    pick = (lambda a, i: None if a is None else a[i])
    return x[train], pick(y, train), x[val], pick(y, val)


def patch_plan(shapes, patch_size: int, count: int, seed: int) -> list[tuple[int, int, int]]:
    """``(image, top, left)`` of ``count`` random ``patch_size`` squares from images of
    ``shapes``, each image weighted by area (the draws :func:`sample_patches` cuts)."""
    usable = [i for i, shape in enumerate(shapes) if min(shape[:2]) >= patch_size]
    if not usable:
        raise ValueError(f"no image is at least {patch_size}x{patch_size} pixels; use a smaller --patch-size")
    rng = np.random.default_rng(seed)
    areas = np.asarray([shapes[i][0] * shapes[i][1] for i in usable], dtype=np.float64)
    which = rng.choice(len(usable), size=count, p=areas / areas.sum())
    plan = []
    for k in which:
        h, w = shapes[usable[k]][:2]
        top = int(rng.integers(0, h - patch_size + 1))
        plan.append((usable[k], top, int(rng.integers(0, w - patch_size + 1))))
    return plan


def _cut(plan, image_of, patch_size: int, channels: int) -> np.ndarray:
    """The patches of ``plan``, asking ``image_of(i)`` for each image once, in turn."""
    out = np.empty((len(plan), patch_size, patch_size, channels), dtype=np.uint8)
    rows: dict[int, list[int]] = {}
    for row, (i, _, _) in enumerate(plan):
        rows.setdefault(i, []).append(row)
    for i, image_rows in rows.items():
        im = image_of(i)
        for row in image_rows:
            _, top, left = plan[row]
            out[row] = im[top : top + patch_size, left : left + patch_size]
    return out


def sample_patches(images: list[np.ndarray], patch_size: int, count: int, seed: int) -> np.ndarray:
    """Cuts ``count`` random ``patch_size`` squares from ``images``, each image weighted by area.

    Returns:
        uint8 ``(count, patch_size, patch_size, C)``.
    """
    plan = patch_plan([im.shape for im in images], patch_size, count, seed)
    return _cut(plan, images.__getitem__, patch_size, images[plan[0][0]].shape[-1])


PHOTO_COPY_SIZES = (1024, 512)
"""Longer sides of the copies ``data.photo_folder`` writes of each photo, as NAME_1024.png and
NAME_512.png: files that differ only in such a suffix are one photo to :func:`split_by_photo`."""

_COPY_SUFFIX = re.compile("_(?:" + "|".join(map(str, PHOTO_COPY_SIZES)) + ")$")


def split_by_photo(paths, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, validation)`` indices of ``paths``, split by photo: copies of one photo at
    several sizes (:data:`PHOTO_COPY_SIZES`) fall on the same side, so validation never scores
    a photo that training saw. A seeded ``fraction`` of the photos (at least one) is held out;
    with a single photo there is nothing to hold out and validation is empty."""
    keys = [str(Path(p).parent / _COPY_SUFFIX.sub("", Path(p).stem)) for p in paths]
    photos = list(dict.fromkeys(keys))
    order = np.random.default_rng(seed).permutation(len(photos))
    n_val = max(1, int(round(fraction * len(photos)))) if len(photos) > 1 else 0
    held = {photos[i] for i in order[:n_val]}
    return ([i for i, k in enumerate(keys) if k not in held],
            [i for i, k in enumerate(keys) if k in held])


def load_folder(folder, channels: int, patch_size: int, patches: int, val_fraction: float,
                seed: int) -> Dataset:
    """An image folder as a patch dataset: files split into train and validation by photo
    (:func:`split_by_photo`).

    The images are decoded one at a time, twice: once for their sizes, which place the patches
    (:func:`patch_plan`), and once to cut them. So a folder of many large photos never sits in
    memory whole: at most one decoded image does, beside the patches.

    The "test" split holds the validation files' patches: a folder has no official test split,
    so evaluate on photos kept out of the folder altogether.
    """
    paths, shapes, skipped = [], [], []
    for path, arr in _usable_images(folder, channels, patch_size, skipped):
        paths.append(path)
        shapes.append(arr.shape)
    if skipped:
        shown = "".join(f"\n  {line}" for line in skipped[:10])
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        print(f"note: {len(skipped)} file(s) below {folder} left out of the dataset:{shown}{more}",
              file=sys.stderr)
    train_idx, val_idx = split_by_photo(paths, val_fraction, seed)
    if not train_idx:
        raise ValueError(f"--val-fraction {val_fraction:g} holds out all {len(paths)} usable image(s) "
                         f"of {folder} for validation, leaving none to train on; lower it or add images")
    if not val_idx:
        print(f"note: {folder} holds one usable photo, so validation scores patches of the photo "
              "it trains on; add photos for a validation score worth reading", file=sys.stderr)
        val_idx = train_idx

    def patches_of(indices, count, patch_seed):
        plan = patch_plan([shapes[i] for i in indices], patch_size, count, patch_seed)
        return _cut(plan, lambda k: _folder_image(paths[indices[k]], channels), patch_size, channels)

    return Dataset(
        f"folder:{folder}",
        patches_of(train_idx, patches, seed),
        None,
        patches_of(val_idx, max(64, patches // 20), seed + 1),
        None,
    )


def load_dataset(spec: str, data_dir=None, channels: int = 0, patch_size: int = 64,
                 patches: int = 20000, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Loads a dataset by CLI spec: a name of :data:`SOURCES` or ``folder:PATH``."""
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):], channels or 3, patch_size, patches, val_fraction, seed)
    ds = load_named(spec, data_dir)
    if channels and channels != ds.channels:
        raise ValueError(f"{spec} has {ds.channels} channel(s); --channels {channels} does not fit")
    return ds
