"""Downstream classifiers on real exported feature files."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from tests.training.representation_fixtures import save_tiny_dae, write_quadrant_dataset
from training.downstream import DownstreamConfig, evaluate, main
from training.export import FeaturesConfig, export_features, read_features


@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    dae = str(save_tiny_dae(root / "dae.keras"))
    data_dir = str(write_quadrant_dataset(root / "data", n_train=400, n_test=200))
    other = str(save_tiny_dae(root / "other.keras", seed=1))  # same shapes, other weights
    files = {}
    for name, split, model, pooling in (
            ("train", "train", dae, "avg"), ("test", "test", dae, "avg"),
            ("test_same_model_other_path", "test", f"{root}/./dae.keras", "avg"),
            ("test_max_pooling", "test", dae, "max"), ("test_other_model", "test", other, "avg")):
        files[name] = str(root / f"{name}{'.parquet' if name == 'train' else '.npz'}")
        export_features(FeaturesConfig(model=model, dataset="fashion_mnist", data_dir=data_dir,
                                       split=split, pooling=pooling, out=files[name]), progress=False)
    files["train_copy"] = str(root / "train_copy.parquet")
    shutil.copyfile(files["train"], files["train_copy"])
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
    # The two kinds of number are not alike, and the report says so.
    assert ("note: the classifiers fit one labelled subset (seed 0) of the whole training file; a "
            "fine-tuning run gives mean ± std over its seeds' subsets") in out


def test_the_report_numbers_the_classes_by_their_names(feature_files, capsys):
    assert main(["--train", feature_files["train"], "--test", feature_files["test"],
                 "--labels-per-class", "1"]) == 0
    assert ("classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, "
            "7 Sneaker, 8 Bag, 9 Ankle boot\n") in capsys.readouterr().out


def test_knn_reports_the_k_it_used(feature_files, capsys):
    assert main(["--train", feature_files["train"], "--test", feature_files["test"],
                 "--labels-per-class", "1", "--neighbors", "5"]) == 0
    out = capsys.readouterr().out
    assert "4 labelled training rows" in out and "k-NN (k=4)" in out  # capped at the 4 rows
    assert "k=5" not in out


FINETUNE_METRICS = {"mode": "finetune", "labels_per_class": "10"}


@pytest.mark.parametrize("metrics", [
    {"val_loss": [0.01], "psnr": {"gaussian:0.1": 28.0}},  # a pretraining run's
    {"seed": 0, "test_accuracy": 0.8, "val_accuracy": 0.8},  # one seed's, inside a fine-tuning run
    # Hand-edited: mean and std that the report could not print as percentages.
    {**FINETUNE_METRICS, "test_accuracy": {"mean": "0.81", "std": 0.01}},
    {**FINETUNE_METRICS, "test_accuracy": {"mean": 0.81, "std": None}},
    {**FINETUNE_METRICS, "test_accuracy": {"mean": True, "std": 0.0}},
    {**FINETUNE_METRICS, "test_accuracy": {"mean": [0.81], "std": 0.01}},
])
def test_compare_with_a_run_that_is_not_fine_tuning_is_refused(feature_files, tmp_path, capsys, metrics):
    run = tmp_path / "pretrain-run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["--train", feature_files["train"], "--test", feature_files["test"],
                 "--compare", str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"error: --compare {run} is not a fine-tuning run ({run / 'metrics.json'} has no numeric test "
        "accuracy mean ± std, mode and labels per class); give a training.finetune run folder")
    assert captured.out == ""  # refused before any classifier is fitted


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_max_iter_below_one_is_refused(feature_files, capsys, value):
    # 0 iterations would report the accuracy of a logistic regression that was never fitted.
    with pytest.raises(SystemExit) as exit_info:
        main(["--train", feature_files["train"], "--test", feature_files["test"], "--max-iter", value])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].endswith(f"error: --max-iter must be >= 1, got {value}")
    assert "Traceback" not in captured.err and captured.out == ""
    with pytest.raises(ValueError, match=f"--max-iter must be >= 1, got {value}"):
        DownstreamConfig(train=feature_files["train"], test=feature_files["test"], max_iter=int(value))


@pytest.mark.parametrize("test,message", [
    ("train", "--train and --test are the same file ({train}); export the train and the test split"),
    ("train_copy", "--train {train} and --test {train_copy} both hold fashion_mnist:train; "
                   "export the train and the test split to two files"),
    ("test_max_pooling", "--train {train} and --test {test_max_pooling} come from different poolings: "
                         "'avg' and 'max' (export both with the same --model, --pooling and --image-size)"),
    ("test_other_model", "--train {train} and --test {test_other_model} come from different models: "),
])
def test_a_train_test_pair_that_does_not_match_is_refused(feature_files, capsys, test, message):
    # Each of these has the same feature size as the training file, so only the metadata tells.
    assert main(["--train", feature_files["train"], "--test", feature_files[test]]) == 2
    err = capsys.readouterr().err
    assert message.format(**feature_files) in err and len(err.strip().splitlines()) == 1


def test_the_same_model_named_two_ways_is_one_model(feature_files):
    results = evaluate(DownstreamConfig(train=feature_files["train"],
                                        test=feature_files["test_same_model_other_path"]))
    assert results["logistic_regression"] > 0.6


def test_features_without_labels_are_refused(tmp_path, capsys):
    path = tmp_path / "nolabels.npz"
    np.savez(path, ids=np.asarray(["a", "b"]), labels=np.asarray([-1, -1]),
             features=np.zeros((2, 3), np.float32), meta=np.asarray("{}"))
    assert main(["--train", str(path), "--test", str(path)]) == 2
    assert ("2 rows without labels; training features need labels (export a dataset split, or an "
            "--images folder of class folders with --labels inferred)") in capsys.readouterr().err


def test_models_are_told_apart_by_content_not_by_path(tmp_path, capsys):
    data_dir = str(write_quadrant_dataset(tmp_path / "data", n_train=80, n_test=40))
    model, copy = tmp_path / "dae.keras", tmp_path / "copy" / "dae.keras"
    save_tiny_dae(model)
    copy.parent.mkdir()
    shutil.copyfile(model, copy)

    def export(source, split, name):
        out = str(tmp_path / name)
        export_features(FeaturesConfig(model=str(source), dataset="fashion_mnist", data_dir=data_dir,
                                       split=split, out=out), progress=False)
        return out

    train = export(model, "train", "train.npz")
    assert read_features(train).meta["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # The same file at another path is the same model.
    assert main(["--train", train, "--test", export(copy, "test", "copy-test.npz")]) == 0
    capsys.readouterr()
    # The model at the same path, retrained in place (same shapes, other weights), is not.
    save_tiny_dae(model, seed=1)
    assert main(["--train", train, "--test", export(model, "test", "test.npz")]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: --train {train} and --test {tmp_path / 'test.npz'} come from different versions of "
        f"{model.resolve()} (the file changed between the two exports), sha256 ")


@pytest.mark.parametrize("name,content", [
    ("junk.npz", b"not an archive"),  # np.load would take it for a pickle
    ("empty-zip.npz", None),  # a zip archive without the arrays
    ("junk.parquet", b"not parquet"),
])
def test_a_file_that_is_not_a_feature_file_is_named_so(feature_files, tmp_path, capsys, name, content):
    path = tmp_path / name
    if content is None:
        np.savez(path, other=np.zeros(3))
    else:
        path.write_bytes(content)
    assert main(["--train", feature_files["train"], "--test", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is not a feature file") and len(err.strip().splitlines()) == 1
