"""The batch script on the test corpus: every good file denoised with its format, mode and depth
kept and PSNR gained; every bad file reported with its reason; inputs untouched; resume,
overwrite, dry run, refusals, format/glob, manifests."""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import struct
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from app import batch
from app.batch import BatchConfig, main, run
from app.engine import as_denoiser, denoise
from data.images import load_image, to_model
from data.metrics import psnr
from models.registry import native_bfloat16
from tests.corpus import add_noise, camera_exif, clean_mosaic

MODEL = "fashion-mnist"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256, mtime_ns) of every file below ``folder``."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                               p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(corpus):
    """One full run over the corpus with a reference folder and a JSON manifest."""
    root, files = corpus
    before = snapshot(root / "noisy")
    config = BatchConfig(root / "noisy", root / "out", MODEL, reference=root / "clean",
                         manifest=root / "manifest.json", progress=False)
    summary = run(config)
    return summary, before


def test_every_good_file_is_denoised_keeping_format_mode_and_depth(corpus, first_run):
    root, files = corpus
    summary, _ = first_run
    rows = {r["input"]: r for r in json.loads((root / "manifest.json").read_text())}
    assert set(rows) == set(files)
    for rel, f in files.items():
        if f.reason is not None:
            continue
        row = rows[rel]
        assert row["status"] == "done", (rel, row)
        src, out = load_image(root / "noisy" / rel), load_image(root / "out" / rel)
        assert (out.format, out.mode, out.pixels.dtype, out.pixels.shape) == (
            src.format, src.mode, src.pixels.dtype, src.pixels.shape), rel
        if f.alpha and f.lossless:
            np.testing.assert_array_equal(out.alpha, src.alpha)
        assert not np.array_equal(to_model(out.pixels), to_model(src.pixels)), rel
        gain = row["psnr_output"] - row["psnr_input"]
        # Lossy formats re-encode the output (and JPEG's chroma subsampling already smeared our
        # channel-independent test colours), so they gain less.
        assert gain > (2.0 if f.lossless else 0.3), f"{rel}: PSNR gain {gain:.2f} dB"
        assert row["ssim_output"] > row["ssim_input"] - 0.01, rel
        assert row["model"] == MODEL and row["seconds"] > 0 and row["bytes_out"] > 0
    assert summary.exit_code == 1  # the bad files failed


def test_every_bad_file_is_reported_with_its_reason(corpus, first_run):
    root, files = corpus
    summary, _ = first_run
    rows = {r["input"]: r for r in summary.rows}
    for rel, f in files.items():
        if f.reason is None:
            continue
        assert rows[rel]["status"] == "failed" and rows[rel]["reason"] == f.reason, rows[rel]
        assert rel.split("/")[-1] in rows[rel]["detail"]
        assert not (root / "out" / rel).exists()


def test_inputs_untouched_and_nothing_written_inside_in_dir(corpus, first_run):
    root, _ = corpus
    assert snapshot(root / "noisy") == first_run[1]
    assert not list((root / "out").rglob("*.partial"))


def test_rerun_skips_done_outputs_and_overwrite_redoes_them(corpus, first_run, tmp_path):
    root, files = corpus
    out_before = snapshot(root / "out")
    manifest = tmp_path / "again.csv"
    summary = run(BatchConfig(root / "noisy", root / "out", MODEL, manifest=manifest, progress=False))
    assert snapshot(root / "out") == out_before  # nothing rewritten
    with open(manifest, newline="") as fh:
        rows = {r["input"]: r for r in csv.DictReader(fh)}
    good = [rel for rel, f in files.items() if f.reason is None]
    assert all(rows[rel]["status"] == "skipped" and rows[rel]["reason"] == "output_exists" for rel in good)
    assert summary.count("done") == 0
    redo = run(BatchConfig(root / "noisy", root / "out", MODEL, overwrite=True, glob="png/grey8.png",
                           progress=False))
    assert redo.count("done") == 1
    assert snapshot(root / "out")["png/grey8.png"][1] != out_before["png/grey8.png"][1]


def test_refuses_out_dir_inside_or_around_in_dir(corpus, capsys):
    root, _ = corpus
    before = snapshot(root / "noisy")
    assert main([str(root / "noisy"), str(root / "noisy" / "denoised"), "--model", MODEL]) == 2
    assert "inside IN_DIR" in capsys.readouterr().err
    assert main([str(root / "noisy" / "png"), str(root / "noisy"), "--model", MODEL]) == 2
    assert "inside OUT_DIR" in capsys.readouterr().err
    assert main([str(root / "noisy"), str(root / "x"), "--model", MODEL,
                 "--manifest", str(root / "noisy" / "m.csv")]) == 2
    assert main([str(root / "missing"), str(root / "x"), "--model", MODEL]) == 2
    assert main([str(root / "noisy"), str(root / "x"), "--model", "no-such-model"]) == 2
    assert "no model 'no-such-model'" in capsys.readouterr().err
    assert snapshot(root / "noisy") == before and not (root / "x").exists()


def test_dry_run_lists_and_writes_nothing(corpus, capsys):
    root, files = corpus
    code = main([str(root / "noisy"), str(root / "dry"), "--model", MODEL, "--dry-run",
                 "--manifest", str(root / "dry.json")])
    printed = capsys.readouterr().out
    assert code == 0 and not (root / "dry").exists() and not (root / "dry.json").exists()
    assert printed.count("denoise ") == len(files)
    assert f"dry run: {len(files)} to denoise" in printed
    assert main([str(root / "noisy"), str(root / "dry"), "--model", "nope", "--dry-run"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_format_and_glob(corpus, tmp_path):
    root, _ = corpus
    summary = run(BatchConfig(root / "noisy", tmp_path / "out", MODEL, format="png", glob="jpeg/*.jpg",
                              progress=False))
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert written == [batch.SETTINGS_FILE, "jpeg", "jpeg/baseline.png", "jpeg/cmyk.png", "jpeg/grey.png",
                       "jpeg/progressive.png", "jpeg/rotated.png"]
    assert summary.count("done") == 5 and summary.exit_code == 0
    assert load_image(tmp_path / "out" / "jpeg/cmyk.png").mode == "RGB"  # PNG has no CMYK
    # Alpha cannot go into JPEG: that file fails with the reason, the others go through.
    jpeg = run(BatchConfig(root / "noisy", tmp_path / "j", MODEL, format="jpeg", glob="png/rgb*.png",
                           progress=False))
    rows = {r["input"]: r for r in jpeg.rows}
    assert rows["png/rgba.png"]["status"] == "failed" and "alpha" in rows["png/rgba.png"]["detail"]
    assert rows["png/rgb8.png"]["status"] == "done" and jpeg.exit_code == 1


def test_leftover_partial_files_are_removed_but_not_a_concurrent_runs(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    (out / "png").mkdir(parents=True)
    stale = out / "png" / ".grey8.png.abc123.partial"  # a run killed two hours ago
    stale.write_bytes(b"half an image")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    writing = out / "png" / ".rgb8.png.def456.partial"  # another run writing into OUT_DIR right now
    writing.write_bytes(b"an image on its way")
    summary = run(BatchConfig(root / "noisy", out, MODEL, glob="png/grey8.png", progress=False))
    assert summary.removed_partials == 1 and not stale.exists()
    assert writing.read_bytes() == b"an image on its way"
    assert load_image(out / "png" / "grey8.png").pixels.shape == (55, 81, 1)


def test_manifest_suffix_is_checked():
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        BatchConfig(Path("a"), Path("b"), MODEL, manifest=Path("m.txt"))
    with pytest.raises(ValueError, match="inside IN_DIR"):
        BatchConfig(Path("a"), Path("b"), MODEL, glob="../elsewhere/*.png")
    with pytest.raises(SystemExit):
        batch.main(["a", "b"])  # --model is required


def test_one_failing_group_member_does_not_sink_the_others(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    real = batch.denoise_many

    def flaky(images, model, **kw):
        if any(im.shape == (55, 81, 1) for im in images):
            raise MemoryError("simulated")
        return real(images, model, **kw)

    monkeypatch.setattr(batch, "denoise_many", flaky)
    summary = run(BatchConfig(root / "noisy", tmp_path / "o", MODEL, glob="png/*", progress=False))
    rows = {r["input"]: r for r in summary.rows}
    assert rows["png/grey8.png"]["reason"] == "denoise_failed"
    assert rows["png/rgb8.png"]["status"] == "done"
    assert os.path.exists(tmp_path / "o" / "png" / "rgb8.png")


def test_real_run_from_the_command_line_shows_the_bar_and_the_summary(corpus, tmp_path, capsys):
    root, _ = corpus
    code = main([str(root / "noisy"), str(tmp_path / "out"), "--model", MODEL, "--glob", "*/grey8.*"])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert re.search(r"denoised 2 file\(s\), 0\.01 MP in [\d.]+ s \([\d.]+ files/s, [\d.]+ MP/s, "
                     r"(bfloat16|float32)\); "
                     r"skipped 0 \(output exists\); failed 0", captured.out), captured.out
    rate = float(re.search(r"\(([\d.]+) files/s", captured.out).group(1))
    assert rate > 0
    # tqdm's bar (on stderr, the summary stays on stdout): both files counted, with the MP/s postfix.
    assert re.search(r"100%\|.*\| 2/2 \[.*file/s.*MP/s\]", captured.err), captured.err
    assert "denoised" not in captured.err and "file/s" not in captured.out
    for rel in ("png/grey8.png", "tiff/grey8.tif"):
        out, src = load_image(tmp_path / "out" / rel), load_image(root / "noisy" / rel)
        assert (out.format, out.mode, out.pixels.shape) == (src.format, src.mode, src.pixels.shape)


def test_model_may_be_a_keras_file_or_a_run_folder(corpus, tmp_path, capsys):
    from models.registry import bundled_models, model_card

    root, _ = corpus
    keras_file = bundled_models()[MODEL]  # models/bundled/fashion-mnist.keras
    run_folder = tmp_path / "runs" / "fm"
    run_folder.mkdir(parents=True)
    shutil.copy(keras_file, run_folder / "model.keras")
    (run_folder / "config.json").write_text(json.dumps(model_card(MODEL)["config"]))
    outputs = {}
    for label, model in (("name", MODEL), ("file", str(keras_file)), ("folder", str(run_folder))):
        code = main([str(root / "noisy"), str(tmp_path / label), "--model", model, "--glob", "png/grey8.png",
                     "--no-progress", "--manifest", str(tmp_path / f"{label}.csv")])
        assert code == 0, capsys.readouterr()
        assert "denoised 1 file(s)" in capsys.readouterr().out
        with open(tmp_path / f"{label}.csv", newline="") as fh:
            assert next(csv.DictReader(fh))["model"] == model
        outputs[label] = load_image(tmp_path / label / "png/grey8.png").pixels
    np.testing.assert_array_equal(outputs["file"], outputs["name"])  # the same weights
    np.testing.assert_array_equal(outputs["folder"], outputs["name"])
    assert not np.array_equal(outputs["name"], load_image(root / "noisy" / "png/grey8.png").pixels)
    assert main([str(root / "noisy"), str(tmp_path / "x"), "--model", str(tmp_path / "runs"),
                 "--glob", "png/grey8.png"]) == 2  # a folder without model.keras
    assert "a run folder holding model.keras" in capsys.readouterr().err


def test_precision_flag(corpus, tmp_path, capsys):
    # That bfloat16 denoises as well as float32 is measured in tests/app/test_engine.py; here:
    # the flag reaches the engine and the summary.
    root, _ = corpus
    noisy = load_image(root / "noisy" / "png/grey8.png").pixels
    args = [str(root / "noisy"), "OUT", "--model", MODEL, "--glob", "png/grey8.png", "--no-progress"]
    # The default, auto: bfloat16 where this machine has bfloat16 units, else float32.
    auto = "bfloat16" if native_bfloat16() else "float32"
    for out, flags, precision in (("bf16", ["--precision", "bfloat16"], "bfloat16"), ("auto", [], auto)):
        args[1] = str(tmp_path / out)
        assert main([*args, *flags]) == 0
        assert f"MP/s, {precision})" in capsys.readouterr().out
        written = load_image(tmp_path / out / "png/grey8.png").pixels
        np.testing.assert_array_equal(written, denoise(noisy, as_denoiser(MODEL, precision=precision)).output)
    with pytest.raises(SystemExit):
        main([*args, "--precision", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_ensemble_flag(corpus, tmp_path, capsys):
    # That the ensemble cleans further is measured in tests/app/test_engine.py; here: it arrives.
    root, _ = corpus
    args = [str(root / "noisy"), str(tmp_path / "x2"), "--glob", "png/rgb8.png", "--no-progress"]
    assert main([*args, "--model", "photo", "--ensemble", "2"]) == 0, capsys.readouterr()
    assert main([str(root / "noisy"), str(tmp_path / "x1"), *args[2:], "--model", "photo"]) == 0
    noisy = load_image(root / "noisy" / "png/rgb8.png").pixels
    engine = {n: denoise(noisy, as_denoiser("photo", precision="auto", ensemble=n)).output for n in (1, 2)}
    assert not np.array_equal(engine[1], engine[2])
    for n in (2, 1):  # what the engine gives at that ensemble size (so not the other's)
        np.testing.assert_array_equal(load_image(tmp_path / f"x{n}" / "png/rgb8.png").pixels, engine[n])
    # The grey model was never shown turned clothes: refused before anything is written.
    capsys.readouterr()
    assert main([str(root / "noisy"), str(tmp_path / "refused"), *args[2:], "--model", MODEL,
                 "--ensemble", "2"]) == 2
    assert "--ensemble 2: model fashion-mnist was not trained on flipped" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    # A dry run says so too, from the card, without loading the model.
    assert main([str(root / "noisy"), str(tmp_path / "refused"), *args[2:], "--model", MODEL,
                 "--ensemble", "8", "--dry-run"]) == 2
    assert "--ensemble 8: model fashion-mnist was not trained on flipped" in capsys.readouterr().err
    assert main([str(root / "noisy"), str(tmp_path / "refused"), *args[2:], "--model", "photo",
                 "--ensemble", "8", "--dry-run"]) == 0


def test_an_unusable_reference_never_stops_the_run(corpus, tmp_path, monkeypatch, capsys):
    root, _ = corpus
    ref = tmp_path / "ref"
    (ref / "png").mkdir(parents=True)
    (ref / "tiff").mkdir()
    # Junk EXIF: Pillow's decoder raised SyntaxError (not ImageReadError) from the reference loader.
    Image.new("RGB", (10, 12)).save(ref / "png" / "grey8.webp", exif=b"Exif\x00\x00XX\x00*\x00\x00\x00\x08")
    shutil.copy(root / "clean" / "tiff" / "grey8.png", ref / "tiff" / "grey8.png")
    real = batch.load_image

    def loader(source, **kw):  # whatever data/images.py makes of the webp, this one still escapes
        if Path(source) == ref / "tiff" / "grey8.png":
            raise SyntaxError("simulated decoder error")
        return real(source, **kw)

    monkeypatch.setattr(batch, "load_image", loader)
    code = main([str(root / "noisy"), str(tmp_path / "out"), "--model", MODEL, "--glob", "*/grey8.*",
                 "--reference", str(ref), "--manifest", str(tmp_path / "m.csv"), "--no-progress"])
    assert code == 0, capsys.readouterr()
    with open(tmp_path / "m.csv", newline="") as fh:
        rows = {r["input"]: r for r in csv.DictReader(fh)}
    for rel in ("png/grey8.png", "tiff/grey8.tif"):
        assert rows[rel]["status"] == "done" and (tmp_path / "out" / rel).is_file(), rows[rel]
        assert rows[rel]["detail"] and rows[rel]["psnr_output"] == "", rows[rel]  # said why, not scored
    assert rows["tiff/grey8.tif"]["detail"].startswith("reference unusable: ")
    assert "SyntaxError: simulated decoder error" in rows["tiff/grey8.tif"]["detail"]


def test_names_that_are_not_utf8_are_written_escaped(corpus, tmp_path):
    root, _ = corpus
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    raw = os.fsencode(in_dir) + b"/bad\xffname.png"
    with open(raw, "wb") as fh:
        fh.write((root / "noisy" / "png" / "grey8.png").read_bytes())
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    dry = BatchConfig(in_dir, out_dir, MODEL, dry_run=True, progress=False)
    batch.report(run(dry, out=strict), dry, out=strict)
    for manifest in ("m.csv", "m.json"):
        config = BatchConfig(in_dir, out_dir, MODEL, manifest=tmp_path / manifest, overwrite=True,
                             progress=False)
        summary = run(config)
        batch.report(summary, config, out=strict)
        assert summary.exit_code == 0 and os.path.isfile(os.fsencode(out_dir) + b"/bad\xffname.png")
    strict.flush()
    printed = strict.buffer.getvalue().decode("utf-8")
    assert "denoise  bad\\xffname.png -> " in printed and "denoised 1 file(s)" in printed
    with open(tmp_path / "m.csv", newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert (row["input"], row["output"], row["status"]) == ("bad\\xffname.png", "bad\\xffname.png", "done")
    row = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))[0]
    assert (row["input"], row["output"], row["status"]) == ("bad\\xffname.png", "bad\\xffname.png", "done")


@pytest.mark.parametrize("out_dir, manifest, dry_run, says", [
    ("out", "m.csv", False, "is a folder"),  # m.csv is made a folder
    ("out", "afile/m.json", False, "is a file, not a folder"),
    ("afile/out", None, False, "is a file, not a folder"),
    ("afile/out", None, True, "is a file, not a folder"),
    # /proc refuses new files even to root, where permission bits would not; found out only by
    # trying, so after OUT_DIR is made (it stays empty)
    ("/proc/self", None, False, "OUT_DIR /proc/self cannot be written"),
    ("out", "/proc/self/m.csv", False, "--manifest /proc/self/m.csv cannot be written"),
])
def test_an_out_dir_or_manifest_that_cannot_be_written_is_refused_before_any_file(
        corpus, tmp_path, capsys, out_dir, manifest, dry_run, says):
    root, _ = corpus
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    (tmp_path / "m.csv").mkdir()
    argv = [str(root / "noisy"), str(tmp_path / out_dir), "--model", MODEL, "--glob", "png/grey8.png",
            "--no-progress", *(["--manifest", str(tmp_path / manifest)] if manifest else []),
            *(["--dry-run"] if dry_run else [])]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert says in captured.err and captured.err.count("\n") == 1, captured.err
    assert "denoised" not in captured.out
    out = tmp_path / out_dir
    if manifest and manifest.startswith("/proc"):  # refused once OUT_DIR was made: it stays empty
        assert out.is_dir() and not any(out.iterdir())
    elif not Path(out_dir).is_absolute():  # (/proc/self: nothing can be written there)
        assert not out.exists()
    assert afile.read_text() == "not a folder" and not any((tmp_path / "m.csv").iterdir())


def test_bad_glob_and_tile_are_refused_up_front(corpus, tmp_path, capsys):
    root, _ = corpus
    with pytest.raises(ValueError, match=r"--glob 'a\*\*' is not a valid pattern"):
        BatchConfig(Path("a"), Path("b"), MODEL, glob="a**")
    with pytest.raises(SystemExit) as exit_:
        main([str(root / "noisy"), str(tmp_path / "out"), "--model", MODEL, "--glob", "a**"])
    assert exit_.value.code == 2 and "--glob 'a**' is not a valid pattern" in capsys.readouterr().err
    args = [str(root / "noisy"), str(tmp_path / "out"), "--model", MODEL, "--glob", "png/grey8.png",
            "--no-progress", "--tile", "3"]  # below fashion-mnist's stride of 4 px
    for extra in ([], ["--dry-run"]):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert "--tile 3: tile must be at least the model's stride (4 px), got 3" in err, err
        assert err.count("\n") == 1, err
    assert main([*args[:-1], "64", "--dry-run"]) == 2  # under twice the default 64-px overlap
    err = capsys.readouterr().err
    assert "--tile 64: tile must be at least 128 px, twice the 64-px overlap" in err, err
    assert not (tmp_path / "out").exists()
    assert main([*args[:-1], "128", "--dry-run"]) == 0


def test_images_too_small_for_ssim_get_psnr_and_an_empty_ssim(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("in", "clean"):
        (tmp_path / folder).mkdir()
    clean = rng.integers(0, 256, (2, 40), dtype=np.uint8)
    Image.fromarray(clean).save(tmp_path / "clean" / "thin.png")
    Image.fromarray(np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)).save(
        tmp_path / "in" / "thin.png")
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, reference=tmp_path / "clean",
                              manifest=tmp_path / "m.json", progress=False))
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert summary.exit_code == 0 and row["status"] == "done"
    assert row["psnr_input"] > 10 and row["psnr_output"] > 10
    assert row["ssim_input"] is None and row["ssim_output"] is None  # undefined below 3 px; valid JSON


def test_links_that_lead_nowhere_are_reported_not_silently_left_out(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "in" / "loop.png").symlink_to(tmp_path / "in" / "loop.png")
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, manifest=tmp_path / "m.csv",
                              progress=False))
    rows = {row["input"]: row for row in csv.DictReader((tmp_path / "m.csv").open())}
    assert set(rows) == {"good.png", "gone.png", "loop.png"} and summary.exit_code == 1
    assert rows["good.png"]["status"] == "done" and (tmp_path / "out" / "good.png").is_file()
    for name in ("gone.png", "loop.png"):
        assert (rows[name]["status"], rows[name]["reason"]) == ("failed", "broken_link")
        assert not (tmp_path / "out" / name).exists()


def test_an_animation_says_that_only_its_first_frame_was_written(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (50, 150, 250)]
    frames[0].save(tmp_path / "in" / "anim.gif", save_all=True, append_images=frames[1:])
    run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, manifest=tmp_path / "m.json",
                    progress=False))
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["status"] == "done" and row["detail"].startswith("first of 3 frames")
    assert Image.open(tmp_path / "out" / "anim.gif").n_frames == 1
    main([str(tmp_path / "in"), str(tmp_path / "again"), "--model", MODEL, "--no-progress"])
    assert ("  NOTE anim.gif: first of 3 frames: only it is denoised and written\n"
            in capsys.readouterr().out)


def test_a_multi_page_tiff_has_every_page_denoised_into_a_tiff_and_scored_over_its_pages(tmp_path, capsys):
    # A microscope-like stack: three grey pages of different content and size, noisy, plus its
    # clean version as the reference stack. Into a TIFF every page is denoised and written;
    # into a PNG (--format png) the first only, with a note that says how to keep them all.
    for folder in ("in", "ref"):
        (tmp_path / folder).mkdir()
    cleans = [clean_mosaic(0), clean_mosaic(1)[:40, :60], clean_mosaic(2)]
    noisy = [add_noise(c, 0.2, seed=i) for i, c in enumerate(cleans)]
    as_pages = lambda arrays: [Image.fromarray(a) for a in arrays]  # noqa: E731
    first, *rest = as_pages(noisy)
    first.save(tmp_path / "in" / "stack.tif", save_all=True, append_images=rest,
               compression="tiff_adobe_deflate")
    first, *rest = as_pages(cleans)
    first.save(tmp_path / "ref" / "stack.tif", save_all=True, append_images=rest)
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, reference=tmp_path / "ref",
                              manifest=tmp_path / "m.json", progress=False))
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert summary.exit_code == 0 and row["status"] == "done" and row["pages"] == 3, row
    written = Image.open(tmp_path / "out" / "stack.tif")
    assert written.n_frames == 3 and written.info["compression"] == "tiff_adobe_deflate"  # not our LZW
    gains = []
    for index, (clean, noisy_page) in enumerate(zip(cleans, noisy, strict=True)):
        written.seek(index)
        page = np.asarray(written)
        assert written.mode == "L" and page.shape == clean.shape, index
        gains.append(psnr(to_model(clean), to_model(page)) - psnr(to_model(clean), to_model(noisy_page)))
    assert min(gains) > 4.0, gains  # measured: 7.9, 4.9 and 5.8 dB
    # The manifest's scores are the means over the three pages.
    assert abs(row["psnr_output"] - row["psnr_input"] - np.mean(gains)) < 0.01, (row, gains)
    assert summary.megapixels == pytest.approx(sum(c.size for c in cleans) / 1e6)

    # A stack larger than --max-pixels together, written as a PNG: its first page and the
    # reference's are all that is read, and scored.
    limit = sum(c.size for c in cleans) - 1
    main([str(tmp_path / "in"), str(tmp_path / "png"), "--model", MODEL, "--format", "png",
          "--reference", str(tmp_path / "ref"), "--max-pixels", str(limit),
          "--manifest", str(tmp_path / "png.json"), "--no-progress"])
    row = json.loads((tmp_path / "png.json").read_text())[0]
    assert row["psnr_output"] - row["psnr_input"] == pytest.approx(gains[0], abs=0.01), row
    assert row["pages"] == 1
    assert np.asarray(Image.open(tmp_path / "png" / "stack.png")).shape == cleans[0].shape
    assert ("  NOTE stack.tif: first of 3 frames: only it is denoised and written (a TIFF output keeps "
            "every page)\n" in capsys.readouterr().out)


def test_the_manifest_gives_each_bit_depth_of_a_stack_of_8_and_16_bit_pages(tmp_path):
    (tmp_path / "in").mkdir()
    eight = Image.fromarray(clean_mosaic(0))
    sixteen = Image.fromarray(clean_mosaic(1).astype(np.uint16) * 16)  # 12-bit data: 0..4080
    sixteen.save(tmp_path / "in" / "mixed.tif", save_all=True, append_images=[eight, sixteen])
    for extra, expected in (({}, "8+16"), ({"bit_depth": 12}, "8+12")):
        out = tmp_path / f"out{len(extra)}"
        run(BatchConfig(tmp_path / "in", out, MODEL, manifest=tmp_path / "m.json", progress=False, **extra))
        row = json.loads((tmp_path / "m.json").read_text())[0]
        assert row["status"] == "done" and row["pages"] == 3 and row["bit_depth"] == expected, row
        written = Image.open(out / "mixed.tif")
        written.seek(2)
        assert written.mode == "I;16" and np.asarray(written).max() <= (4095 if extra else 65535)
    (tmp_path / "in" / "mixed.tif").unlink()
    sixteen.save(tmp_path / "in" / "sixteen.tif", save_all=True, append_images=[sixteen])
    run(BatchConfig(tmp_path / "in", tmp_path / "one", MODEL, manifest=tmp_path / "m.json", progress=False))
    assert json.loads((tmp_path / "m.json").read_text())[0]["bit_depth"] == 16  # one depth: a number


def test_a_reference_with_other_pages_leaves_the_stack_unscored_but_denoised(tmp_path):
    for folder in ("in", "ref"):
        (tmp_path / folder).mkdir()
    pages = [Image.fromarray(add_noise(clean_mosaic(i), 0.2, seed=i)) for i in range(3)]
    pages[0].save(tmp_path / "in" / "stack.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "ref" / "stack.tif", save_all=True, append_images=pages[1:2])
    run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, reference=tmp_path / "ref",
                    manifest=tmp_path / "m.json", progress=False))
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["status"] == "done" and row["psnr_output"] == "", row
    assert row["detail"] == "reference has 2 page(s), input 3: not scored"
    assert Image.open(tmp_path / "out" / "stack.tif").n_frames == 3


def test_read_ahead_holds_few_large_images(tmp_path, monkeypatch):
    # 30 images of 160 x 160 with --tile 128 (each denoised alone); the buffer holds two.
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    for i in range(30):
        pixels = rng.integers(0, 256, (160, 160), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "in" / f"{i:02}.png")
    monkeypatch.setattr(batch, "BUFFER_SAMPLES", 2 * 160 * 160)
    held, most = [0], [0]
    real_load, real_save = batch.load_image, batch.save_image

    def load(*args, **kwargs):
        image = real_load(*args, **kwargs)
        held[0] += 1
        most[0] = max(most[0], held[0])
        return image

    def save(*args, **kwargs):
        path = real_save(*args, **kwargs)
        held[0] -= 1
        return path

    monkeypatch.setattr(batch, "load_image", load)
    monkeypatch.setattr(batch, "save_image", save)
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, tile=128, progress=False))
    assert summary.count("done") == 30 and held[0] == 0
    # 2 read ahead, 1 being denoised, 2 waiting to be written, 1 being written; the default
    # look-ahead of 128 files had every one of the 30 in memory at once.
    assert most[0] <= 6, most[0]


def test_links_to_folders_are_followed_once_and_never_into_out_dir(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "elsewhere").mkdir()
    for folder, name in (("in", "top.png"), ("elsewhere", "linked.png")):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / folder / name)
    (tmp_path / "in" / "shared").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "in" / "again").symlink_to(tmp_path / "elsewhere")  # the same folder twice
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    (tmp_path / "out").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "out" / "earlier.png")
    (tmp_path / "in" / "results").symlink_to(tmp_path / "out")
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, progress=False))
    assert sorted(row["input"] for row in summary.rows) == ["again/linked.png", "top.png"]
    assert summary.exit_code == 0 and (tmp_path / "out" / "again" / "linked.png").is_file()


def test_ctrl_c_is_one_line_whether_the_model_is_loading_or_files_are_running(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "in" / f"{i}.png")
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", MODEL, "--no-progress"]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(batch, "as_denoiser", interrupt)
        assert main(args) == 130
    captured = capsys.readouterr()
    assert captured.err == "interrupted before any file was denoised\n" and not captured.out
    real = batch.denoise_many
    calls = []

    def second_call_interrupted(*args, **kwargs):  # --batch-size 1: one model call per file
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "denoise_many", second_call_interrupted)
    assert main([*args, "--batch-size", "1"]) == 130
    out = capsys.readouterr().out
    assert "denoised 1 file(s)" in out and "FAILED" not in out
    assert "interrupted: 4 file(s) not done; rerun the same command to resume" in out


@pytest.mark.parametrize("glob", [None, "**/*.png"])
def test_a_folder_that_cannot_be_listed_is_reported_and_fails_the_run(tmp_path, monkeypatch, capsys, glob):
    for folder in ("in/locked", "in/open"):
        (tmp_path / folder).mkdir(parents=True)
    for rel in ("in/top.png", "in/locked/hidden.png", "in/open/seen.png"):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / rel)
    # Root reads every folder whatever its permission bits, so the refusal is simulated where
    # listing starts: the folder's scandir fails as it does for a user without read permission.
    locked, real_scandir = str(tmp_path / "in" / "locked"), os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", MODEL, "--no-progress",
            "--manifest", str(tmp_path / "m.json"), *(["--glob", glob] if glob else [])]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert ("  FAILED locked/: cannot_list: locked/: the folder cannot be listed (Permission denied); "
            "the images in it were not denoised\n") in out, out
    rows = {row["input"]: row for row in json.loads((tmp_path / "m.json").read_text())}
    assert set(rows) == {"locked/", "open/seen.png", "top.png"}
    assert rows["top.png"]["status"] == rows["open/seen.png"]["status"] == "done"
    # A pattern that cannot reach the folder never opens it: nothing is missing.
    assert main([*args[:2], "--model", MODEL, "--no-progress", "--glob", "open/*.png"]) == 0


def test_a_glob_lists_the_files_pathlibs_glob_finds(tmp_path):
    for rel in ("a.png", "sub/b.png", "sub/deep/c.png", "sub/d.jpg", "sub/deep/er/e.PNG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for pattern in ("**/*.png", "*.png", "sub/*", "sub/**/*.png", "*/*/?.png", "sub/**", "**/deep/**/*",
                    "*/[bd].*", "sub/deep/c.png"):
        expected = sorted(p for p in tmp_path.glob(pattern) if p.is_file())
        assert batch.list_inputs(tmp_path, pattern) == (expected, []), pattern


def _rgba_bmp(path: Path, rgba: np.ndarray) -> None:
    """A 32-bit BMP with an alpha mask in its BITMAPV4HEADER, as image editors save transparency."""
    height, width = rgba.shape[:2]
    body = rgba[..., [2, 1, 0, 3]].tobytes()  # BGRA rows, top-down (negative height)
    header = struct.pack("<IiiHHIIiiII", 108, width, -height, 1, 32, 3, len(body), 2835, 2835, 0, 0)
    header += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) + b"sRGB" + bytes(48)
    path.write_bytes(struct.pack("<2sIHHI", b"BM", 14 + len(header) + len(body), 0, 0, 14 + len(header))
                     + header + body)


def test_alpha_the_output_format_cannot_hold_is_refused_before_it_is_denoised(tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    rgba = np.random.default_rng(6).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    _rgba_bmp(tmp_path / "in" / "alpha.bmp", rgba)
    with Image.open(tmp_path / "in" / "alpha.bmp") as im:
        assert im.mode == "RGBA"
    Image.fromarray(np.full((6, 6), 100, np.uint8)).save(tmp_path / "in" / "plain.png")
    denoised, real = [], batch.denoise_many

    def recording(images, *args, **kwargs):
        denoised.extend(im.shape for im in images)
        return real(images, *args, **kwargs)

    monkeypatch.setattr(batch, "denoise_many", recording)
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", MODEL, "--no-progress"]
    assert main(args) == 1
    assert ("  FAILED alpha.bmp: write_failed: alpha.bmp: BMP cannot store the alpha channel; choose PNG, "
            "TIFF or WEBP (--format png); not denoised\n") in capsys.readouterr().out
    assert denoised == [(6, 6, 1)] and not (tmp_path / "out" / "alpha.bmp").exists()
    assert main([*args[:1], str(tmp_path / "png"), *args[2:], "--format", "png"]) == 0
    np.testing.assert_array_equal(load_image(tmp_path / "png" / "alpha.png").alpha, rgba[..., 3])


def test_an_xmp_oriented_jpeg_is_written_upright_and_scored_only_whole(tmp_path, monkeypatch):
    for folder in ("in", "ref"):
        (tmp_path / folder).mkdir()
    clean = np.random.default_rng(7).integers(0, 256, (24, 40), dtype=np.uint8)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/">'
           b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
           b"</rdf:RDF></x:xmpmeta>")
    Image.fromarray(clean).save(tmp_path / "in" / "rot.jpg", exif=camera_exif(6), xmp=xmp, quality=95)
    Image.fromarray(clean).transpose(Image.Transpose.ROTATE_270).save(tmp_path / "ref" / "rot.png")  # upright
    config = BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, reference=tmp_path / "ref",
                         manifest=tmp_path / "m.json", progress=False, overwrite=True)
    scores = ("psnr_input", "psnr_output", "ssim_input", "ssim_output")
    assert run(config).exit_code == 0
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["status"] == "done" and not row["detail"] and all(row[k] > 0 for k in scores), row
    with Image.open(tmp_path / "out" / "rot.jpg") as im:
        assert ImageOps.exif_transpose(im).size == (24, 40)  # as upright as the reference, for any reader
    # An output that cannot be scored leaves every score empty, the input's too.
    real = batch.load_image

    def turned_output(path, **kwargs):
        image = real(path, **kwargs)
        if Path(path).is_relative_to(tmp_path / "out"):
            return dataclasses.replace(image, pixels=image.pixels.swapaxes(0, 1))
        return image

    monkeypatch.setattr(batch, "load_image", turned_output)
    run(config)
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert row["status"] == "done" and "not scored" in row["detail"], row
    assert all(row[k] == "" for k in scores), row


# ------------------------------------------------------- OUT_DIR's recorded settings


def _two_images(tmp_path: Path) -> tuple[Path, Path]:
    """``(in_dir, out_dir)`` with two small grey images in ``in_dir``, denoised into ``out_dir``
    with the default settings."""
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(8)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "in" / name)
    assert run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, progress=False)).count("done") == 2
    return tmp_path / "in", tmp_path / "out"


def _settings(out_dir: Path) -> dict:
    return json.loads((out_dir / batch.SETTINGS_FILE).read_text())


def test_a_run_records_its_settings_and_the_manifest_too(tmp_path):
    from models.registry import bundled_models

    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "in" / "a.png")
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, strength=0.75, format="png",
                              manifest=tmp_path / "m.json", progress=False))
    model = bundled_models()[MODEL]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    pyproject = tomllib.loads((Path(batch.__file__).parents[1] / "pyproject.toml").read_text())
    assert _settings(tmp_path / "out") == {
        "app_version": pyproject["project"]["version"], "model": MODEL, "model_path": str(model.resolve()),
        "model_sha256": sha, "strength": 0.75, "colour": "per_channel", "ensemble": 1,
        "precision": summary.precision, "format": "PNG", "tile": batch.DEFAULT_TILE, "bit_depth": None,
        "unfinished": False}
    row = json.loads((tmp_path / "m.json").read_text())[0]
    assert (row["status"], row["model_sha256"], row["strength"], row["ensemble"], row["precision"]) == (
        "done", sha, 0.75, 1, summary.precision)


def test_a_resume_says_which_outputs_another_version_made_until_overwrite_redoes_them(
        tmp_path, capsys, monkeypatch):
    # OUT_DIR as a 0.1.0 build left it: a three-page stack written as its first page only.
    (tmp_path / "in").mkdir()
    pages = [Image.fromarray(add_noise(clean_mosaic(i), 0.2, seed=i)) for i in range(3)]
    pages[0].save(tmp_path / "in" / "stack.tif", save_all=True, append_images=pages[1:])
    Image.fromarray(clean_mosaic(4)).save(tmp_path / "in" / "old.png")
    out_dir = tmp_path / "out"
    run(BatchConfig(tmp_path / "in", out_dir, MODEL, progress=False))
    pages[0].save(out_dir / "stack.tif")
    record = _settings(out_dir)
    (out_dir / batch.SETTINGS_FILE).write_text(json.dumps(record | {"app_version": "0.1.0"}))
    args = [str(tmp_path / "in"), str(out_dir), "--model", MODEL, "--no-progress"]
    note = (f"note: OUT_DIR {out_dir} holds outputs of other versions of this app (0.1.0; this is "
            f"{record['app_version']}): files skipped as done may be as those versions wrote them "
            "(0.1.0 builds before multi-page support wrote a multi-page TIFF's first page only); "
            "--overwrite redoes them with this one\n")
    kept = record | {"other_versions": ["0.1.0"]}

    def resume(*extra: str) -> None:
        assert main([*args, *extra]) in (0, 130)
        assert note in capsys.readouterr().out
        assert Image.open(out_dir / "stack.tif").n_frames == 1
        assert _settings(out_dir) == (record | {"app_version": "0.1.0"} if "--dry-run" in extra else kept)

    Image.fromarray(clean_mosaic(3)).save(tmp_path / "in" / "new.png")
    for extra in (["--dry-run"], [], [], ["--glob", "new.png"]):  # every resume says so, not only the first
        resume(*extra)
    # An --overwrite that does not redo every file leaves outputs of 0.1.0: still said.
    main([*args, "--overwrite", "--glob", "old.png"])
    resume()
    real, calls = batch.denoise_many, []

    def second_call_interrupted(*a, **kw):  # --batch-size 1: one model call per file
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(batch, "denoise_many", second_call_interrupted)
        assert main([*args, "--overwrite", "--batch-size", "1"]) == 130
    capsys.readouterr()
    resume()  # new.png redone, the rest not: still said
    # A record edited by hand: a list of something else is ignored, not a crash.
    (out_dir / batch.SETTINGS_FILE).write_text(json.dumps(kept | {"other_versions": 1}))
    assert main([*args, "--overwrite", "--dry-run"]) == 0
    assert main([*args, "--overwrite"]) == 0
    assert "other versions" not in capsys.readouterr().out
    assert Image.open(out_dir / "stack.tif").n_frames == 3 and _settings(out_dir) == record
    assert main(args) == 0 and "other versions" not in capsys.readouterr().out
    # A record of 0.1.0 over a folder whose outputs are gone: this version writes them all.
    for output in out_dir.iterdir():
        if output.name != batch.SETTINGS_FILE:
            output.unlink()
    (out_dir / batch.SETTINGS_FILE).write_text(json.dumps(record | {"app_version": "0.1.0"}))
    assert main(args) == 0 and "other versions" not in capsys.readouterr().out
    assert _settings(out_dir) == record


def test_a_rerun_with_other_settings_is_refused_and_writes_nothing(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    before = snapshot(out_dir)
    args = [str(in_dir), str(out_dir), "--model", MODEL, "--no-progress", "--strength", "0.5"]
    for extra in ([], ["--dry-run"], ["--manifest", str(tmp_path / "m.csv")]):
        assert main([*args, *extra]) == 2
        captured = capsys.readouterr()
        assert (f"error: OUT_DIR {out_dir} holds outputs made with other settings (strength 1.0 -> 0.5): "
                "pass --overwrite to redo every file with the new settings, or choose another OUT_DIR\n"
                == captured.err), captured.err
        assert not captured.out
    assert snapshot(out_dir) == before and not (tmp_path / "m.csv").exists()


def test_a_rerun_with_another_bit_depth_is_refused(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    before = snapshot(out_dir)
    args = [str(in_dir), str(out_dir), "--model", MODEL, "--no-progress"]
    for extra in (["--bit-depth", "12"], ["--bit-depth", "12", "--dry-run"]):
        assert main([*args, *extra]) == 2
        assert (f"error: OUT_DIR {out_dir} holds outputs made with other settings (bit_depth (each input's "
                "own) -> 12): pass --overwrite" in capsys.readouterr().err)
    assert snapshot(out_dir) == before
    assert run(BatchConfig(in_dir, out_dir, MODEL, bit_depth=12, overwrite=True, progress=False)).count(
        "done") == 2
    assert _settings(out_dir)["bit_depth"] == 12
    after = snapshot(out_dir)
    for extra, change in ((["--bit-depth", "14"], "12 -> 14"), ([], "12 -> (each input's own)")):
        assert main([*args, *extra]) == 2
        assert f"(bit_depth {change})" in capsys.readouterr().err
    assert snapshot(out_dir) == after


def test_overwrite_redoes_every_file_with_new_settings_and_records_them(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    before = snapshot(out_dir)
    # Limited by --glob, an --overwrite with new settings leaves b.png's old output: a rerun
    # without --overwrite is refused until every file has been redone.
    glob = run(BatchConfig(in_dir, out_dir, MODEL, strength=0.5, overwrite=True, glob="a.png",
                           progress=False))
    assert glob.count("done") == 1 and _settings(out_dir)["unfinished"] is True
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress", "--strength", "0.5"]) == 2
    assert "a run with --overwrite did not redo every file" in capsys.readouterr().err
    redo = run(BatchConfig(in_dir, out_dir, MODEL, strength=0.5, overwrite=True, progress=False))
    assert redo.count("done") == 2
    after = snapshot(out_dir)
    assert all(after[name][0] != before[name][0] for name in ("a.png", "b.png"))  # other pixels
    assert _settings(out_dir)["strength"] == 0.5 and _settings(out_dir)["unfinished"] is False
    again = run(BatchConfig(in_dir, out_dir, MODEL, strength=0.5, progress=False))
    assert again.count("skipped") == 2 and snapshot(out_dir) == after


def test_an_input_changed_since_its_output_is_redone_the_others_skipped(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    earlier = (in_dir / "a.png").stat().st_mtime_ns - 10**9  # a.png edited after its output was written
    os.utime(out_dir / "a.png", ns=(earlier, earlier))
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--dry-run"]) == 0
    assert "denoise  a.png -> " in capsys.readouterr().out
    summary = run(BatchConfig(in_dir, out_dir, MODEL, manifest=tmp_path / "m.json", progress=False))
    rows = {row["input"]: row for row in json.loads((tmp_path / "m.json").read_text())}
    assert (rows["a.png"]["status"], rows["a.png"]["reason"]) == ("done", "input_changed")
    assert rows["a.png"]["detail"] == "input changed since its output was written"
    assert (rows["b.png"]["status"], rows["b.png"]["reason"]) == ("skipped", "output_exists")
    assert summary.count("done") == 1 and (out_dir / "a.png").stat().st_mtime_ns > earlier
    assert run(BatchConfig(in_dir, out_dir, MODEL, progress=False)).count("skipped") == 2  # up to date


def test_an_out_dir_made_by_older_code_still_resumes(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    (out_dir / batch.SETTINGS_FILE).unlink(missing_ok=True)  # as older code left it: outputs, no settings
    before = snapshot(out_dir)
    later = (out_dir / "a.png").stat().st_mtime_ns + 10**9
    os.utime(in_dir / "a.png", ns=(later, later))
    capsys.readouterr()
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress", "--strength", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"note: OUT_DIR {out_dir} has outputs but no .dae-batch.json (older code made "
                          "them): they are kept whatever settings made them, and no settings are "
                          "recorded until --overwrite redoes them\n"), out
    assert "denoised 0 file(s)" in out and "skipped 2" in out
    assert snapshot(out_dir) == before  # no record claims outputs of unknown settings
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress"]) == 0  # resumes again
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress", "--overwrite",
                 "--strength", "0.5"]) == 0
    assert _settings(out_dir)["strength"] == 0.5 and not _settings(out_dir)["unfinished"]


# ------------------------------------------------------- --bit-depth: N-bit data in 16-bit files


def _psnr_12_bit(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR on the 12-bit scale (data range 4095)."""
    error = estimate.astype(np.float64).reshape(clean.shape) - clean
    return float(10 * np.log10(4095.0**2 / np.mean(error**2)))


def test_twelve_bit_data_in_sixteen_bit_files_are_denoised_with_bit_depth_12(tmp_path):
    # A 12-bit camera's image (0..4095 in a 16-bit PNG): without --bit-depth it reaches the
    # model at 1/16 of its brightness, with noise 16 times weaker than the model knows.
    for folder in ("in", "ref"):
        (tmp_path / folder).mkdir()
    clean = np.rint(np.concatenate([clean_mosaic(0), clean_mosaic(1)]) * (4095 / 255)).astype(np.uint16)
    noise = np.random.default_rng(12).normal(0, 0.1 * 4095, clean.shape)
    noisy = np.clip(np.rint(clean + noise), 0, 4095).astype(np.uint16)
    Image.fromarray(noisy).save(tmp_path / "in" / "camera.png")
    Image.fromarray(clean).save(tmp_path / "ref" / "camera.png")
    Image.fromarray(clean_mosaic(2)).save(tmp_path / "in" / "eight.png")  # 8-bit: as usual
    outputs, rows = {}, {}
    for bits in (None, 12):
        out = tmp_path / f"out{bits}"
        summary = run(BatchConfig(tmp_path / "in", out, MODEL, bit_depth=bits, reference=tmp_path / "ref",
                                  manifest=tmp_path / f"m{bits}.json", progress=False))
        assert summary.count("done") == 2, summary.rows
        outputs[bits] = {name: load_image(out / name).pixels for name in ("camera.png", "eight.png")}
        rows[bits] = {row["input"]: row for row in json.loads((tmp_path / f"m{bits}.json").read_text())}
    written = outputs[12]["camera.png"]
    assert written.dtype == np.uint16 and written.max() <= 4095
    # Measured: noisy 21.7 dB; without --bit-depth 19.0 dB (worse than the input), with it 26.7 dB.
    noisy_psnr, plain, twelve = (_psnr_12_bit(x, clean)
                                 for x in (noisy, outputs[None]["camera.png"], written))
    assert twelve > noisy_psnr + 3.0 and twelve > plain + 4.0, (noisy_psnr, plain, twelve)
    # The manifest scores the reference on the same 12-bit scale.
    row = rows[12]["camera.png"]
    assert row["bit_depth"] == 12 and rows[None]["camera.png"]["bit_depth"] == 16
    assert abs(row["psnr_input"] - noisy_psnr) < 0.01 and abs(row["psnr_output"] - twelve) < 0.01, row
    np.testing.assert_array_equal(outputs[12]["eight.png"], outputs[None]["eight.png"])
    assert rows[12]["eight.png"]["bit_depth"] == 8


def test_values_above_the_bit_depth_fail_that_file_and_the_others_are_done(tmp_path, capsys):
    for folder in ("in", "ref"):
        (tmp_path / folder).mkdir()
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 64  # 0..4032: 12-bit
    Image.fromarray(ramp).save(tmp_path / "in" / "fits.png")
    Image.fromarray(ramp + 968).save(tmp_path / "in" / "over.png")  # up to 5000
    Image.fromarray(ramp + 968).save(tmp_path / "ref" / "fits.png")  # costs the scores only
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "in" / "eight.png")
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", MODEL, "--no-progress",
            "--bit-depth", "12", "--reference", str(tmp_path / "ref"), "--manifest", str(tmp_path / "m.json")]
    assert main(args) == 1
    assert ("  FAILED over.png: above_bit_depth: over.png: holds values up to 5000, above the 12-bit maximum "
            "4095 (--bit-depth 12); not denoised\n") in capsys.readouterr().out
    rows = {row["input"]: row for row in json.loads((tmp_path / "m.json").read_text())}
    assert (rows["over.png"]["status"], rows["over.png"]["reason"]) == ("failed", "above_bit_depth")
    assert not (tmp_path / "out" / "over.png").exists()
    assert rows["fits.png"]["status"] == rows["eight.png"]["status"] == "done"
    assert rows["fits.png"]["detail"] == (f"reference unusable: {tmp_path / 'ref' / 'fits.png'}: holds "
                                          "values up to 5000, above the 12-bit maximum 4095 (--bit-depth 12)")
    assert rows["fits.png"]["psnr_output"] == ""
    assert load_image(tmp_path / "out" / "fits.png").pixels.max() <= 4095
    with pytest.raises(SystemExit):
        main([*args[:-2], "--bit-depth", "8"])
    err = capsys.readouterr().err
    assert "--bit-depth must be 9 to 16 (the bits a 16-bit file's samples use), got 8" in err, err


def test_with_strength_0_bit_depth_data_come_back_unchanged_or_at_full_range_in_8_bits(tmp_path):
    (tmp_path / "in").mkdir()
    ramp = np.linspace(0, 1023, 16 * 16).round().astype(np.uint16).reshape(16, 16)  # 10-bit
    Image.fromarray(ramp).save(tmp_path / "in" / "ramp.png")
    for fmt in (None, "bmp"):  # BMP holds 8 bits: the full range, not 0..1023 / 257
        out = tmp_path / f"out-{fmt}"
        assert run(BatchConfig(tmp_path / "in", out, MODEL, strength=0.0, bit_depth=10, format=fmt,
                               progress=False)).count("done") == 1
        written = load_image(next(out.glob("ramp.*"))).pixels[..., 0]
        expected = ramp if fmt is None else np.rint(ramp * (255 / 1023)).astype(np.uint8)
        np.testing.assert_array_equal(written, expected)


def test_a_resume_may_change_the_tile_alone(corpus, tmp_path, capsys):
    root, _ = corpus
    args = [str(root / "noisy"), str(tmp_path / "out"), "--model", MODEL, "--glob", "png/grey8.png",
            "--no-progress"]
    assert main([*args, "--tile", "256"]) == 0
    capsys.readouterr()
    # Another --tile resumes (the output is skipped, not refused); another --strength is refused.
    assert main([*args, "--tile", "128"]) == 0
    assert "strength" not in capsys.readouterr().err
    assert main([*args, "--tile", "128", "--strength", "0.5"]) == 2
    assert "strength 1.0 -> 0.5" in capsys.readouterr().err


def test_an_overwrite_with_failed_files_leaves_the_folder_unfinished(tmp_path, capsys):
    # Outputs made without --bit-depth; an --overwrite with --bit-depth 12 redoes the file that
    # is 12-bit data and fails the one that is not, whose old output stays: the record must not
    # claim every output is 12-bit work.
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "in" / "twelve.png")
    Image.fromarray(np.full((8, 8), 60000, np.uint16)).save(tmp_path / "in" / "sixteen.png")
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    assert run(BatchConfig(in_dir, out_dir, MODEL, progress=False)).count("done") == 2
    summary = run(BatchConfig(in_dir, out_dir, MODEL, progress=False, overwrite=True, bit_depth=12))
    assert (summary.count("done"), summary.count("failed")) == (1, 1)
    assert _settings(out_dir)["bit_depth"] == 12 and _settings(out_dir)["unfinished"]
    capsys.readouterr()
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress", "--bit-depth", "12"]) == 2
    assert "a run with --overwrite did not redo every file" in capsys.readouterr().err


def test_a_dry_run_checks_the_tile_against_a_run_folders_stride(tmp_path, capsys):
    from tests.training.representation_fixtures import save_tiny_dae

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_tiny_dae(run_dir / "model.keras")  # stride 4
    (run_dir / "config.json").write_text(json.dumps({"widths": [4, 8], "dataset": "mnist"}))
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "a.png")
    argv = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(run_dir), "--no-progress",
            "--tile", "64"]
    for extra in (["--dry-run"], []):  # refused alike, with or without loading the model
        assert main([*argv, *extra]) == 2
        assert "--tile 64: tile must be at least 128 px" in capsys.readouterr().err


# ------------------------------------------------------- folders that may not be entered


@pytest.fixture
def no_entry(monkeypatch):
    """``no_entry(folder)``: whatever lies below ``folder`` cannot be looked at, as for a user
    without execute (search) permission on it; the folder itself can. Root enters every folder
    whatever its bits, so the refusal is simulated where pathlib and os.path meet it: os.stat."""
    locked, real_stat = [], os.stat

    def stat(path, *args, **kwargs):
        if any(Path(os.fsdecode(path)).is_relative_to(folder) and Path(os.fsdecode(path)) != folder
               for folder in locked):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    return locked.append


def test_an_out_dir_or_manifest_below_a_folder_that_may_not_be_entered_is_one_line(
        tmp_path, capsys, no_entry):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "locked").mkdir()
    no_entry(tmp_path / "locked")
    in_dir, out_dir, locked = str(tmp_path / "in"), str(tmp_path / "out"), tmp_path / "locked"
    opts = ["--model", MODEL, "--no-progress"]
    for argv in ([in_dir, str(locked / "out"), *opts],
                 [in_dir, out_dir, *opts, "--manifest", str(locked / "m.csv")],
                 [in_dir, out_dir, *opts, "--reference", str(locked / "ref")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot be looked at: Permission denied" in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_files_and_outputs_that_may_not_be_looked_at_fail_their_rows_only(tmp_path, capsys, no_entry):
    for folder in ("in/listable", "in/open", "out/sub"):
        (tmp_path / folder).mkdir(parents=True)
    for rel in ("in/listable/a.png", "in/open/b.png", "in/sub/c.png", "in/top.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / rel)
    no_entry(tmp_path / "in" / "listable")  # its names can be read, its files not looked at
    no_entry(tmp_path / "out" / "sub")      # an output folder left by another user
    argv = [str(tmp_path / "in"), str(tmp_path / "out"), "--model", MODEL, "--no-progress",
            "--manifest", str(tmp_path / "m.json")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    rows = {row["input"]: row for row in json.loads((tmp_path / "m.json").read_text())}
    assert (rows["listable/"]["status"], rows["listable/"]["reason"]) == ("failed", "cannot_list")
    assert "Permission denied" in rows["listable/"]["detail"]
    assert (rows["sub/c.png"]["status"], rows["sub/c.png"]["reason"]) == ("failed", "cannot_write")
    assert rows["open/b.png"]["status"] == rows["top.png"]["status"] == "done"
    assert set(rows) == {"listable/", "open/b.png", "sub/c.png", "top.png"}


def test_a_manifest_cannot_take_the_place_of_out_dirs_own_files(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    record = (out_dir / batch.SETTINGS_FILE).read_bytes()
    for name in (batch.SETTINGS_FILE, ".notes.json", "sub/.x.partial.csv"):
        argv = [str(in_dir), str(out_dir), "--model", MODEL, "--no-progress",
                "--manifest", str(out_dir / name)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a hidden file in OUT_DIR" in err and err.count("\n") == 1, err
    assert (out_dir / batch.SETTINGS_FILE).read_bytes() == record
    # A manifest in OUT_DIR under a plain name is fine, and the folder still resumes.
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress",
                 "--manifest", str(out_dir / "manifest.csv")]) == 0


def test_a_palette_image_with_transparency_keeps_its_alpha_in_a_tiff(tmp_path):
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(3)
    index = rng.integers(0, 16, (28, 28), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette([v for i in range(16) for v in (i * 16, 255 - i * 16, 128)])
    im.info["transparency"] = 15
    im.save(tmp_path / "in" / "logo.png")
    im.save(tmp_path / "in" / "anim.gif", transparency=15)
    transparent = index == 15
    summary = run(BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, format="tiff", progress=False))
    assert summary.count("done") == 2
    for name in ("logo.tif", "anim.tif"):
        out = load_image(tmp_path / "out" / name)
        assert out.alpha is not None, name
        np.testing.assert_array_equal(out.alpha[..., 0] if out.alpha.ndim == 3 else out.alpha,
                                      np.where(transparent, 0, 255))


def test_a_file_that_never_had_an_output_does_not_leave_an_overwrite_unfinished(tmp_path, capsys):
    in_dir, out_dir = _two_images(tmp_path)
    (in_dir / "broken.png").write_bytes(b"not a png")
    summary = run(BatchConfig(in_dir, out_dir, MODEL, progress=False, overwrite=True, strength=0.5))
    assert (summary.count("done"), summary.count("failed")) == (2, 1)
    assert not _settings(out_dir)["unfinished"]
    # The same command without --overwrite resumes: nothing to redo, the broken file fails again.
    assert main([str(in_dir), str(out_dir), "--model", MODEL, "--no-progress", "--strength", "0.5"]) == 1
    assert "did not redo every file" not in capsys.readouterr().err


def test_a_rerun_keeps_the_figures_of_the_outputs_it_skips(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    rng = np.random.default_rng(5)
    for seed, name in enumerate(("a.png", "b.png")):
        clean = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(clean).save(tmp_path / "ref" / name)
        Image.fromarray(add_noise(clean, 0.2, seed)).save(tmp_path / "in" / name)
    config = BatchConfig(tmp_path / "in", tmp_path / "out", MODEL, reference=tmp_path / "ref",
                         manifest=tmp_path / "m.csv", progress=False)
    assert run(config).count("done") == 2

    def rows():
        with open(tmp_path / "m.csv", newline="") as fh:
            return {r["input"]: r for r in csv.DictReader(fh)}

    first = rows()
    for folder in ("in", "ref"):
        (tmp_path / folder / "c.png").write_bytes((tmp_path / folder / "a.png").read_bytes())
    assert run(config).count("done") == 1
    again = rows()
    for name in ("a.png", "b.png"):
        assert again[name]["status"] == "skipped", again[name]
        for key in ("psnr_input", "psnr_output", "ssim_output", "seconds", "bytes_out", "width"):
            assert again[name][key] == first[name][key] != "", (name, key)
    assert again["c.png"]["status"] == "done" and again["c.png"]["psnr_output"] != ""
    # An output changed since (another size) keeps no figures that are no longer its own.
    (tmp_path / "out" / "b.png").write_bytes((tmp_path / "in" / "b.png").read_bytes() + b"\0")
    run(config)
    assert rows()["b.png"]["psnr_output"] == ""
    assert rows()["a.png"]["psnr_output"] == first["a.png"]["psnr_output"]
    # A manifest saved again by a spreadsheet (a byte-order mark before the header) is still one.
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "m.csv").read_bytes())
    assert run(config).count("done") == 0 and rows()["a.png"]["psnr_output"] == first["a.png"]["psnr_output"]
    # Against another reference folder, the old scores are not this run's: left empty.
    shutil.copytree(tmp_path / "ref", tmp_path / "ref2")
    other = run(dataclasses.replace(config, reference=tmp_path / "ref2"))
    assert other.count("done") == 0
    assert rows()["a.png"]["psnr_output"] == ""
    assert rows()["a.png"]["bytes_out"] == first["a.png"]["bytes_out"]
    assert rows()["a.png"]["reference"] == str(tmp_path / "ref2")
    run(config)
    # An output another run rewrote since (no manifest; same size) keeps no figures of the old one.
    os.utime(tmp_path / "out" / "a.png", ns=(time.time_ns(), (tmp_path / "m.csv").stat().st_mtime_ns + 10**9))
    run(config)
    assert rows()["a.png"]["psnr_output"] == "" and rows()["a.png"]["seconds"] == ""


@pytest.mark.parametrize("name,text", [("m.csv", "name,score\nalice,3\n"), ("m.csv", "name,score\n"),
                                       ("m.json", '{"not": "a list"}'), ("m.json", "[1, 2]")])
def test_a_manifest_name_that_holds_another_file_is_refused_and_left_alone(tmp_path, capsys, name, text):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "in" / "a.png")
    (tmp_path / name).write_text(text)
    for extra in ([], ["--dry-run"]):
        assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", MODEL, "--no-progress",
                     "--manifest", str(tmp_path / name), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not a manifest" in err and "not replaced" in err and err.count("\n") == 1, err
    assert (tmp_path / name).read_text() == text and not (tmp_path / "out").exists()


@pytest.mark.parametrize("channels", [1, 3])
def test_a_twelve_bit_pgm_or_ppm_comes_back_at_its_own_maxval(tmp_path, channels):
    # A netpbm file declares its depth: maxval 4095 is 12-bit data, read at full scale and
    # written back at 4095, the manifest saying 12 bits, with or without --bit-depth 12.
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(12)
    raw = rng.integers(0, 4096, (28, 28, channels)).astype(">u2")
    name = "cam.pgm" if channels == 1 else "cam.ppm"
    (tmp_path / "in" / name).write_bytes(b"P%d\n28 28\n4095\n" % (5 if channels == 1 else 6) + raw.tobytes())
    assert load_image(tmp_path / "in" / name).info["maxval"] == 4095
    for extra, out in (({}, "out"), ({"bit_depth": 12}, "out12"), ({"strength": 0.0}, "same")):
        config = BatchConfig(tmp_path / "in", tmp_path / out, MODEL, manifest=tmp_path / f"{out}.json",
                             progress=False, **extra)
        assert run(config).count("done") == 1, out
        data = (tmp_path / out / name).read_bytes()
        header = b"P%d\n28 28\n4095\n" % (5 if channels == 1 else 6)
        assert data.startswith(header), data[:20]
        samples = np.frombuffer(data[len(header):], ">u2").reshape(raw.shape)
        assert samples.max() <= 4095 and samples.std() > 100, out
        if out == "same":  # strength 0: the samples come back exactly
            np.testing.assert_array_equal(samples, raw)
        assert json.loads((tmp_path / f"{out}.json").read_text())[0]["bit_depth"] == 12
    # Into a PNG, which holds no maxval: with --bit-depth 12, on the 0..4095 scale as every
    # other 12-bit file of the run; without it, at full scale.
    for bits, top in ((12, 4095), (None, 65535)):
        out = tmp_path / f"png{bits}"
        assert run(BatchConfig(tmp_path / "in", out, MODEL, format="png", bit_depth=bits,
                               progress=False)).count("done") == 1
        written = load_image(out / "cam.png").pixels
        assert written.dtype == np.uint16 and top // 2 < written.max() <= top, (bits, written.max())
