"""Downstream classifiers on real exported feature files."""

import numpy as np
import pytest

from tests.training.representation_fixtures import save_tiny_dae, write_quadrant_dataset
from training.downstream import DownstreamConfig, evaluate, main
from training.export import FeaturesConfig, export_features


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    dae = str(save_tiny_dae(root / "dae.keras"))
    data_dir = str(write_quadrant_dataset(root / "data", n_train=400, n_test=200))
    files = {}
    for split, suffix in (("train", ".parquet"), ("test", ".npz")):
        files[split] = str(root / f"{split}{suffix}")
        export_features(FeaturesConfig(model=dae, dataset="fashion_mnist", data_dir=data_dir,
                                       split=split, out=files[split]), progress=False)
    return files


def test_classifiers_on_exported_features_beat_chance(feature_files):
    # Even an untrained encoder's features tell the quadrant classes apart (chance: 0.25).
    results = evaluate(DownstreamConfig(train=feature_files["train"], test=feature_files["test"]))
    assert results["train_rows"] == 400 and results["test_rows"] == 200
    assert results["logistic_regression"] > 0.6
    assert results["knn"] > 0.6


def test_labelled_subset_and_report(feature_files, capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(
        '{"mode": "finetune", "labels_per_class": "10", "test_accuracy": {"mean": 0.8123, "std": 0.01}}')
    assert main(["--train", feature_files["train"], "--test", feature_files["test"],
                 "--labels-per-class", "10", "--neighbors", "3", "--compare", str(run)]) == 0
    out = capsys.readouterr().out
    assert "40 labelled training rows (10 per class)" in out  # 4 classes present
    assert "k-NN (k=3)" in out and "fine-tuned: finetune, K=10" in out and "81.23 ± 1.00 %" in out


def test_features_without_labels_are_refused(tmp_path, capsys):
    path = tmp_path / "nolabels.npz"
    np.savez(path, ids=np.asarray(["a", "b"]), labels=np.asarray([-1, -1]),
             features=np.zeros((2, 3), np.float32), meta=np.asarray("{}"))
    assert main(["--train", str(path), "--test", str(path)]) == 2
    assert "2 rows without labels" in capsys.readouterr().err
