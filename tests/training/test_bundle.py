import json
import shutil

from models.registry import BUNDLED_DIR
from training.bundle import cards_table, pretrain_command
from training.pretrain import PretrainConfig


def test_table_is_made_from_the_cards(tmp_path):
    card = json.loads((BUNDLED_DIR / "fashion-mnist.json").read_text())
    shutil.copy(BUNDLED_DIR / "fashion-mnist.keras", tmp_path / "fashion-mnist.keras")
    card["scores"]["psnr"]["gaussian:0.1"]["denoised_psnr"] = 31.234
    (tmp_path / "fashion-mnist.json").write_text(json.dumps(card))
    table = cards_table(tmp_path)
    assert "| `fashion-mnist` |" in table and f"{card['parameters']:,}" in table
    assert "21.62 → **31.23**" in table  # the card's numbers, as they are
    assert table.count("\n|---") == 2  # one model table, one score table


def test_command_names_the_backend_that_trained_the_model():
    config = PretrainConfig(dataset="folder:/data/photos", epochs=3, out="runs/p")
    plain = pretrain_command(config)
    assert plain.startswith("python -m training.pretrain --dataset folder:/data/photos")
    assert "--epochs 3" in plain and "--out runs/p" in plain
    assert pretrain_command(config, "jax") == "KERAS_BACKEND=jax " + plain


def test_photo_card_scores_are_the_photo_benchmarks(tmp_path):
    """A photo model's card and ``training.benchmark --images`` score the same noise the same way."""
    from PIL import Image
    from skimage import data as samples

    from models.registry import load_model
    from training import benchmark
    from training.bundle import test_scores

    test, tune = tmp_path / "test", tmp_path / "tune"
    test.mkdir()
    tune.mkdir()
    Image.fromarray(samples.astronaut()[40:136, 200:296]).save(test / "a.png")
    Image.fromarray(samples.chelsea()[100:164, 150:230]).save(test / "b.png")
    Image.fromarray(samples.coffee()[100:164, 200:280]).save(tune / "t.png")
    card = test_scores(load_model("photo"), None, str(test), 0)
    out = tmp_path / "bench.json"
    assert benchmark.main(["--images", str(test), "--tune-image", str(tune / "t.png"), "--model", "photo",
                           "--contender", "median3", "--tune-crop", "48", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert card["images"] == 2
    assert set(card["psnr"]) == {"gaussian:15/255", "gaussian:25/255", "gaussian:50/255"}
    for label, scores in card["psnr"].items():
        results = report["results"][label]
        assert scores["noisy_psnr"] == round(results["noisy"]["psnr"], 3)
        assert scores["denoised_psnr"] == round(results["photo"]["psnr"], 3)
        assert scores["denoised_psnr"] > scores["noisy_psnr"] + 3


def test_bundling_replaces_a_shipped_model_only_when_told_and_says_what_a_folder_lacks(
        tmp_path, monkeypatch, capsys):
    import numpy as np
    import pytest

    from models.conv_dae import ConvDAE
    from tests.helpers import fashion_mnist_available
    from training import bundle
    from training.cli import save_config

    shipped = tmp_path / "bundled"
    shipped.mkdir()
    monkeypatch.setattr(bundle, "BUNDLED_DIR", shipped)
    (shipped / "tiny.keras").write_bytes(b"the shipped model")
    (shipped / "tiny.json").write_text(json.dumps({"description": "the shipped card's words"}))
    run = tmp_path / "run"
    run.mkdir()
    for argv, says in (([str(run), "--name", "tiny"], "tiny.keras exists: --replace to ship this run"),
                       ([str(run), "--name", "new"], f"{run} is not a finished pretraining run: it "
                                                     "has no config.json"),
                       ([str(tmp_path / "nowhere"), "--name", "new"], "has no config.json")):
        assert bundle.main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    (run / "config.json").write_text(json.dumps({"mode": "linear", "dropout": 0.1}))  # fine-tuning
    (run / "metrics.json").write_text(json.dumps({"epochs_run": 1, "train_seconds": 1.0}))
    model = ConvDAE(widths=(8, 16), bottleneck=16)
    model(np.zeros((1, 28, 28, 1), np.float32))
    model.save(run / "model.keras")
    assert bundle.main([str(run), "--name", "new"]) == 2
    assert f"{run} is not a pretraining run" in capsys.readouterr().err
    assert (shipped / "tiny.keras").read_bytes() == b"the shipped model"
    assert sorted(p.name for p in shipped.iterdir()) == ["tiny.json", "tiny.keras"]
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST files missing (make setup): the replacement is scored on them")
    save_config(PretrainConfig(widths=(8, 16), bottleneck=16, out=str(run)), run / "config.json")
    assert bundle.main([str(run), "--name", "tiny", "--replace", "--limit", "8"]) == 0
    card = json.loads((shipped / "tiny.json").read_text())
    assert card["description"] == "the shipped card's words" and card["scores"]["images"] == 8
    assert sorted(p.name for p in shipped.iterdir()) == ["tiny.json", "tiny.keras"]


def test_missing_test_images_are_one_line_and_ship_nothing(tmp_path, monkeypatch, capsys):
    import numpy as np
    import pytest

    from models.conv_dae import ConvDAE
    from training import bundle
    from training.cli import save_config

    shipped = tmp_path / "bundled"
    monkeypatch.setattr(bundle, "BUNDLED_DIR", shipped)
    run = tmp_path / "run"
    run.mkdir()
    save_config(PretrainConfig(dataset="folder:/data/photos", widths=(8, 16), bottleneck=16, out=str(run)),
                run / "config.json")
    (run / "metrics.json").write_text(json.dumps({"epochs_run": 1, "train_seconds": 1.0}))
    model = ConvDAE(widths=(8, 16), bottleneck=16)
    model(np.zeros((1, 28, 28, 1), np.float32))
    model.save(run / "model.keras")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for folder, says in ((tmp_path / "nowhere", f"image folder {tmp_path / 'nowhere'} does not exist or "
                                                "is not a folder"),
                         (empty, f"no usable images in {empty} (looked for ")):
        assert bundle.main([str(run), "--name", "new", "--eval-images", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {says}") and err.count("\n") == 1, err
    assert bundle.main([str(run), "--name", "new"]) == 2  # a folder has no test split to score
    assert capsys.readouterr().err == ("error: the run trained on folder:/data/photos, which has no test "
                                       "split: --eval-images DIR names a folder of clean test photos to "
                                       "score it on\n")
    (run / "backup").mkdir()  # stopped at its --time-limit: not finished
    assert bundle.main([str(run), "--name", "new", "--eval-images", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"{run} is not a finished pretraining run: it stopped at its --time-limit" in err
    for name in ("../escaped", "a/b", ".hidden", ""):  # a file name in the bundle folder, nothing else
        with pytest.raises(SystemExit):
            bundle.main([str(run), "--name", name])
        assert "--name must be letters, digits" in capsys.readouterr().err or not name
    assert not shipped.exists() and not (tmp_path / "escaped.keras").exists()
