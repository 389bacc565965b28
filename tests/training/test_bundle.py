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
