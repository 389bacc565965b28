"""The engine benchmark: a real (small) run of every scenario through the batch pipeline."""

import re

import pytest

from tests.helpers import fashion_mnist_available
from training.bench_engine import PHOTOS, main

pytestmark = pytest.mark.skipif(not (fashion_mnist_available() and PHOTOS.is_dir()),
                                reason="Fashion-MNIST files or mate-backgrounds photos missing (make setup)")


def test_small_run_prints_a_row_per_scenario(capsys):
    assert main(["--model", "fashion-mnist", "--small-grey", "20", "--small-colour", "4",
                 "--colour-side", "48", "--megapixels", "0.05", "--tile", "128", "--repeat", "2",
                 "--precision", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "model fashion-mnist (1 channel(s), stride 4, bfloat16); tile 128" in out
    rows = re.findall(r"^\| (.+?) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", out, re.M)
    assert [(name.split(" ")[0], int(files)) for name, files, *_ in rows] == [
        ("small", 20), ("small", 4), ("large", 1)]
    assert all(float(seconds) > 0 and float(rate) > 0 for _, _, _, seconds, rate, _ in rows)
    large = re.search(r"large photo (\d+)x(\d+) JPEG: load [\d.]+ s, denoise [\d.]+ s, save [\d.]+ s "
                      r"\(fastest of 2: ([\d.]+), ([\d.]+) s\); (\d+) tiles", out)
    assert large, out
    width, height, tiles = int(large[1]), int(large[2]), int(large[5])
    assert abs(width * height - 50_000) < 1_000 and tiles > 1  # 0.05 MP in tiles of at most 128²


def test_ensemble_the_model_was_not_trained_for_is_an_error_not_a_traceback(capsys):
    assert main(["--model", "fashion-mnist", "--ensemble", "8", "--small-grey", "1", "--small-colour", "0",
                 "--megapixels", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: model fashion-mnist was not trained on flipped and rotated images" in err


def test_a_missing_photo_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import training.bench_engine as bench

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the photo was checked")

    monkeypatch.setattr(bench, "as_denoiser", no_model)
    assert main(["--model", "fashion-mnist", "--small-grey", "0", "--small-colour", "0",
                 "--megapixels", "0.01", "--photo", str(tmp_path / "nope.jpg")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --photo {tmp_path / 'nope.jpg'}: no such file (the large-photo scenario "
                   "upscales it; --megapixels 0 skips that scenario)\n")
