"""Feature tables and encoder exports: real files written, read back and compared."""

import errno
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data.datasets import load_named
from tests.training.representation_fixtures import save_tiny_dae, write_quadrant_dataset
from training import downstream
from training.export import (
    EncoderConfig,
    FeaturesConfig,
    export_encoder,
    export_features,
    features_model,
    load_exported,
    load_for_model,
    main,
    read_features,
)

TOLERANCE = {"keras": 1e-6, "savedmodel": 1e-6, "onnx": 1e-5, "tflite": 1e-5}


@pytest.fixture(scope="module")
def dae(tmp_path_factory):
    return str(save_tiny_dae(tmp_path_factory.mktemp("model") / "dae.keras"))


@pytest.fixture
def mixed_folder(tmp_path):
    """Readable images of many formats and depths, beside files that are not images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / "colour.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / "grey.jpg", quality=95)
    Image.fromarray(rng.integers(0, 65536, (20, 12), dtype=np.uint16)).save(root / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8)).save(root / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(root / "nested" / "a.bmp")
    Image.fromarray(rng.integers(0, 256, (10, 14), dtype=np.uint8)).save(root / "nested" / "deeper" / "b.tif")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "c.webp", lossless=True)
    (root / "notes.png").write_text("this is text, not a PNG")
    (root / "empty.jpg").write_bytes(b"")
    good = (root / "grey.jpg").read_bytes()
    (root / "nested" / "cut.jpg").write_bytes(good[: len(good) // 3])
    (root / "readme.txt").write_text("not an image suffix: never looked at")
    readable = ["alpha.png", "c.webp", "colour.png", "deep16.png", "grey.jpg", "nested/a.bmp",
                "nested/deeper/b.tif"]
    return root, readable, ["empty.jpg", "nested/cut.jpg", "notes.png"]


def write_class_folders(root: Path, per_class: int, seed: int = 0) -> dict[str, int]:
    """Tiny grey PNGs in the class folders ``dark`` and ``bright`` (``dark`` written first, so
    the labels follow the sorted names, not the order on disk), the first of each class a
    folder deeper. Returns ``{id: label}``: bright 0, dark 1."""
    rng = np.random.default_rng(seed)
    expected = {}
    for name, low, label in (("dark", 0, 1), ("bright", 170, 0)):
        for i in range(per_class):
            rel = f"{name}/more/{i}.png" if i == 0 else f"{name}/{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(low, low + 80, (8, 8), dtype=np.uint8)).save(root / rel)
            expected[rel] = label
    return expected


EXPORT_NAMES = {"keras": "enc.keras", "savedmodel": "enc_savedmodel", "onnx": "enc.onnx",
                "tflite": "enc.tflite"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dae):
    """``exported(fmt)``: the path of the one export of ``dae``'s encoder in ``fmt`` (average
    pooling, any size), written into a folder of its own the first time it is asked for."""
    folder, paths = tmp_path_factory.mktemp("exports"), {}

    def get(fmt):
        if fmt not in paths:
            config = EncoderConfig(model=dae, format=fmt, out=str(folder / EXPORT_NAMES[fmt]))
            paths[fmt] = export_encoder(config)
            assert not list(folder.glob(".*partial*"))
        return paths[fmt]

    return get


@pytest.mark.parametrize("fmt", list(EXPORT_NAMES))
def test_every_export_reloads_to_the_same_features(dae, exported, fmt):
    out = exported(fmt)
    card = json.loads(out.with_name(out.name + ".json").read_text())
    assert card["output"]["shape"] == [None, 8] and card["input"]["range"] == [0.0, 1.0]
    original = features_model(dae)
    reloaded = load_exported(out)
    for shape in [(3, 8, 8, 1), (2, 16, 12, 1)]:  # batch and image size are free
        x = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
        expected = np.asarray(original(x))
        got = reloaded(x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=TOLERANCE[fmt], rtol=1e-5)


def test_export_of_a_flattened_code_fixes_the_size(tmp_path, dae):
    # TFLite: the format that fixes every shape at conversion.
    out = export_encoder(EncoderConfig(model=dae, format="tflite", pooling="flatten", image_size=8,
                                       out=str(tmp_path / "flat.tflite")))
    x = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)
    expected = np.asarray(features_model(dae, "flatten", 8)(x))
    assert expected.shape == (2, 2 * 2 * 8)
    assert json.loads((tmp_path / "flat.tflite.json").read_text())["output"]["shape"] == [None, 2 * 2 * 8]
    np.testing.assert_allclose(load_exported(out)(x), expected, atol=1e-5)


def test_an_existing_export_is_kept(tmp_path, dae, capsys):
    out = tmp_path / "enc.keras"
    out.write_bytes(b"precious")
    assert main(["encoder", "--model", dae, "--format", "keras", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["encoder", "--model", dae, "--format", "keras", "--out", str(out), "--overwrite"]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_folder_export_has_a_row_per_readable_image_and_reports_the_rest(tmp_path, dae, mixed_folder,
                                                                          suffix, capsys):
    root, readable, unreadable = mixed_folder
    out = tmp_path / f"features{suffix}"
    assert main(["features", "--model", dae, "--images", str(root), "--image-size", "8",
                 "--batch-size", "3", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {len(readable)} rows of 8 features (avg pooling)" in captured.out
    assert f"skipped {len(unreadable)} unreadable file(s)" in captured.err
    for name in unreadable:
        assert str(root / name) in captured.err
    table = read_features(out)
    assert list(table.ids) == readable
    assert (table.labels == -1).all()
    assert table.meta["skipped"] == len(unreadable) and table.meta["pooling"] == "avg"
    # Each row is the encoder's features of that file, as the model input conversion makes it.
    extractor = features_model(dae, "avg", 8)
    expected = np.asarray(extractor(np.stack([load_for_model(root / n, 1, 8) for n in readable])))
    np.testing.assert_allclose(table.features, expected, atol=1e-6)
    if suffix == ".parquet":
        assert pq.ParquetFile(out).metadata.num_row_groups == 3  # written in chunks of 3 images
        assert pq.read_table(out).column("label").null_count == len(readable)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["images", out.name])  # no scratch


@pytest.mark.parametrize("out_name,layout", [("f.npz", "list"), ("f.parquet", "list"), ("f.parquet", "wide")])
def test_labels_inferred_labels_images_by_their_class_folder(tmp_path, dae, out_name, layout):
    root = tmp_path / "photos"
    expected = write_class_folders(root, per_class=3)
    out = tmp_path / out_name
    assert main(["features", "--model", dae, "--images", str(root), "--image-size", "8",
                 "--labels", "inferred", "--layout", layout, "--out", str(out)]) == 0
    table = read_features(out)
    assert dict(zip(table.ids, table.labels.tolist(), strict=True)) == expected
    assert table.class_names == table.meta["class_names"] == ["bright", "dark"]
    assert table.features.shape == (6, 8) and table.features.dtype == np.float32


def test_labelled_folder_features_train_the_downstream_classifiers(tmp_path, dae, capsys):
    files = {}
    for split, per_class, out_name, layout in (("train", 4, "train.parquet", "wide"),
                                               ("test", 3, "test.npz", "list"),
                                               ("test_one_class", 2, "one.npz", "list")):
        root = tmp_path / split
        write_class_folders(root, per_class, seed=len(files))
        if split == "test_one_class":
            shutil.rmtree(root / "dark")
        files[split] = str(tmp_path / out_name)
        assert main(["features", "--model", dae, "--images", str(root), "--image-size", "8",
                     "--labels", "inferred", "--layout", layout, "--out", files[split]]) == 0
    capsys.readouterr()
    assert downstream.main(["--train", files["train"], "--test", files["test"],
                            "--labels-per-class", "2", "--neighbors", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 labelled training rows (2 per class), 6 test rows" in out
    assert "classes: 0 bright, 1 dark" in out
    assert out.splitlines()[-2:] == [f"{'logistic regression':<34} 100.00 %",  # brightness is
                                     f"{'k-NN (k=1)':<34} 100.00 %"]       # all it takes
    assert downstream.main(["--train", files["train"], "--test", files["test_one_class"]]) == 2
    assert ("come from different class names: ['bright', 'dark'] and ['bright'] (give both --images "
            "folders the same class folders)") in capsys.readouterr().err


def test_downstream_pairs_exports_by_folder_and_image_size_not_by_how_they_were_spelled(
        tmp_path, dae, monkeypatch, capsys):
    data_dir = write_quadrant_dataset(tmp_path / "data", n_train=40, n_test=20)
    data = load_named("mnist", data_dir)
    root = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(data.x_test, data.y_test, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / str(label) / f"{i}.png")
    for digit in range(10):  # every class folder, so that the class names are MNIST's
        (root / str(digit)).mkdir(exist_ok=True)
        Image.fromarray(data.x_test[0, ..., 0]).save(root / str(digit) / "extra.png")

    def export(out, *args):
        assert main(["features", "--model", dae, "--out", str(tmp_path / out), *args]) == 0
        return str(tmp_path / out)

    train = export("train.npz", "--dataset", "mnist", "--data-dir", str(data_dir), "--split", "train")
    folder = export("folder.npz", "--images", str(root), "--labels", "inferred", "--image-size", "8")
    assert read_features(train).meta["image_size"] == read_features(folder).meta["image_size"] == 8
    assert read_features(folder).meta["source"] == str(root.resolve())
    capsys.readouterr()
    assert downstream.main(["--train", train, "--test", folder, "--neighbors", "1"]) == 0
    assert "40 labelled training rows" in capsys.readouterr().out

    monkeypatch.chdir(tmp_path)  # the same folder spelled another way is the same images
    again = export("again.npz", "--images", "digits/", "--labels", "inferred", "--image-size", "8")
    assert downstream.main(["--train", folder, "--test", again]) == 2
    assert f"both hold {root.resolve()}" in capsys.readouterr().err
    other = tmp_path / "other"  # and another folder under the same name is not
    shutil.copytree(root, other / "digits")
    monkeypatch.chdir(other)
    elsewhere = export("elsewhere.npz", "--images", "digits", "--labels", "inferred", "--image-size", "8")
    assert downstream.main(["--train", elsewhere, "--test", again, "--neighbors", "1"]) == 0


def test_labels_inferred_refuses_images_outside_class_folders_up_front(tmp_path, dae, monkeypatch, capsys):
    import training.export

    root = tmp_path / "photos"
    write_class_folders(root, per_class=1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "loose.png")
    monkeypatch.setattr(training.export, "features_model", lambda *args: pytest.fail("model loaded"))
    out = tmp_path / "f.npz"
    assert main(["features", "--model", dae, "--images", str(root), "--image-size", "8",
                 "--labels", "inferred", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --labels inferred takes each image's class from its folder, {root}/CLASS/..., but "
        f"1 image(s) lie directly in {root}, outside any class folder (the first: {root / 'loose.png'}); "
        "move them into class folders, or leave out --labels")
    assert not out.exists()


def test_wide_layout_has_a_column_per_feature_and_reads_back_the_same(tmp_path, dae, mixed_folder):
    pd = pytest.importorskip("pandas")
    root, readable, _ = mixed_folder
    tables = {}
    for layout in ("list", "wide"):
        out = tmp_path / f"{layout}.parquet"
        export_features(FeaturesConfig(model=dae, images=str(root), image_size=8, batch_size=3,
                                       layout=layout, out=str(out)), progress=False)
        tables[layout] = read_features(out)
    wide, listed = pd.read_parquet(tmp_path / "wide.parquet"), pd.read_parquet(tmp_path / "list.parquet")
    assert list(wide.columns) == ["id", "label", *[f"f{i}" for i in range(8)]]
    assert list(tables["wide"].ids) == readable and (tables["wide"].labels == -1).all()
    np.testing.assert_array_equal(tables["wide"].features, tables["list"].features)
    # The pandas one-liners of docs/representations.md, for either layout.
    np.testing.assert_array_equal(np.stack(listed["features"]), tables["list"].features)
    np.testing.assert_array_equal(wide.filter(regex=r"^f\d+$").to_numpy(), tables["list"].features)


def test_loading_for_the_model_converts_depth_channels_and_size(mixed_folder):
    root, _, _ = mixed_folder
    deep = load_for_model(root / "deep16.png", 3, 8)
    assert deep.shape == (8, 8, 3) and deep.dtype == np.float32
    assert 0.0 <= deep.min() and deep.max() <= 1.0 and deep.std() > 0.05  # 16 bits scaled, not clipped
    assert load_for_model(root / "colour.png", 1, 8).shape == (8, 8, 1)


def test_dataset_export_keeps_ids_and_labels(tmp_path, dae):
    data_dir = write_quadrant_dataset(tmp_path / "data", n_train=50, n_test=30)
    out = tmp_path / "test.parquet"
    summary = export_features(FeaturesConfig(model=dae, dataset="fashion_mnist", data_dir=str(data_dir),
                                             split="test", limit=25, batch_size=10, out=str(out)),
                              progress=False)
    assert summary.rows == 25 and summary.skipped == []
    table = read_features(out)
    data = load_named("fashion_mnist", data_dir)
    assert list(table.ids) == [f"test/{i}" for i in range(25)]
    np.testing.assert_array_equal(table.labels, data.y_test[:25])
    expected = np.asarray(features_model(dae)(data.x_test[:25].astype(np.float32) / 255.0))
    np.testing.assert_allclose(table.features, expected, atol=1e-6)
    assert table.meta["source"] == "fashion_mnist:test"
    assert table.meta["model_file"] == str(Path(dae).resolve())  # how downstream tells models apart


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_an_interrupted_export_leaves_no_file_open_or_behind(tmp_path, dae, monkeypatch, suffix):
    import training.export

    real, calls = training.export._features, []

    def interrupted_on_the_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:  # the writer and the .npz's scratch array exist by now
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(training.export, "_features", interrupted_on_the_second_batch)
    data_dir = write_quadrant_dataset(tmp_path / "data", n_train=20, n_test=30)
    out = tmp_path / f"test{suffix}"
    with pytest.raises(KeyboardInterrupt) as interrupted:
        export_features(FeaturesConfig(model=dae, dataset="fashion_mnist", data_dir=str(data_dir),
                                       batch_size=10, out=str(out)), progress=False)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no output, partial or scratch
    if Path("/proc/self/fd").is_dir():  # the writer is closed even while the traceback holds it
        held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.islink(f"/proc/self/fd/{fd}")]
        assert not [link for link in held if link.startswith(str(tmp_path))], held
    del interrupted


def test_a_folder_without_readable_images_writes_nothing(tmp_path, dae, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    out = tmp_path / "f.npz"
    assert main(["features", "--model", dae, "--images", str(tmp_path / "bad"), "--image-size", "8",
                 "--out", str(out)]) == 2
    assert "no readable images" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


@pytest.mark.parametrize("args,message", [
    (["--dataset", "fashion_mnist", "--images", "x", "--out", "f.npz"],
     "exactly one of --dataset or --images"),
    (["--dataset", "fashion_mnist", "--out", "f.csv"], "must end in .parquet or .npz, got 'f.csv'"),
    (["--dataset", "fashion_mnist", "--image-size", "32", "--out", "f.npz"],
     "--image-size resizes --images folders only; a --dataset keeps its own size, "
     "got --image-size 32 with --dataset fashion_mnist"),
    (["--dataset", "fashion_mnist", "--labels", "inferred", "--out", "f.npz"],
     "--labels inferred takes labels from the class folders of --images; "
     "--dataset fashion_mnist has its own labels"),
    (["--images", "x", "--split", "train", "--out", "f.npz"],
     "--split goes with --dataset; --images x is a folder of its own: leave it out, or give --dataset"),
    (["--images", "x", "--data-dir", "d", "--split", "test", "--out", "f.npz"],
     "--split and --data-dir go with --dataset; --images x is a folder of its own: leave them out"),
    (["--images", "x", "--layout", "wide", "--out", "f.npz"],
     "--layout wide writes Parquet columns f0..fD-1; it needs --out NAME.parquet, got 'f.npz'"),
])
def test_bad_feature_options_are_explained(args, message, capsys):
    with pytest.raises(SystemExit):
        main(["features", *args])
    assert message in capsys.readouterr().err


def test_bad_encoder_options_are_explained(capsys):
    with pytest.raises(SystemExit):
        main(["encoder", "--format", "onnx", "--out", "enc.tflite"])
    assert "--format onnx needs --out a path ending in .onnx, got 'enc.tflite'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["encoder", "--format", "keras", "--pooling", "flatten", "--out", "e.keras"])
    assert "--pooling flatten needs --image-size" in capsys.readouterr().err


def test_overwrite_replaces_only_a_savedmodel_folder(tmp_path, dae, exported, capsys):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "notes.txt").write_text("precious")
    args = ["encoder", "--model", dae, "--format", "savedmodel", "--overwrite"]
    assert main([*args, "--out", str(exports)]) == 2
    assert "is not a SavedModel folder (no saved_model.pb)" in capsys.readouterr().err
    assert (exports / "notes.txt").read_text() == "precious"
    folder = tmp_path / "enc.keras"  # a folder where a file export goes is never replaced either
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    assert main(["encoder", "--model", dae, "--format", "keras", "--out", str(folder), "--overwrite"]) == 2
    assert "is a folder; --overwrite only replaces a file" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "precious"
    saved = tmp_path / "enc"  # an earlier export, with a file it does not write
    shutil.copytree(exported("savedmodel"), saved)
    (saved / "stale").write_text("from the old export")
    assert main([*args, "--out", str(saved)]) == 0  # a SavedModel is replaced whole
    assert (saved / "saved_model.pb").is_file() and not (saved / "stale").exists()


def test_out_that_is_the_model_being_read_is_refused(tmp_path, dae, capsys):
    model = tmp_path / "dae.keras"
    model.write_bytes(open(dae, "rb").read())
    before = model.read_bytes()
    assert main(["encoder", "--model", str(model), "--format", "keras", "--out", str(model),
                 "--overwrite"]) == 2
    assert f"--out {model} would replace the model being read" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_features_out_under_a_regular_file_is_a_clear_error(tmp_path, dae, mixed_folder, capsys):
    root, _, _ = mixed_folder
    afile = tmp_path / "afile"
    afile.write_text("precious")
    assert main(["features", "--model", dae, "--images", str(root), "--image-size", "8",
                 "--out", str(afile / "sub" / "f.npz")]) == 2
    message = f"cannot write {afile / 'sub' / 'f.npz'}: {afile} is a file, not a folder"
    assert message in capsys.readouterr().err
    assert afile.read_text() == "precious"


def test_a_card_beside_a_new_export_is_kept_unless_overwrite(tmp_path, dae, capsys):
    out = tmp_path / "enc.keras"
    card = tmp_path / "enc.keras.json"
    card.write_text("my notes")
    args = ["encoder", "--model", dae, "--format", "keras", "--out", str(out)]
    assert main(args) == 2
    assert f"{card} exists; pass --overwrite" in capsys.readouterr().err
    assert card.read_text() == "my notes" and not out.exists()
    assert main([*args, "--overwrite"]) == 0 and json.loads(card.read_text())["format"] == "keras"


def test_flattened_dataset_features_take_the_dataset_size_and_a_missing_exporter_is_named(
        tmp_path, dae, monkeypatch, capsys):
    data_dir = write_quadrant_dataset(tmp_path / "data", n_train=20, n_test=12)
    out = tmp_path / "flat.npz"
    assert main(["features", "--model", dae, "--dataset", "fashion_mnist", "--data-dir", str(data_dir),
                 "--pooling", "flatten", "--out", str(out)]) == 0
    table = read_features(out)
    side = load_named("fashion_mnist", data_dir).x_test.shape[1]
    code = np.asarray(features_model(dae, "flatten", side)(np.zeros((1, side, side, 1), np.float32)))
    assert table.features.shape == (12, code.shape[-1]) and code.shape[-1] > 8  # a map, not a pool
    # As if tf2onnx were not installed (Keras imports it on first use and keeps it).
    from keras.src.utils import module_utils

    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    monkeypatch.setattr(module_utils.tf2onnx, "module", None)
    capsys.readouterr()
    assert main(["encoder", "--model", dae, "--format", "onnx", "--out", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "tf2onnx" in err and err.count("\n") == 1, err
    assert not (tmp_path / "e.onnx").exists()


@pytest.mark.parametrize("config,trained_on", [
    ({"dataset": "fashion_mnist"}, {"dataset": "fashion_mnist", "image_size": 28}),
    ({"dataset": "folder:/photos", "patch_size": 48},
     {"dataset": "folder:/photos", "image_size": 48, "patch_size": 48}),
])
def test_the_encoder_card_states_the_size_the_model_was_trained_at(tmp_path, dae, config, trained_on):
    run = tmp_path / "run"  # a pretraining run folder: its config says what it was trained on
    run.mkdir()
    (run / "model.keras").write_bytes(Path(dae).read_bytes())
    (run / "config.json").write_text(json.dumps(config))
    out = export_encoder(EncoderConfig(model=str(run), format="keras", out=str(tmp_path / "enc.keras")))
    card = json.loads((tmp_path / "enc.keras.json").read_text())
    assert card["source_sha256"] == hashlib.sha256(Path(dae).read_bytes()).hexdigest()
    note = card["trained_on"].pop("note")
    assert card["trained_on"] == trained_on and out.is_file()
    if "patch_size" in trained_on:
        assert note == ("trained on 48x48 patches cut from the folder's images; features of other "
                        "sizes differ, and training.export features --images resizes whole images "
                        "to 48x48")
    else:
        assert "features of images of another size differ from those at 28x28" in note


@pytest.mark.parametrize("command,out_name,target", [
    ("features", "f.npz", "training.export.NpzFeatureWriter.close"),
    ("features", "f.parquet", "training.export.ParquetFeatureWriter.write"),
    ("encoder", "enc.keras", "training.export.atomic_write_json"),  # the card, written last
])
def test_a_full_disk_is_reported_without_a_traceback(tmp_path, dae, mixed_folder, monkeypatch, capsys,
                                                    command, out_name, target):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(target, no_space)
    root, _, _ = mixed_folder
    out = tmp_path / "out" / out_name
    args = (["--images", str(root), "--image-size", "8"] if command == "features"
            else ["--format", "keras"])
    assert main([command, "--model", dae, *args, "--out", str(out)]) == 2
    written = out if command == "features" else out.with_name(out.name + ".json")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot write {written}: No space left on device")
    assert list((tmp_path / "out").iterdir()) == []  # no partial file, no export without its card
