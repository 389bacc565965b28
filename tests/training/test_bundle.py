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
