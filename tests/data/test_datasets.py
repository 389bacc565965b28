import importlib
import inspect
import io
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from data import datasets
from data.datasets import (
    DatasetDamagedError,
    DatasetNotFoundError,
    load_dataset,
    load_named,
    split_validation,
    write_idx,
)

RNG = np.random.default_rng(0)


def make_idx_folder(folder, n_train=30, n_test=10, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr)
    return arrays


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 wrote CIFAR's files: protocol 2, every string a byte string."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_byte_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        short = len(data) < 256
        self.write((pickle.SHORT_BINSTRING + bytes([len(data)]) if short
                    else pickle.BINSTRING + len(data).to_bytes(4, "little")) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_byte_string


def py2_pickle(obj) -> bytes:
    """``obj`` as the original CIFAR files pickle it, arrays rebuilt by numpy.core's _reconstruct."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_cifar_archive(folder, kind, n=6):
    """Toronto's archive in its real format; returns ``{member: (data, labels, coarse labels)}``."""
    top, train_names, test_name, label_key = datasets._cifar_members(kind)
    expected = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [*train_names, test_name]:
            data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = RNG.integers(0, 100 if kind == "cifar100" else 10, n).tolist()
            coarse = RNG.integers(0, 20, n).tolist() if kind == "cifar100" else None
            expected[name] = (data, labels, coarse)
            batch = {b"batch_label": b"training batch", b"data": data, label_key: labels,
                     b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
            if coarse:
                batch[b"coarse_labels"] = coarse
            blob = py2_pickle(batch)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        if kind == "cifar100":  # the archive's class names, as the real one holds them
            blob = py2_pickle({b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                               b"coarse_label_names": [f"group{i}".encode() for i in range(20)]})
            info = tarfile.TarInfo(f"{top}/meta")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    archive = "cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / archive).write_bytes(buf.getvalue())
    return expected


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_folder_loads_original_files(tmp_path, name, gz):
    arrays = make_idx_folder(tmp_path, gz=gz)
    ds = load_named(name, tmp_path)
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])


def test_keras_npz_for_mnist(tmp_path):
    x = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(5), x_test=x[:2], y_test=np.arange(2))
    ds = load_named("mnist", tmp_path)
    assert ds.x_train.shape == (5, 28, 28, 1) and list(ds.y_test) == [0, 1]


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_archive_and_extracted_folder(tmp_path, kind):
    expected = make_cifar_archive(tmp_path, kind)
    ds = load_named(kind, tmp_path)
    top, train_names, test_name, _ = datasets._cifar_members(kind)
    assert ds.x_train.shape == (6 * len(train_names), 32, 32, 3)
    data, labels, _ = expected[test_name]
    # CIFAR rows are channel-planar (1024 R, 1024 G, 1024 B): pixel (0, 0) is data[0], [1024], [2048].
    np.testing.assert_array_equal(ds.x_test[0, 0, 0], data[0, [0, 1024, 2048]])
    assert list(ds.y_test) == labels
    with tarfile.open(next(tmp_path.glob("*.tar.gz"))) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    again = load_named(kind, tmp_path / "extracted")
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    # Class names: CIFAR-10's are fixed; CIFAR-100's are read from the archive's meta member.
    names = ds.class_names
    assert names == again.class_names and len(names) == (100 if kind == "cifar100" else 10)
    assert names[:2] == (("class0", "class1") if kind == "cifar100" else ("airplane", "automobile"))


def test_env_var_is_used(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "fm", n_train=7)
    monkeypatch.setenv("DAE_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    assert len(load_named("fashion_mnist").x_train) == 7


def test_missing_dataset_names_places_and_what_to_put(tmp_path, monkeypatch):
    source = datasets.SOURCES["fashion_mnist"]
    monkeypatch.setitem(datasets.SOURCES, "fashion_mnist",
                        datasets.dataclasses.replace(source, places=(tmp_path / "nowhere",), fallbacks=()))
    monkeypatch.delenv("DAE_FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        load_named("fashion_mnist", download=False)
    text = str(err.value)
    assert "dataset 'fashion_mnist' not found" in text
    assert str(tmp_path / "nowhere") in text and "(no such folder)" in text
    assert "train-images-idx3-ubyte[.gz]" in text and "DAE_FASHION_MNIST_DIR" in text
    assert "apt-get install dataset-fashion-mnist" in text


def test_explicit_empty_dir_is_reported(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        load_named("cifar10", tmp_path)


def assert_damage_reported(err, name, bad_file, folder, expected):
    """The one message for a damaged file: dataset, file at fault, place, what to put where."""
    text = str(err.value)
    assert isinstance(err.value, DatasetDamagedError) and err.value.path == bad_file
    first = text.splitlines()[0]
    assert first.startswith(f"dataset {name!r} cannot be loaded: ") and str(bad_file) in first
    assert f"Looked in:\n  - {folder}\n" in text
    assert f"Replace {bad_file.name} with a fresh copy, or put {expected} in one of these folders" in text
    assert f"pass --data-dir DIR, or set {datasets.SOURCES[name].env}=DIR" in text


def test_truncated_idx_is_damaged_not_half_loaded(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetNotFoundError, match=r"is damaged: header says \(30, 28, 28\)") as err:
        load_named("mnist", tmp_path)
    assert_damage_reported(err, "mnist", path, tmp_path, datasets.SOURCES["mnist"].expected)


def test_corrupt_gzip_is_damaged(tmp_path):
    make_idx_folder(tmp_path, gz=True)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetNotFoundError, match="damaged") as err:
        load_named("fashion_mnist", tmp_path)
    assert_damage_reported(err, "fashion_mnist", bad, tmp_path, datasets.SOURCES["fashion_mnist"].expected)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_idx_with_bad_magic_number_is_damaged(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.write_bytes(b"PK\x03\x04 a zip, not IDX")
    with pytest.raises(DatasetDamagedError, match="bad magic number") as err:
        load_named("mnist", tmp_path)
    assert_damage_reported(err, "mnist", bad, tmp_path, datasets.SOURCES["mnist"].expected)


def test_images_and_labels_of_different_counts_name_both_files(tmp_path):
    make_idx_folder(tmp_path, n_test=10, gz=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros(9))
    with pytest.raises(DatasetDamagedError) as err:
        load_named("mnist", tmp_path)
    assert f"{tmp_path / 't10k-images-idx3-ubyte'} and {labels} disagree in count: 10 images, 9 labels" \
        in str(err.value)
    assert_damage_reported(err, "mnist", labels, tmp_path, datasets.SOURCES["mnist"].expected)


def test_labels_outside_the_datasets_classes_are_refused_by_file(tmp_path):
    """A 12-class IDX set (EMNIST's layout) read as MNIST, a Keras npz and CIFAR batches with a
    label of -1 or 300: each names the file, rather than training a 10-way head on label 11."""
    make_idx_folder(tmp_path / "idx", gz=False)
    labels = tmp_path / "idx" / "train-labels-idx1-ubyte"
    write_idx(labels, np.arange(30) % 12)
    with pytest.raises(DatasetDamagedError, match="holds labels from 0 to 11, where this dataset's "
                       "10 classes are 0-9") as err:
        load_named("mnist", tmp_path / "idx")
    assert_damage_reported(err, "mnist", labels, tmp_path / "idx", datasets.SOURCES["mnist"].expected)

    npz = tmp_path / "npz" / "mnist.npz"
    npz.parent.mkdir()
    x = np.zeros((3, 28, 28), np.uint8)
    np.savez(npz, x_train=x, y_train=np.array([0, 1, 2]), x_test=x, y_test=np.array([0, 10, 2]))
    with pytest.raises(DatasetDamagedError, match="holds labels from 0 to 10") as err:
        load_named("mnist", npz.parent)
    assert_damage_reported(err, "mnist", npz, npz.parent, datasets.SOURCES["mnist"].expected)

    for kind, label, message in (
            ("cifar10", -1, r"from -1 to \d, where this dataset's 10 classes are 0-9"),
            ("cifar100", 300, r"from \d+ to 300, where this dataset's 100 classes are 0-99")):
        make_cifar_archive(tmp_path / kind, kind)
        top, train_names, _, label_key = datasets._cifar_members(kind)
        archive = next((tmp_path / kind).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path / kind / "x", filter="data")
        bad = tmp_path / kind / "x" / top / train_names[0]
        batch = pickle.loads(bad.read_bytes(), encoding="bytes")
        batch[label_key] = [label, *batch[label_key][1:]]
        bad.write_bytes(pickle.dumps(batch))
        with pytest.raises(DatasetDamagedError, match=f"is damaged: it holds labels {message}") as err:
            load_named(kind, tmp_path / kind / "x")
        assert_damage_reported(err, kind, bad, tmp_path / kind / "x", datasets.SOURCES[kind].expected)


def test_cifar100_class_names_must_name_every_class(tmp_path):
    make_cifar_archive(tmp_path, "cifar100")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    meta = tmp_path / "x" / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({b"fine_label_names": [b"a"] * 99, b"coarse_label_names": [b"g"] * 20}))
    with pytest.raises(DatasetDamagedError, match="fine_label_names hold 99 names for 100 classes") as err:
        load_named("cifar100", tmp_path / "x")
    assert err.value.path == meta
    assert len(load_named("cifar100", tmp_path / "x", label_mode="coarse").class_names) == 20


def test_an_idx_header_too_big_for_int64_is_damaged(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    make_idx_folder(tmp_path, gz=False)
    bad.write_bytes(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 2 + (4).to_bytes(4, "big"))
    with pytest.raises(DatasetDamagedError, match=r"is damaged: header says \(2147483648, 2147483648, "
                       r"4\) \(18446744073709551616 bytes of data\), file has 0") as err:
        load_named("mnist", tmp_path)
    assert_damage_reported(err, "mnist", bad, tmp_path, datasets.SOURCES["mnist"].expected)


def test_damaged_mnist_npz(tmp_path):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))  # no labels, no test split
    with pytest.raises(DatasetDamagedError, match="not a Keras dataset .npz") as err:
        load_named("mnist", tmp_path)
    assert_damage_reported(err, "mnist", bad, tmp_path, datasets.SOURCES["mnist"].expected)


def test_damaged_cifar_archive_and_batch_files(tmp_path):
    make_cifar_archive(tmp_path, "cifar10")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DatasetDamagedError) as err:
        load_named("cifar10", tmp_path)
    assert_damage_reported(err, "cifar10", archive, tmp_path, datasets.SOURCES["cifar10"].expected)

    make_cifar_archive(tmp_path, "cifar10")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    extracted = tmp_path / "x" / "cifar-10-batches-py"
    bad = extracted / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetDamagedError, match="4 images but 2 labels") as err:
        load_named("cifar10", tmp_path / "x")
    assert_damage_reported(err, "cifar10", bad, tmp_path / "x", datasets.SOURCES["cifar10"].expected)


def test_debian_fashion_mnist_when_installed():
    if not (datasets.Path("/usr/share/datasets/fashion-mnist")).is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make setup installs it)")
    ds = load_named("fashion_mnist", "/usr/share/datasets/fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def test_validation_split_is_seeded_and_disjoint():
    x = np.arange(100)[:, None]
    a = split_validation(x, x[:, 0], 0.2, seed=1)
    b = split_validation(x, x[:, 0], 0.2, seed=1)
    np.testing.assert_array_equal(a[2], b[2])
    assert len(a[2]) == 20 and not set(a[0][:, 0]) & set(a[2][:, 0])
    with pytest.raises(ValueError, match=r"in \(0, 1\), got 1.5"):
        split_validation(x, None, 1.5, 0)


def test_folder_dataset_patches_split_by_image(tmp_path):
    for i in range(4):
        sub = tmp_path / f"d{i % 2}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(RNG.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    (tmp_path / "notes.png").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}", patch_size=32, patches=50, val_fraction=0.25)
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.y_train is None
    assert ds.x_test.shape[1:] == (32, 32, 3)
    grey = load_dataset(f"folder:{tmp_path}", channels=1, patch_size=16, patches=10)
    assert grey.x_train.shape == (10, 16, 16, 1)


def test_folder_dataset_names_the_files_it_leaves_out(tmp_path, capsys):
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    ds = load_dataset(f"folder:{tmp_path}", patch_size=64, patches=20, val_fraction=0.34)
    assert len(ds.x_train) == 20
    err = capsys.readouterr().err
    assert f"note: 2 file(s) below {tmp_path} left out of the dataset:" in err
    assert f"\n  {tmp_path / 'broken.jpg'}: " in err
    assert f"\n  {tmp_path / 'small.png'}: smaller than 64 px" in err


def test_folder_without_images_says_so(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no usable images"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")


def test_folder_that_leaves_nothing_to_train_on_says_why(tmp_path):
    for i in range(3):
        Image.fromarray(RNG.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match=r"--val-fraction 1 holds out all 3 usable image\(s\) of .* "
                                         "leaving none to train on"):
        load_dataset(f"folder:{tmp_path}", patch_size=32, patches=10, val_fraction=1.0)
    with pytest.raises(DatasetNotFoundError, match=r"skipped 3, e\.g\. .*\.png: smaller than 96 px\)"):
        load_dataset(f"folder:{tmp_path}", patch_size=96, patches=10)


def test_garbled_deflate_data_and_a_truncated_npz_are_damaged_not_tracebacks(tmp_path):
    make_idx_folder(tmp_path / "idx", gz=True)
    bad = tmp_path / "idx" / "train-images-idx3-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    start = raw.index(0, 10) + 1  # past the gzip header and the file name it records
    raw[start:start + 8] = b"\xff" * 8  # the first deflate block's header: zlib.error, not OSError
    bad.write_bytes(bytes(raw))
    with pytest.raises(DatasetDamagedError, match="is damaged: Error -3 while decompressing"):
        load_named("mnist", tmp_path / "idx")
    npz = tmp_path / "npz" / "mnist.npz"
    npz.parent.mkdir()
    np.savez(npz, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    npz.write_bytes(npz.read_bytes()[:-40])  # cut off: the zip's central directory is gone
    with pytest.raises(DatasetDamagedError, match="not a Keras dataset .npz"):
        load_named("mnist", npz.parent)


def test_files_holding_the_wrong_arrays_are_refused_by_name(tmp_path):
    make_idx_folder(tmp_path / "idx", gz=False)
    images = tmp_path / "idx" / "t10k-images-idx3-ubyte"
    images.write_bytes((tmp_path / "idx" / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DatasetDamagedError, match=r"holds an array of shape \(10,\); images should "
                                                  r"have 3 dimension"):
        load_named("mnist", tmp_path / "idx")
    npz = tmp_path / "npz" / "mnist.npz"
    npz.parent.mkdir()
    np.savez(npz, x_train=np.full((2, 28, 28), 0.5), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with pytest.raises(DatasetDamagedError, match="x_train must be uint8 images"):
        load_named("mnist", npz.parent)
    with pytest.raises(ValueError, match="not whole numbers"):
        write_idx(tmp_path / "x", np.array([255.7]))


def test_fashion_mnist_is_not_told_to_use_mnist_npz(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_named("fashion_mnist", tmp_path, download=False)
    assert "train-images-idx3-ubyte[.gz]" in str(err.value) and "mnist.npz" not in str(err.value)
    with pytest.raises(DatasetNotFoundError, match=r"mnist\.npz"):
        load_named("mnist", tmp_path, download=False)


def test_a_half_complete_folder_names_the_folder_and_the_files_it_lacks(tmp_path):
    make_idx_folder(tmp_path / "idx")
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_named("mnist", tmp_path / "idx", download=False)
    assert str(err.value).startswith(
        f"dataset 'mnist' is incomplete: {tmp_path / 'idx'} lacks t10k-labels-idx1-ubyte[.gz].\nLooked in:")
    make_cifar_archive(tmp_path / "c", "cifar10")
    with tarfile.open(tmp_path / "c" / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    extracted = tmp_path / "x" / "cifar-10-batches-py"
    (extracted / "data_batch_5").unlink()
    for folder in (tmp_path / "x", extracted):  # the folder above the extracted one, or that one
        with pytest.raises(DatasetNotFoundError, match=f"is incomplete: {extracted} lacks data_batch_5\\.\n"):
            load_named("cifar10", folder)
    # Beside the archive, the half-extracted copy is no obstacle.
    shutil.copy(tmp_path / "c" / "cifar-10-python.tar.gz", tmp_path / "x")
    assert len(load_named("cifar10", tmp_path / "x").x_train) == 30


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_keras_3_cifar_cache_is_found(tmp_path, monkeypatch, kind):
    import keras

    expected = make_cifar_archive(tmp_path / "dl", kind)
    archive = next((tmp_path / "dl").glob("*.tar.gz"))
    top, _, test_name, _ = datasets._cifar_members(kind)
    # What keras.datasets.cifar10/cifar100.load_data() leave in Keras' cache (which must exist
    # and be writable, or Keras writes to /tmp/.keras instead).
    (tmp_path / "keras").mkdir()
    keras.utils.get_file(fname=f"{top}-target", origin=archive.as_uri(), extract=True,
                         cache_dir=tmp_path / "keras")
    cache = tmp_path / "keras" / "datasets"
    assert (cache / f"{top}-target" / top / test_name).is_file()
    assert (cache / f"{top}-target_archive").is_file()
    # Searched without --data-dir, as Keras' /tmp fallback is (only when it exists).
    monkeypatch.setitem(datasets.SOURCES, kind, datasets.dataclasses.replace(
        datasets.SOURCES[kind], places=(tmp_path / "nowhere",), fallbacks=(cache, tmp_path / "absent")))
    monkeypatch.delenv(datasets.SOURCES[kind].env, raising=False)
    assert list(load_named(kind, download=False).y_test) == expected[test_name][1]
    shutil.rmtree(cache / f"{top}-target")  # the archive alone, under Keras' name
    assert list(load_named(kind, cache).y_test) == expected[test_name][1]
    shutil.rmtree(cache)
    with pytest.raises(DatasetNotFoundError) as err:
        load_named(kind, download=False)
    assert "absent" not in str(err.value) and str(cache) not in str(err.value)


@pytest.mark.parametrize(("name", "url"), [
    ("mnist", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
    ("fashion_mnist", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/train-images-idx3-ubyte.gz"),
    ("cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
])
def test_missing_dataset_says_where_to_download_it(tmp_path, name, url):
    with pytest.raises(DatasetNotFoundError) as err:
        load_named(name, tmp_path, download=False)
    assert f"\nDownload: {url}" in str(err.value)
    keras_source = inspect.getsource(importlib.import_module(f"keras.src.datasets.{name}"))
    base, file = url.rsplit("/", 1)
    assert base in keras_source and file in keras_source  # where keras.datasets downloads it from


def test_gzip_is_told_by_its_magic_number_not_its_name(tmp_path):
    arrays = make_idx_folder(tmp_path / "a", gz=True)
    for path in (tmp_path / "a").iterdir():
        path.rename(path.with_suffix(""))  # gzipped, named as plain IDX files
    labels = arrays["train-labels-idx1-ubyte"]
    np.testing.assert_array_equal(load_named("mnist", tmp_path / "a").y_train, labels)
    arrays = make_idx_folder(tmp_path / "b", gz=False)
    for path in (tmp_path / "b").iterdir():
        path.rename(path.with_name(path.name + ".gz"))  # plain, named as gzipped
    labels = arrays["train-labels-idx1-ubyte"]
    np.testing.assert_array_equal(load_named("mnist", tmp_path / "b").y_train, labels)


def test_data_dir_may_name_one_of_the_dataset_files(tmp_path, monkeypatch):
    labels = make_cifar_archive(tmp_path, "cifar10")["test_batch"][1]
    assert list(load_named("cifar10", tmp_path / "cifar-10-python.tar.gz").y_test) == labels
    monkeypatch.setenv("DAE_CIFAR10_DIR", str(tmp_path / "cifar-10-python.tar.gz"))
    assert list(load_named("cifar10", download=False).y_test) == labels
    arrays = make_idx_folder(tmp_path / "idx")
    ds = load_named("fashion_mnist", tmp_path / "idx" / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetNotFoundError) as err:
        load_named("mnist", tmp_path / "notes.txt")
    assert str(err.value) == (f"{tmp_path / 'notes.txt'} is a file; pass the folder that holds "
                              f"{datasets.SOURCES['mnist'].expected}")


def test_mnist_and_fashion_mnist_are_told_apart(tmp_path):
    starts = {"mnist": [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], "fashion_mnist": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]}
    for name, other in (("mnist", "fashion_mnist"), ("fashion_mnist", "mnist")):
        folder = tmp_path / name
        arrays = make_idx_folder(folder)
        labels = starts[name] + list(arrays["train-labels-idx1-ubyte"][10:])
        write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
        assert list(load_named(name, folder).y_train[:10]) == starts[name]
        title, other_title = datasets.TITLES[name], datasets.TITLES[other]
        with pytest.raises(DatasetNotFoundError) as err:
            load_named(other, folder)
        assert str(err.value).startswith(
            f"dataset {other!r} cannot be loaded: {folder} holds {title}, not {other_title} (its training "
            f"labels begin {', '.join(map(str, starts[name][:5]))}, as {title}'s do). Load it as {name!r}, "
            f"or get {other_title} from https://")
    debian = datasets.Path("/usr/share/datasets/fashion-mnist")
    if debian.is_dir():  # the real files
        with pytest.raises(DatasetNotFoundError, match="holds Fashion-MNIST, not MNIST"):
            load_named("mnist", debian)


def test_cifar100_coarse_labels(tmp_path):
    expected = make_cifar_archive(tmp_path, "cifar100")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    for folder in (tmp_path, tmp_path / "x"):
        coarse = load_named("cifar100", folder, label_mode="coarse")
        assert list(coarse.y_test) == expected["test"][2] and list(coarse.y_train) == expected["train"][2]
        assert coarse.class_names == tuple(f"group{i}" for i in range(20))
        assert list(load_named("cifar100", folder).y_test) == expected["test"][1]
    with pytest.raises(ValueError, match="label_mode must be 'fine' .* got 'coarse' for 'cifar10'"):
        load_named("cifar10", tmp_path, label_mode="coarse")


def test_cifar_files_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"

    class Gadget:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    make_cifar_archive(tmp_path, "cifar10")  # the real files load: they need only numpy's globals
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    bad = tmp_path / "x" / "cifar-10-batches-py" / "data_batch_2"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6,
                                  b"batch_label": Gadget()}))
    with pytest.raises(DatasetDamagedError, match=r"data_batch_2 is damaged: it would load \w+\.mkdir; "
                                                  "CIFAR files hold only numpy arrays") as err:
        load_named("cifar10", tmp_path / "x")
    assert err.value.path == bad and not marker.exists()


def test_folder_split_keeps_the_copies_of_a_photo_together(tmp_path, capsys):
    from data.datasets import split_by_photo

    names = [f"{name}_{side}.png" for name in "abcdefghij" for side in (1024, 512)]
    paths = [tmp_path / n for n in [*names, "IMG_0001.png", "IMG_0002.png"]]  # two other photos

    def photos(indices):
        return {paths[i].stem.removesuffix("_1024").removesuffix("_512") for i in indices}

    train, val = split_by_photo(paths, 0.25, seed=3)
    assert sorted(train + val) == list(range(len(paths)))
    assert not photos(train) & photos(val) and len(photos(val)) == 3  # a quarter of 12 photos
    assert split_by_photo(paths, 0.25, seed=3) == (train, val)
    assert split_by_photo(paths[:2], 0.5, seed=0) == ([0, 1], [])  # one photo: nothing to hold out
    # A folder of one photo's two copies trains, and says its validation is no held-out photo.
    folder = tmp_path / "one"
    folder.mkdir()
    for side in (1024, 512):
        Image.fromarray(RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"beach_{side}.png")
    ds = load_dataset(f"folder:{folder}", patch_size=16, patches=8, val_fraction=0.5)
    assert len(ds.x_train) == 8 and len(ds.x_test) > 0
    assert "holds one usable photo, so validation scores patches of the photo it trains on" \
        in capsys.readouterr().err


def test_a_folder_is_cut_one_decoded_image_at_a_time_into_the_same_patches(tmp_path):
    import tracemalloc

    from data.datasets import load_folder_images, sample_patches, split_by_photo

    for i in range(12):
        Image.fromarray(RNG.integers(0, 256, (600, 600 + 5 * i, 3), dtype=np.uint8)).save(
            tmp_path / f"p{i:02d}.png")
    one = 600 * 655 * 3  # bytes of the largest decoded image
    tracemalloc.start()
    ds = load_dataset(f"folder:{tmp_path}", patch_size=32, patches=200, val_fraction=0.3, seed=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Never the whole folder in memory (twelve images; 16 MB at the peak when they all were):
    # one image being decoded and its copies, beside the patches.
    assert peak < 6 * one, f"peak {peak / 1e6:.1f} MB for images of {one / 1e6:.1f} MB"
    # The same patches as cutting them from every image held in memory.
    images, _ = load_folder_images(tmp_path, 3, 32)
    train, val = split_by_photo(sorted(tmp_path.glob("*.png")), 0.3, 4)
    np.testing.assert_array_equal(ds.x_train, sample_patches([images[i] for i in train], 32, 200, 4))
    np.testing.assert_array_equal(ds.x_test, sample_patches([images[i] for i in val], 32, 64, 5))
