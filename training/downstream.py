"""Downstream classifiers on exported features: scikit-learn logistic regression and k-NN.

    python -m training.export features --model fashion-mnist --dataset fashion_mnist \\
        --split train --out features/train.parquet
    python -m training.export features --model fashion-mnist --dataset fashion_mnist \\
        --split test --out features/test.parquet
    python -m training.downstream --train features/train.parquet --test features/test.parquet \\
        --labels-per-class 100 --compare runs/finetune-grid/finetune-k100

Both classifiers see standardised features (``StandardScaler``). ``--labels-per-class`` draws
the same kind of class-balanced labelled subset as ``training.finetune``; ``--compare`` prints
the test accuracy of fine-tuning runs beside them.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import field
from pathlib import Path

import numpy as np

from training.cli import parse_config
from training.finetune import labelled_subset, parse_labels_per_class


@dataclasses.dataclass(frozen=True)
class DownstreamConfig:
    """Options of ``python -m training.downstream``."""

    train: str = field(default="", metadata={"help": "features of the training split (.parquet/.npz)"})
    test: str = field(default="", metadata={"help": "features of the test split (.parquet/.npz)"})
    labels_per_class: str = field(default="all", metadata={
        "help": "labelled training rows per class (class-balanced, seeded), or 'all'"})
    seed: int = field(default=0, metadata={"help": "seeds the labelled subset"})
    neighbors: int = field(default=5, metadata={"help": "k of the k-NN classifier"})
    c: float = field(default=1.0, metadata={"help": "inverse L2 strength of the logistic regression"})
    max_iter: int = field(default=1000, metadata={"help": "iterations of the logistic regression"})
    compare: tuple[str, ...] = field(default=(), metadata={
        "flag": "compare", "help": "fine-tuning run folders whose test accuracy to print alongside"})

    def __post_init__(self):
        parse_labels_per_class(self.labels_per_class)
        if not self.train or not self.test:
            raise ValueError(f"--train and --test are both needed, got {self.train!r} and {self.test!r}")
        if self.neighbors < 1:
            raise ValueError(f"--neighbors must be >= 1, got {self.neighbors}")


def _labelled(path: str, role: str):
    from training.export import read_features

    table = read_features(path)
    if (table.labels < 0).any():
        raise ValueError(f"{path} has {(table.labels < 0).sum()} rows without labels; "
                         f"{role} features need labels (export a dataset split)")
    return table


def evaluate(config: DownstreamConfig) -> dict:
    """Fits both classifiers on the (subset of the) training features; test accuracies.

    Returns:
        ``{"logistic_regression": acc, "knn": acc, "train_rows": n, "test_rows": m, ...}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = _labelled(config.train, "training"), _labelled(config.test, "test")
    if train.features.shape[1] != test.features.shape[1]:
        raise ValueError(f"feature sizes differ: train {train.features.shape[1]}, "
                         f"test {test.features.shape[1]} (export both with the same model and pooling)")
    pick = labelled_subset(train.labels, parse_labels_per_class(config.labels_per_class), config.seed)
    x, y = train.features[pick], train.labels[pick]
    classifiers = {
        "logistic_regression": LogisticRegression(C=config.c, max_iter=config.max_iter),
        "knn": KNeighborsClassifier(n_neighbors=min(config.neighbors, len(y))),
    }
    results = {"train_rows": int(len(y)), "test_rows": int(len(test.labels)),
               "pooling": train.meta.get("pooling"), "model": train.meta.get("model")}
    for name, classifier in classifiers.items():
        started = time.time()
        pipeline = make_pipeline(StandardScaler(), classifier).fit(x, y)
        results[name] = float(np.mean(pipeline.predict(test.features) == test.labels))
        results[f"{name}_seconds"] = round(time.time() - started, 2)
    return results


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.downstream --help``."""
    config = parse_config(DownstreamConfig, __doc__.split("\n\n")[0], argv)
    try:
        results = evaluate(config)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"features of {results['model']} ({results['pooling']} pooling): {results['train_rows']} "
          f"labelled training rows ({config.labels_per_class} per class), {results['test_rows']} test rows")
    print(f"{'classifier':<34} test accuracy")
    print(f"{'logistic regression':<34} {100 * results['logistic_regression']:6.2f} %")
    print(f"{f'k-NN (k={config.neighbors})':<34} {100 * results['knn']:6.2f} %")
    for run in config.compare:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            print(f"{run}: no metrics.json (not a finished fine-tuning run)", file=sys.stderr)
            continue
        metrics = json.loads(path.read_text())
        acc = metrics["test_accuracy"]
        label = f"fine-tuned: {metrics['mode']}, K={metrics['labels_per_class']}"
        print(f"{label:<34} {100 * acc['mean']:6.2f} ± {100 * acc['std']:.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
