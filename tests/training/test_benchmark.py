import json

import numpy as np
import pytest
from PIL import Image

from data.corruption import BENCHMARK_SETTINGS, corrupt
from data.datasets import load_named
from data.images import to_model
from data.metrics import psnr, ssim
from models.classic import CLASSIC_DENOISERS
from tests.helpers import needs_fashion_mnist
from training import benchmark
from training.benchmark import (
    Setting,
    classic_contender,
    corrupt_images,
    default_settings,
    main,
    noisy_input,
    parse_setting,
    score,
    tune,
)

# ---------------------------------------------------------------- protocol


def test_psnr_is_per_image_with_data_range_one_then_averaged():
    clean = np.zeros((2, 4, 4, 1), np.float32)
    estimate = np.stack([np.full((4, 4, 1), 0.1), np.full((4, 4, 1), 0.01)]).astype(np.float32)
    psnrs, ssims = score(clean, estimate)
    np.testing.assert_allclose(psnrs, [20.0, 40.0], atol=1e-4)  # MSE 1e-2 and 1e-4
    assert abs(psnrs.mean() - 30.0) < 1e-4  # not 10 log10(1 / mean MSE) = 22.97
    assert ssims.shape == (2,)
    list_psnrs, _ = score(list(clean), list(estimate))  # photos: a list of differently sized images
    np.testing.assert_allclose(list_psnrs, psnrs)


def test_estimates_are_clipped_to_the_valid_range_before_scoring():
    clean = np.full((1, 4, 4, 3), 0.9, np.float32)
    psnrs, _ = score(clean, np.full_like(clean, 1.7))  # clipped to 1.0: MSE 0.01
    np.testing.assert_allclose(psnrs, [20.0], atol=1e-4)


def test_noise_is_fixed_by_the_seed_and_differs_per_photo():
    clean = np.full((2, 16, 16, 1), 0.5, np.float32)
    setting = Setting("gaussian", 0.2, "gaussian:0.2")
    first, again = corrupt_images(clean, setting, 3), corrupt_images(clean, setting, 3)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, corrupt(clean, "gaussian", 0.2, 3))  # what model cards use
    assert not np.array_equal(first, corrupt_images(clean, setting, 4))  # the tuning noise differs
    photos = corrupt_images([clean[0], clean[1]], setting, 3)
    assert not np.array_equal(photos[0], photos[1])


def test_default_settings_follow_the_issue():
    assert [(s.name, s.level) for s in default_settings(photos=False)] == list(BENCHMARK_SETTINGS)
    photo = default_settings(photos=True)
    assert [s.label for s in photo] == ["gaussian:15/255", "gaussian:25/255", "gaussian:50/255"]
    assert [s.level for s in photo] == [15 / 255, 25 / 255, 50 / 255]


def test_parse_setting_takes_numbers_and_fractions():
    assert parse_setting("gaussian:25/255") == Setting("gaussian", 25 / 255, "gaussian:25/255")
    assert parse_setting(" masking : 0.5 ") == Setting("masking", 0.5, "masking:0.5")
    with pytest.raises(ValueError, match="must look like NAME:LEVEL"):
        parse_setting("gaussian")
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        parse_setting("blur:0.1")
    with pytest.raises(ValueError, match=r"gaussian level must satisfy 0.0 <= low <= high <= 1.0, got 2.0"):
        parse_setting("gaussian:2")


def test_tuning_picks_the_grid_entry_with_the_best_validation_psnr():
    rng = np.random.default_rng(0)
    walks = rng.standard_normal((6, 24, 24, 1)).cumsum(axis=2) / 8  # smooth-ish random rows
    clean = np.clip(0.5 + 0.2 * walks, 0, 1).astype(np.float32)
    noisy = corrupt(clean, "gaussian", 0.3, seed=1)
    tv = classic_contender(CLASSIC_DENOISERS["tv"])
    tuned = tune(tv, clean, noisy)
    assert len(tuned["grid"]) == len(CLASSIC_DENOISERS["tv"].grid)
    best = max(tuned["grid"], key=lambda t: t["psnr"])
    assert tuned["params"] == best["params"]
    assert tuned["params"] != {"weight": 0.02}  # heavy noise needs more than the weakest setting
    assert best["psnr"] > float(np.mean(psnr(clean, noisy))) + 3
    assert tune(noisy_input(), clean, noisy) == {"params": {}, "seconds": 0.0, "grid": []}


# ---------------------------------------------------------------- end to end


@needs_fashion_mnist
def test_tiny_run_on_real_fashion_mnist(tmp_path, capsys):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["--model", "fashion-mnist", "--dataset", "fashion_mnist", "--limit", "6", "--tune-images", "4",
            "--contender", "median3", "--contender", "nl_means", "--contender", "inpaint",
            "--json", str(out_json), "--markdown", str(out_md)]
    assert main(argv) == 0
    report = json.loads(out_json.read_text())
    assert report["settings"] == [f"{n}:{lv:g}" for n, lv in BENCHMARK_SETTINGS]
    assert list(report["contenders"]) == ["noisy", "median3", "nl_means", "inpaint", "fashion-mnist"]
    clean = to_model(load_named("fashion_mnist").x_test[:6])
    for name, level in BENCHMARK_SETTINGS:
        results = report["results"][f"{name}:{level:g}"]
        assert ("inpaint" in results) == (name == "masking")
        if name == "masking":  # told where the noise put its zeros, not every black pixel
            assert results["inpaint"]["psnr"] > results["noisy"]["psnr"] + 5
        assert all(r["images"] == 6 for r in results.values())
        expected_noisy = float(np.mean(psnr(clean, corrupt(clean, name, level, 0))))
        assert abs(results["noisy"]["psnr"] - expected_noisy) < 1e-3
        assert results["nl_means"]["params"] in [dict(p) for p in CLASSIC_DENOISERS["nl_means"].grid]
        assert len(results["nl_means"]["tune"]["grid"]) == len(CLASSIC_DENOISERS["nl_means"].grid)
    heavy = report["results"]["gaussian:0.3"]
    assert heavy["fashion-mnist"]["psnr"] > heavy["noisy"]["psnr"] + 2
    assert report["speed"]["fashion-mnist"]["images_per_second"] > 0
    markdown = out_md.read_text()
    assert markdown.startswith("Command: `python -m training.benchmark --model fashion-mnist")
    assert "| fashion-mnist (ours)" in markdown and "| contender" in markdown and "h=" in markdown
    assert "| fashion-mnist (ours) minus best classic" in markdown
    assert "| fashion-mnist (ours)" in capsys.readouterr().out
    again = tmp_path / "again.md"
    assert main(["--from-json", str(out_json), "--markdown", str(again)]) == 0  # tables re-made, no rerun
    assert again.read_text() == markdown
    # One setting rescored on its own joins the full report in its place.
    redo, other = tmp_path / "redo.json", tmp_path / "other.json"
    assert main([*argv[2:6], "--tune-images", "4", "--contender", "tv", "--contender", "inpaint",
                 "--setting", "masking:0.5", "--json", str(redo)]) == 0  # no model this time
    assert main([*argv[:6], "--tune-images", "8", "--setting", "masking:0.5", "--contender", "tv",
                 "--json", str(other)]) == 0
    capsys.readouterr()
    merged_md = tmp_path / "merged.md"
    assert main(["--from-json", str(out_json), "--from-json", str(redo), "--markdown", str(merged_md)]) == 0
    text = merged_md.read_text()
    first, second = json.loads(out_json.read_text()), json.loads(redo.read_text())
    assert text.startswith(f"Command: `{first['command']}; then {second['command']}`")
    header = next(line for line in text.splitlines() if line.startswith("| contender"))
    assert [c.strip() for c in header.split("|")[2:10]] == report["settings"]  # the grid's order
    rows = {}  # the first table's (PSNR)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip(), [c.strip() for c in line.split("|")[2:-1]])
    tv = rows["total variation (Chambolle)"]
    assert tv[:7] == [""] * 7 and tv[7].strip("*") == f"{second['results']['masking:0.5']['tv']['psnr']:.2f}"
    assert rows["median 3x3"][0].strip("*") == f"{first['results']['gaussian:0.1']['median3']['psnr']:.2f}"
    assert rows["median 3x3"][7] == ""  # masking 0.5 is the second report's, all of it
    margins = next(line for line in text.splitlines() if "fashion-mnist (ours) minus best classic" in line)
    assert [c.strip() for c in margins.split("|")[2:-1]][7] == "-"  # the rescore had no model
    assert main(["--from-json", str(out_json), "--from-json", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"--from-json {other} scored other images or noise than {out_json} (its tune, tune_images" in err


@needs_fashion_mnist
def test_precision_flag_names_the_contender(tmp_path):
    # That bfloat16 scores as float32 does is measured in tests/app/test_engine.py.
    out_json = tmp_path / "bench.json"
    assert main(["--model", "fashion-mnist", "--dataset", "fashion_mnist", "--limit", "20", "--tune-images",
                 "4", "--contender", "median3", "--setting", "gaussian:0.1", "--json", str(out_json),
                 "--precision", "bfloat16"]) == 0
    report = json.loads(out_json.read_text())
    assert list(report["contenders"]) == ["noisy", "median3", "fashion-mnist-bfloat16"]
    results = report["results"]["gaussian:0.1"]
    assert results["fashion-mnist-bfloat16"]["psnr"] > results["noisy"]["psnr"] + 5


def _write_photo(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_photo_run_tunes_on_a_held_out_photo_and_scores_the_rest(tmp_path):
    from skimage import data as samples

    folder = tmp_path / "photos"
    _write_photo(folder / "a_tune.png", samples.coffee()[100:164, 200:280])
    _write_photo(folder / "b.png", samples.astronaut()[40:104, 200:272])
    _write_photo(folder / "c.png", samples.chelsea()[100:156, 150:230])
    out_json = tmp_path / "photos.json"
    argv = ["--images", str(folder), "--model", "fashion-mnist", "--contender", "median3",
            "--contender", "tv", "--contender", "inpaint", "--tune-crop", "48",
            "--setting", "gaussian:25/255", "--json", str(out_json)]
    assert main(argv) == 0
    report = json.loads(out_json.read_text())
    assert list(report["contenders"]) == ["noisy", "median3", "tv", "fashion-mnist"]  # inpaint: masking only
    proto = report["protocol"]
    assert proto["photos"] and proto["test_images"] == 2
    assert proto["test"] == "2 photos: b.png (72x64), c.png (80x56)"
    assert proto["tune"] == "centre 48x48 crop of a_tune.png (not a test photo)"
    results = report["results"]["gaussian:25/255"]
    assert results["tv"]["psnr"] > results["noisy"]["psnr"] + 2
    assert results["tv"]["params"] in [dict(p) for p in CLASSIC_DENOISERS["tv"].grid]
    assert results["fashion-mnist"]["psnr"] > results["noisy"]["psnr"] + 1  # grey model, per channel
    assert report["speed"]["tv"]["seconds_per_megapixel"] > 0
    # --limit takes the first photos; a setting that no classic contender fits gets "-" margins;
    # a setting given twice is scored once.
    md = tmp_path / "photos.md"
    assert main(["--images", str(folder), "--model", "fashion-mnist", "--contender", "inpaint",
                 "--tune-crop", "48", "--setting", "gaussian:25/255", "--setting", "masking:0.25",
                 "--setting", "masking:0.25", "--limit", "1", "--json", str(out_json),
                 "--markdown", str(md)]) == 0
    report = json.loads(out_json.read_text())
    assert report["settings"] == ["gaussian:25/255", "masking:0.25"]
    assert report["protocol"]["test"] == "1 photo: b.png (72x64)"
    masking = report["results"]["masking:0.25"]
    margin = masking["fashion-mnist"]["psnr"] - masking["inpaint"]["psnr"]
    row = next(line for line in md.read_text().splitlines() if "minus best classic" in line)
    assert [cell.strip() for cell in row.split("|")[2:4]] == ["-", f"{margin:+.2f}"]


def test_ensemble_flag_scores_each_model_at_each_size(tmp_path, capsys):
    # That the ensemble cleans further is measured in tests/app/test_engine.py; here: each size
    # is scored as the engine denoises at it.
    from skimage import data as samples

    from app.engine import as_denoiser, denoise

    folder = tmp_path / "photos"
    _write_photo(folder / "a_tune.png", samples.coffee()[100:164, 200:280])
    _write_photo(folder / "b.png", samples.astronaut()[40:136, 200:296])
    out_json = tmp_path / "photos.json"
    argv = ["--images", str(folder), "--model", "photo", "--contender", "median3", "--tune-crop", "48",
            "--setting", "gaussian:25/255", "--json", str(out_json), "--ensemble", "1", "2"]
    assert main(argv) == 0
    report = json.loads(out_json.read_text())
    assert list(report["contenders"]) == ["noisy", "median3", "photo", "photo-x2"]
    results = report["results"]["gaussian:25/255"]
    assert results["photo"]["psnr"] > results["median3"]["psnr"]
    clean = to_model(samples.astronaut()[40:136, 200:296])
    setting = Setting("gaussian", 25 / 255, "gaussian:25/255")
    noisy = corrupt_images([clean], setting, report["protocol"]["seed"])[0]
    scores = {n: float(psnr(clean, denoise(noisy, as_denoiser("photo", ensemble=n)).output)) for n in (1, 2)}
    assert abs(scores[2] - scores[1]) > 0.01  # told apart at the report's 0.001 dB
    assert results["photo-x2"]["psnr"] == pytest.approx(scores[2], abs=6e-4)
    assert results["photo"]["psnr"] == pytest.approx(scores[1], abs=6e-4)
    capsys.readouterr()
    assert main(["--images", str(folder), "--model", "fashion-mnist", "--ensemble", "2"]) == 2
    assert "model fashion-mnist was not trained on flipped and rotated images" in capsys.readouterr().err


def test_write_skimage_photos_keeps_test_and_tuning_photos_apart(tmp_path):
    paths = benchmark.write_skimage_photos(tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert names == ["test/astronaut.png", "test/chelsea.png", "test/coffee.png", "test/rocket.png",
                     "tune/motorcycle_right.png"]
    assert all(np.asarray(Image.open(p)).shape[-1] == 3 for p in paths)
    before = (tmp_path / "test/astronaut.png").stat().st_mtime_ns
    benchmark.write_skimage_photos(tmp_path)  # existing files are left alone
    assert (tmp_path / "test/astronaut.png").stat().st_mtime_ns == before


# ---------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    assert main(["--images", str(tmp_path / "missing")]) == 2
    assert f"error: image folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "one").mkdir()
    _write_photo(tmp_path / "one" / "only.png", np.zeros((20, 20, 3), np.uint8))
    assert main(["--images", str(tmp_path / "one")]) == 2
    assert "holds no photo besides the tuning photo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--setting", "gaussian:two"])
    assert "a setting must look like NAME:LEVEL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", "mnist", "--images", str(tmp_path)])
    assert "pass either --dataset or --images, not both" in capsys.readouterr().err


@needs_fashion_mnist
def test_unknown_model_is_a_clear_error(capsys):
    assert main(["--model", "no-such-model", "--limit", "2", "--contender", "median3"]) == 2
    assert "error: no model 'no-such-model'" in capsys.readouterr().err


def _a_folder(tmp_path):
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


@pytest.mark.parametrize("flag,where,message", [
    ("--json", _a_folder, "--json {path} is a folder; give a file path"),
    ("--markdown", _a_folder, "--markdown {path} is a folder; give a file path"),
    ("--json", lambda tmp_path: tmp_path / "afile" / "sub" / "report.json",
     "--json {path}: {afile} is a file, not a folder"),
])
def test_bad_output_paths_are_refused_before_the_run(tmp_path, monkeypatch, capsys, flag, where, message):
    def no_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before its output paths were checked")

    monkeypatch.setattr(benchmark, "run_benchmark", no_run)
    afile = tmp_path / "afile"
    afile.write_text("precious")
    path = where(tmp_path)
    assert main(["--model", "fashion-mnist", "--contender", "median3", flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path, afile=afile) in err and "Traceback" not in err
    assert afile.read_text() == "precious"


def test_from_json_that_is_not_a_benchmark_report_is_a_clear_error(tmp_path, capsys):
    card = tmp_path / "photo.json"
    card.write_text((benchmark.Path(benchmark.__file__).parents[1] / "models/bundled/photo.json").read_text())
    listed, broken, partial = tmp_path / "list.json", tmp_path / "broken.json", tmp_path / "partial.json"
    listed.write_text("[1, 2]")
    broken.write_text("{not json")
    fields = {"command": "", "protocol": {}, "machine": {}, "settings": [], "contenders": {},
              "skipped": {}, "results": {}, "speed": {}}
    partial.write_text(json.dumps(fields))
    cases = [
        (card, f"--from-json {card} is not a benchmark report (one written by --json): it has no "),
        (listed, f"--from-json {listed} is not a benchmark report (one written by --json): "
                 "it holds an array, not an object"),
        (broken, f"--from-json {broken} is not JSON"),
        (partial, f"--from-json {partial} is not a complete benchmark report (KeyError"),
        (tmp_path, f"--from-json {tmp_path}: cannot read it"),
    ]
    for path, message in cases:
        assert main(["--from-json", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


# ---------------------------------------------------------------- fair comparisons


@needs_fashion_mnist
def test_margins_compare_everyone_on_the_images_a_slow_contender_scored(tmp_path, monkeypatch):
    import dataclasses

    built = benchmark.build_contenders

    def median3_is_slow(config):  # BM3D is an optional package: a real contender stands in
        contenders, skipped = built(config)
        return [dataclasses.replace(c, slow=True) if c.name == "median3" else c
                for c in contenders], skipped

    monkeypatch.setattr(benchmark, "build_contenders", median3_is_slow)
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["--model", "fashion-mnist", "--dataset", "fashion_mnist", "--limit", "40",
                 "--slow-limit", "10", "--tune-images", "4", "--slow-tune-images", "4",
                 "--contender", "median3", "--setting", "salt_pepper:0.3",
                 "--json", str(out_json), "--markdown", str(out_md)]) == 0
    results = json.loads(out_json.read_text())["results"]["salt_pepper:0.3"]
    assert results["median3"]["images"] == 10 and "psnr_first" not in results["median3"]
    clean = to_model(load_named("fashion_mnist").x_test[:40])
    noisy_psnrs = psnr(clean, corrupt(clean, "salt_pepper", 0.3, 0))
    assert results["noisy"]["images"] == 40
    first = pytest.approx(np.mean(noisy_psnrs[:10]), abs=1e-3)
    assert results["noisy"]["psnr_first"] == {"images": 10, "psnr": first, "ssim": pytest.approx(
        np.mean(ssim(clean, corrupt(clean, "salt_pepper", 0.3, 0))[:10]), abs=1e-4)}
    ours = results["fashion-mnist"]
    assert ours["images"] == 40 and ours["psnr_first"]["images"] == 10
    # The margin is on the first 10 images for both, not 40 images against 10.
    margin = ours["psnr_first"]["psnr"] - results["median3"]["psnr"]
    assert abs(margin - (ours["psnr"] - results["median3"]["psnr"])) > 0.005  # the two do differ
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in out_md.read_text().splitlines() if line.startswith("| ")}
    assert rows["fashion-mnist (ours) minus best classic"] == f"{margin:+.2f}†"
    assert rows["best classic (dB)"] == f"{results['median3']['psnr']:.2f} (median3)†"
    assert "† the best is a slow contender: compared on the first 10 test images" in out_md.read_text()


def test_the_best_classic_is_chosen_on_common_images_and_a_fast_best_keeps_the_whole_split():
    from training.benchmark import _margin_table

    contenders = {"bm3d": {"kind": "classic", "label": "BM3D", "slow": True},
                  "tv": {"kind": "classic", "label": "TV", "slow": False},
                  "median5": {"kind": "classic", "label": "median 5x5", "slow": False},
                  "m": {"kind": "model", "label": "m (ours)", "slow": False}}
    proto = {"slow_limit": 300, "test_images": 10_000, "slow_tune_images": 16, "tune_images": 32}

    def margins(results):
        report = {"contenders": contenders, "protocol": proto, "settings": ["s"], "results": {"s": results}}
        return [line.split("|")[2].strip() for line in _margin_table(report).splitlines()[2:]]

    # TV's whole-split mean is lower than BM3D's, but on BM3D's 300 images TV is better: TV is
    # the best, and the margin against it is on all 10,000 images.
    assert margins({"bm3d": {"psnr": 17.2, "images": 300},
                    "tv": {"psnr": 17.0, "images": 10_000, "psnr_first": {"images": 300, "psnr": 17.4}},
                    "m": {"psnr": 22.6, "images": 10_000, "psnr_first": {"images": 300, "psnr": 22.9}}}
                   ) == ["17.00 (tv)", "+5.60"]
    # BM3D best on its images: the margin is on them, marked.
    assert margins({"bm3d": {"psnr": 17.2, "images": 300},
                    "tv": {"psnr": 17.3, "images": 10_000, "psnr_first": {"images": 300, "psnr": 17.1}},
                    "m": {"psnr": 22.6, "images": 10_000, "psnr_first": {"images": 300, "psnr": 22.9}}}
                   ) == ["17.20 (bm3d)†", "+5.70†"]
    # The best of the fast ones is the best on the whole split, though another is better on
    # the slow contender's images; and BM3D must beat both there, not only that one.
    assert margins({"bm3d": {"psnr": 14.64, "images": 3},
                    "tv": {"psnr": 15.77, "images": 40, "psnr_first": {"images": 3, "psnr": 14.74}},
                    "median5": {"psnr": 16.02, "images": 40, "psnr_first": {"images": 3, "psnr": 14.06}},
                    "m": {"psnr": 27.65, "images": 40, "psnr_first": {"images": 3, "psnr": 26.5}}}
                   ) == ["16.02 (median5)", "+11.63"]
    # A report written before psnr_first was kept: whole-split means, the mixed margin marked.
    assert margins({"bm3d": {"psnr": 17.2, "images": 300}, "tv": {"psnr": 16.9, "images": 10_000},
                    "m": {"psnr": 22.6, "images": 10_000}}) == ["17.20 (bm3d)†", "+5.40†"]


def test_bold_marks_the_best_on_the_same_images_not_a_mean_over_fewer():
    from training.benchmark import _metric_table

    report = {"settings": ["s"], "protocol": {"photos": False, "slow_limit": 1, "test_images": 40,
                                                      "slow_tune_images": 4, "tune_images": 4},
              "contenders": {n: {"kind": "classic", "label": n, "slow": n == "bm3d"}
                             for n in ("bm3d", "median5")},
              "results": {"s": {"bm3d": {"psnr": 16.36, "ssim": 0.52, "images": 1},
                                "median5": {"psnr": 16.02, "ssim": 0.50, "images": 40, "psnr_first":
                                            {"images": 1, "psnr": 16.40, "ssim": 0.51}}}}}
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in _metric_table(report, "psnr", 2, speed=False).splitlines()[2:]}
    assert cells == {"bm3d †": "16.36", "median5": "**16.02**"}  # BM3D is behind on its one image
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in _metric_table(report, "ssim", 3, speed=False).splitlines()[2:]}
    assert cells == {"bm3d †": "**0.520**", "median5": "0.500"}  # and ahead in SSIM there


def test_model_timing_excludes_tracing_of_every_shape():
    from training.benchmark import Contender, evaluate

    calls = []

    def run(images, params, masks=None):
        calls.append([im.shape for im in images])
        return list(images)

    photos = [np.full((8, 12, 3), 0.5, np.float32), np.full((16, 6, 3), 0.5, np.float32)]
    evaluate(Contender("m", "m", "model", run), {}, photos, photos)
    # The untimed warm-up already ran every photo size the timed pass runs.
    assert calls[0] == calls[1] == [(8, 12, 3), (16, 6, 3)]
    calls.clear()
    evaluate(Contender("c", "c", "classic", run), {}, photos, photos)
    assert calls[0] == [(8, 12, 3)]  # a classic contender traces nothing: one image warms it


def test_tuning_photos_never_share_noise_with_a_test_photo(tmp_path):
    from skimage import data as samples

    folder = tmp_path / "photos"
    # The tuning photo is a test photo's twin: sharing a seed would give them identical noise.
    twin = samples.coffee()[100:164, 200:264]
    _write_photo(folder / "a_tune.png", twin)
    _write_photo(folder / "b.png", samples.astronaut()[40:104, 200:264])
    _write_photo(folder / "c.png", twin)
    out_json = tmp_path / "photos.json"
    assert main(["--images", str(folder), "--tune-image", str(folder / "a_tune.png"),
                 "--contender", "median3", "--tune-crop", "64", "--setting", "gaussian:25/255",
                 "--json", str(out_json)]) == 0
    proto = json.loads(out_json.read_text())["protocol"]
    test_seeds = range(proto["seed"], proto["seed"] + proto["test_images"])
    assert proto["tune_seed"] not in test_seeds
    setting = Setting("gaussian", 25 / 255, "gaussian:25/255")
    clean = to_model(twin)
    test_noisy = corrupt_images([clean, clean], setting, proto["seed"])
    tune_noisy = corrupt_images([clean], setting, proto["tune_seed"])[0]
    assert not any(np.array_equal(tune_noisy, t) for t in test_noisy)


def test_bm3d_is_not_tuned_in_another_mode_than_it_scores_the_photos():
    from training.benchmark import BenchmarkData, BenchmarkError, check_bm3d_tuning

    big, small = np.zeros((300, 400, 3), np.float32), np.zeros((128, 128, 3), np.float32)
    check_bm3d_tuning(BenchmarkData([big, big], [big[:256, :256]], {}, photos=True))
    with pytest.raises(BenchmarkError, match="--tune-crop of at least 256"):
        check_bm3d_tuning(BenchmarkData([big, big], [small], {}, photos=True))
    check_bm3d_tuning(BenchmarkData([small], [small], {}, photos=True))


@pytest.mark.parametrize("report_flag", ["--json", "--from-json"])
def test_markdown_onto_the_json_report_is_refused(tmp_path, capsys, report_flag):
    report = tmp_path / "report.json"
    report.write_text('{"numbers": "precious"}')
    assert main(["--model", "fashion-mnist", "--contender", "median3", report_flag, str(report),
                 "--markdown", str(tmp_path / "." / "report.json")]) == 2
    err = capsys.readouterr().err
    assert f"is the {report_flag} report itself" in err and "Traceback" not in err
    assert report.read_text() == '{"numbers": "precious"}'
