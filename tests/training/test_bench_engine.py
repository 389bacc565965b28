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


def test_timed_runs_are_warm_and_without_tracemalloc(capsys, monkeypatch):
    """Each scenario runs once untimed (the model traces its predict function for the
    scenario's shapes), then --repeat times timed, then once under tracemalloc (which slows
    every allocation) for the allocation peak alone; the table reports the fastest timed run."""
    import time
    import tracemalloc

    import training.bench_engine as bench
    from app.engine import as_denoiser

    model = as_denoiser("fashion-mnist").model  # the one main loads (cached)
    calls = {"run": [], "denoise": []}

    def traces():
        return model.predict_function.experimental_get_tracing_count() if model.predict_function else 0

    def spy(name, real):
        def call(*args, **kwargs):
            before, start = traces(), time.perf_counter()
            out = real(*args, **kwargs)
            calls[name].append({"seconds": time.perf_counter() - start, "traced": traces() - before,
                                "tracemalloc": tracemalloc.is_tracing(), "args": args})
            return out
        return call

    monkeypatch.setattr(bench, "run", spy("run", bench.run))
    monkeypatch.setattr(bench, "denoise", spy("denoise", bench.denoise))
    assert main(["--model", "fashion-mnist", "--small-grey", "20", "--small-colour", "0",
                 "--megapixels", "0.05", "--tile", "128", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    large = [c for c in calls["denoise"] if c["args"][0].shape[-1] == 3]  # not warm_up's grey zeros
    for runs in (calls["run"], large):  # untimed, timed twice, under tracemalloc
        assert [c["tracemalloc"] for c in runs] == [False, False, False, True]
        assert [c["traced"] for c in runs[1:3]] == [0, 0]
    row = re.search(r"^\| small grey 28x28 PNG \(x20\) \| 20 \| [\d.]+ \| ([\d.]+) \|", out, re.M)
    assert float(row[1]) == pytest.approx(min(c["seconds"] for c in calls["run"][1:3]), rel=0.05, abs=0.002)


def _no_model(*args, **kwargs):
    raise AssertionError("the model loaded before the settings were checked")


@pytest.mark.parametrize(("argv", "says"), [
    (["--noise", "2"], "--noise must be a standard deviation in [0, 1] (pixels span [0, 1]), got 2.0"),
    (["--small-grey", "-5"], "--small-grey must be >= 0 (0 skips that scenario), got -5"),
    (["--small-colour", "-1"], "--small-colour must be >= 0 (0 skips that scenario), got -1"),
    (["--megapixels", "-2"], "--megapixels must be >= 0 (0 skips that scenario), got -2.0"),
    (["--colour-side", "0"], "--colour-side must be at least 1 pixel, got 0"),
    (["--repeat", "0"], "--repeat must be at least 1, got 0"),
])
def test_bad_settings_are_refused_by_the_parser(argv, says, capsys, monkeypatch):
    import training.bench_engine as bench

    monkeypatch.setattr(bench, "as_denoiser", _no_model)
    with pytest.raises(SystemExit) as exit_:
        main(["--small-grey", "1", "--small-colour", "0", "--megapixels", "0", *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: {says}\n")


def test_what_only_the_files_can_tell_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import training.bench_engine as bench

    monkeypatch.setattr(bench, "as_denoiser", _no_model)
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("not a JPEG")
    largest = bench.largest_colour_crop()
    for argv, says in (
            (["--small-grey", "20000"], "--small-grey 20000: the Fashion-MNIST test split has 10000 images"),
            (["--small-colour", "3", "--colour-side", "2000"],
             f"--colour-side 2000: the crops must fit the smallest photo in {PHOTOS} at half size, "
             f"so at most {largest} px"),
            (["--megapixels", "0.01", "--photo", str(not_a_photo)],
             f"cannot identify image file '{not_a_photo}'")):
        assert main(["--small-grey", "1", "--small-colour", "0", "--megapixels", "0", *argv]) == 2
        assert capsys.readouterr().err == f"error: {says}\n"
    # The limit is exact: crops of that side fit every photo, one pixel more does not.
    photos = len(list(PHOTOS.glob("*.jpg")))  # one crop from each
    bench.write_small_colour(tmp_path / "fits", photos, largest, 0.1)
    assert len(list((tmp_path / "fits").iterdir())) == photos
    with pytest.raises(ValueError):
        bench.write_small_colour(tmp_path / "too_big", photos, largest + 1, 0.1)


def test_a_tile_smaller_than_the_models_stride_is_one_line_before_any_scenario(capsys, monkeypatch):
    import training.bench_engine as bench

    def no_scenario(*args, **kwargs):
        raise AssertionError("a scenario ran with an impossible --tile")

    monkeypatch.setattr(bench, "run_benchmark", no_scenario)
    assert main(["--small-grey", "1", "--small-colour", "0", "--megapixels", "0", "--tile", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --tile 0: tile must be at least the model's stride (4 px), got 0\n"
