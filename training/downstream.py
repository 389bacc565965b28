"""Downstream classifiers on exported features: scikit-learn logistic regression and k-NN.

    python -m training.export features --model fashion-mnist --dataset fashion_mnist \\
        --split train --out runs/features/fmnist-train.parquet
    python -m training.export features --model fashion-mnist --dataset fashion_mnist \\
        --split test --out runs/features/fmnist-test.parquet
    python -m training.downstream --train runs/features/fmnist-train.parquet \\
        --test runs/features/fmnist-test.parquet --labels-per-class 100 \\
        --compare runs/finetune-grid/finetune-k100

Both classifiers see standardised features (``StandardScaler``). ``--labels-per-class`` draws
the same kind of class-balanced labelled subset as ``training.finetune``; ``--compare`` prints
the test accuracy of fine-tuning runs beside them. The two files must be different splits
exported with the same model file (the same content: its sha256), pooling, image size and
class names (their metadata says so). Both need labels: a dataset split's, or those of an
image folder of class folders exported with ``--labels inferred``; the report names the classes.
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
        for name in ("neighbors", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def _labelled(path: str, role: str):
    from training.export import read_features

    table = read_features(path)
    if (table.labels < 0).any():
        raise ValueError(f"{path} has {(table.labels < 0).sum()} rows without labels; "
                         f"{role} features need labels (export a dataset split, or an --images "
                         "folder of class folders with --labels inferred)")
    return table


PAIRED_META = {"model": "models", "pooling": "poolings", "image_size": "image sizes",
               "class_names": "class names"}
"""Metadata that must agree between the training and the test features, and its wording."""


def check_pair(train, test, train_path: str, test_path: str) -> None:
    """Refuses training and test features that cannot be scored against each other.

    They must be different files from different splits (``source``), exported with the same
    model, pooling, image size and classes, and have the same feature size. The model is the
    same when its file's content is (``model_sha256``: a copy elsewhere is the same model, a
    file changed between the two exports is not). A field that one file lacks (a file not
    written by ``training.export``, or by a version that did not record it) is not compared.

    Raises:
        ValueError: naming the files and the field in which they clash.
    """
    if Path(train_path).resolve() == Path(test_path).resolve():
        raise ValueError(f"--train and --test are the same file ({train_path}); "
                         "export the train and the test split to two files")
    source = train.meta.get("source")
    if source is not None and source == test.meta.get("source"):
        raise ValueError(f"--train {train_path} and --test {test_path} both hold {source}; "
                         "export the train and the test split to two files")
    both = {key: (train.meta[key], test.meta[key])
            for key in PAIRED_META if key in train.meta and key in test.meta}
    if "model_file" in train.meta and "model_file" in test.meta:  # the same model named two ways
        both["model"] = (train.meta["model_file"], test.meta["model_file"])
    digests = train.meta.get("model_sha256"), test.meta.get("model_sha256")
    if None not in digests:  # the files' content decides: a copy elsewhere is the same model
        both.pop("model", None)
        if digests[0] != digests[1]:
            files = train.meta.get("model_file"), test.meta.get("model_file")
            which = (f"versions of {files[0]} (the file changed between the two exports)"
                     if files[0] == files[1] else f"models: {files[0]!r} and {files[1]!r}")
            raise ValueError(f"--train {train_path} and --test {test_path} come from different "
                             f"{which}, sha256 {digests[0][:12]} and {digests[1][:12]} (export both "
                             "from the same model file)")
    for key, (a, b) in both.items():
        if a != b:
            fix = ("give both --images folders the same class folders" if key == "class_names"
                   else "export both with the same --model, --pooling and --image-size")
            raise ValueError(f"--train {train_path} and --test {test_path} come from different "
                             f"{PAIRED_META[key]}: {a!r} and {b!r} ({fix})")
    if train.features.shape[1] != test.features.shape[1]:
        raise ValueError(f"feature sizes differ: train {train.features.shape[1]}, "
                         f"test {test.features.shape[1]} (export both with the same model and pooling)")


def _is_number(value) -> bool:
    """A JSON number (not a string, ``null`` or ``true``/``false``): what the report formats."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compared_runs(runs) -> list[tuple[str, dict | None]]:
    """``(run, metrics)`` of each ``--compare`` folder; metrics is None for an unfinished run.

    Raises:
        ValueError: a ``metrics.json`` that is not a fine-tuning run's (no ``test_accuracy``
            mean and std that are numbers, ``mode`` or ``labels_per_class``).
    """
    compared = []
    for run in runs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            compared.append((run, None))
            continue
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--compare {run}: {path} is not valid JSON ({err})") from err
        accuracy = metrics.get("test_accuracy") if isinstance(metrics, dict) else None
        if (not isinstance(accuracy, dict) or not all(_is_number(accuracy.get(k)) for k in ("mean", "std"))
                or not {"mode", "labels_per_class"} <= set(metrics)):
            raise ValueError(f"--compare {run} is not a fine-tuning run ({path} has no numeric test "
                             "accuracy mean ± std, mode and labels per class); "
                             "give a training.finetune run folder")
        compared.append((run, metrics))
    return compared


def evaluate(config: DownstreamConfig) -> dict:
    """Fits both classifiers on the (subset of the) training features; test accuracies.

    Returns:
        ``{"logistic_regression": acc, "knn": acc, "train_rows": n, "test_rows": m,
        "neighbors": k actually used (at most the training rows), "class_names": the
        training file's (empty when it names none), ...}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = _labelled(config.train, "training"), _labelled(config.test, "test")
    check_pair(train, test, config.train, config.test)
    pick = labelled_subset(train.labels, parse_labels_per_class(config.labels_per_class), config.seed)
    x, y = train.features[pick], train.labels[pick]
    neighbors = min(config.neighbors, len(y))  # k-NN needs at least k training rows
    classifiers = {
        "logistic_regression": LogisticRegression(C=config.c, max_iter=config.max_iter),
        "knn": KNeighborsClassifier(n_neighbors=neighbors),
    }
    results = {"train_rows": int(len(y)), "test_rows": int(len(test.labels)), "neighbors": neighbors,
               "pooling": train.meta.get("pooling"), "model": train.meta.get("model"),
               "class_names": train.class_names}
    for name, classifier in classifiers.items():
        started = time.time()
        pipeline = make_pipeline(StandardScaler(), classifier).fit(x, y)
        results[name] = float(np.mean(pipeline.predict(test.features) == test.labels))
        results[f"{name}_seconds"] = round(time.time() - started, 2)
    return results


def _numbered(names, shown: int = 12) -> str:
    """``0 cat, 1 dog, ...``: the label of each class name, the first ``shown`` of them."""
    listed = ", ".join(f"{label} {name}" for label, name in enumerate(names[:shown]))
    return listed if len(names) <= shown else f"{listed}, ... ({len(names)} in all)"


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.downstream --help``."""
    config = parse_config(DownstreamConfig, __doc__.split("\n\n")[0], argv)
    try:
        compared = compared_runs(config.compare)
        results = evaluate(config)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"features of {results['model']} ({results['pooling']} pooling): {results['train_rows']} "
          f"labelled training rows ({config.labels_per_class} per class), {results['test_rows']} test rows")
    if results["class_names"]:
        print(f"classes: {_numbered(results['class_names'])}")
    print(f"{'classifier':<34} test accuracy")
    print(f"{'logistic regression':<34} {100 * results['logistic_regression']:6.2f} %")
    knn = f"k-NN (k={results['neighbors']})"
    print(f"{knn:<34} {100 * results['knn']:6.2f} %")
    for run, metrics in compared:
        if metrics is None:
            print(f"{run}: no metrics.json (not a finished fine-tuning run)", file=sys.stderr)
            continue
        acc = metrics["test_accuracy"]
        label = f"fine-tuned: {metrics['mode']}, K={metrics['labels_per_class']}"
        print(f"{label:<34} {100 * acc['mean']:6.2f} ± {100 * acc['std']:.2f} %")
    if any(metrics for _, metrics in compared):
        print(f"note: the classifiers fit one labelled subset (seed {config.seed}) of the whole "
              "training file; a fine-tuning run gives mean ± std over its seeds' subsets of the "
              "training split less its validation share")
    return 0


if __name__ == "__main__":
    sys.exit(main())
