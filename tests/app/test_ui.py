"""Unit tests of the UI's handlers (app/ui.py), called directly on real files and the real engine."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.data_classes import ImageData
from PIL import Image

from app import ui
from app.engine import denoise
from data.corruption import corrupt
from data.images import from_model, load_image, to_model
from data.metrics import psnr
from tests.corpus import png_header_only

SAMPLES = Path(ui.SAMPLES_DIR)
MODEL = "fashion-mnist"


def no_progress(*args, **kwargs):
    """Stands in for gr.Progress outside a running server."""


@pytest.fixture(scope="module")
def app():
    return ui.DenoiserApp(ui.model_choices())


def write_png(path, pixels, mode=None):
    Image.fromarray(pixels, mode).save(path)
    return str(path)


def grey16(tmp_path, size=(32, 40)):
    ramp = np.linspace(1000, 60000, size[0] * size[1]).reshape(size).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)  # Pillow writes uint16 arrays as 16-bit grey ("I;16")
    return str(path), ramp


def test_prepare_corrupts_with_the_seed_and_keeps_bit_depth(tmp_path):
    path, ramp = grey16(tmp_path)
    first = ui.prepare(path, None, "gaussian", 0.2, 3)
    again = ui.prepare(path, None, "gaussian", 0.2, 3)
    other = ui.prepare(path, None, "gaussian", 0.2, 4)
    assert first.image.pixels.dtype == np.uint16 and first.image.pixels.shape == (32, 40, 1)
    np.testing.assert_array_equal(first.image.pixels, again.image.pixels)
    assert not np.array_equal(first.image.pixels, other.image.pixels)
    np.testing.assert_allclose(first.clean, to_model(ramp), atol=1e-6)  # the upload is its own reference
    noise_std = float(np.std(to_model(first.image.pixels) - first.clean))
    assert 0.15 < noise_std < 0.22  # gaussian 0.2, a little less where clipping bites
    assert first.name == "ramp16"


def test_prepare_uses_an_uploaded_reference_in_the_image_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    image = write_png(tmp_path / "noisy.png", rgb[..., 0])
    reference = write_png(tmp_path / "clean.png", rgb)
    prepared = ui.prepare(image, reference, "none", 0.0, 0)
    assert prepared.clean.shape == (24, 20, 1)  # colour reference turned grey like the image
    np.testing.assert_array_equal(prepared.image.pixels[..., 0], rgb[..., 0])


def test_an_uploaded_reference_is_the_clean_image_with_a_corruption_too(tmp_path, app):
    # A noisy upload, corrupted further: scored against the clean reference, not against the
    # noisy upload (which made the model look as if it made the photo worse: 26.2 -> 18.8 dB).
    noisy, clean = str(SAMPLES / "photo_gaussian.png"), str(SAMPLES / "photo_clean.png")
    prepared = ui.prepare(noisy, clean, "gaussian", 0.05, 3)
    np.testing.assert_array_equal(prepared.clean, to_model(load_image(clean).pixels))
    _, _, scores, _ = app.denoise(noisy, "photo", 1.0, "gaussian", 0.05, 3, clean, progress=no_progress)
    assert scores["denoised_psnr"] > scores["noisy_psnr"] + 5, scores
    rows = {row[0]: row[1] for row in app.compare(noisy, "photo", "gaussian", 0.05, 3, clean,
                                                  progress=no_progress)[1]}
    assert rows["noisy input"] == scores["noisy_psnr"]


def test_prepare_refuses_a_reference_of_another_size(tmp_path):
    image = write_png(tmp_path / "a.png", np.zeros((32, 32), np.uint8))
    reference = write_png(tmp_path / "b.png", np.zeros((12, 10), np.uint8))
    with pytest.raises(gr.Error, match="the reference is 10 x 12 but the image is 32 x 32"):
        ui.prepare(image, reference, "none", 0.0, 0)


def test_read_upload_says_what_is_wrong_without_server_paths(tmp_path):
    text = tmp_path / "holiday.png"
    text.write_text("this is not a picture")
    with pytest.raises(gr.Error) as err:
        ui.read_upload(str(text), "image", ui.DEFAULT_MAX_PIXELS)
    assert "'holiday.png'" in err.value.message and "not an image" in err.value.message
    assert str(tmp_path) not in err.value.message
    with pytest.raises(gr.Error, match="no image: upload an image first"):
        ui.read_upload(None, "image", ui.DEFAULT_MAX_PIXELS)


def test_read_upload_refuses_too_many_pixels_instead_of_downscaling(tmp_path):
    path = write_png(tmp_path / "big.png", np.zeros((40, 50), np.uint8))
    with pytest.raises(gr.Error, match="never downscales"):
        ui.read_upload(path, "image", max_pixels=1000)
    assert ui.read_upload(path, "image", max_pixels=2000).pixels.shape == (40, 50, 1)


def test_default_pixel_limit_takes_a_24_megapixel_photo(tmp_path):
    assert ui.parse_args([]).max_pixels == ui.DEFAULT_MAX_PIXELS == 25_000_000
    camera = tmp_path / "camera.png"
    camera.write_bytes(png_header_only(6000, 4000))  # a 24 MP header with no pixel data behind it
    with pytest.raises(gr.Error) as err:
        ui.read_upload(str(camera), "image", ui.DEFAULT_MAX_PIXELS)
    assert "truncated" in err.value.message  # past the size check: only the missing pixels stop it
    bigger = tmp_path / "bigger.png"
    bigger.write_bytes(png_header_only(6400, 4000))  # 25.6 MP
    with pytest.raises(gr.Error, match=r"6400 x 4000 = 25\.6 MP is more than the 25 MP limit"):
        ui.read_upload(str(bigger), "image", ui.DEFAULT_MAX_PIXELS)


def test_raw_upload_payloads_are_read_by_our_reader_from_the_upload_folder_only(app, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    text = tmp_path / "uploads" / "0123abcd" / "notes.png"
    text.parent.mkdir(parents=True)
    text.write_text("hello")
    payload = {"path": str(text), "orig_name": "notes.png", "meta": {"_type": "gradio.FileData"}}
    assert ui.upload_path(payload) == str(text)
    assert ui.upload_path(ImageData(path=str(text))) == str(text)
    assert ui.upload_path(None) is None and ui.upload_path("") is None
    with pytest.raises(gr.Error, match="image 'notes.png': not an image"):
        app.denoise(payload, MODEL, 1.0, "none", 0.0, 0, None, progress=no_progress)
    # A client may name any path in a payload: outside the upload folder, none is read, for the
    # image or the reference, with or without Gradio's mark, however the path is spelled.
    clean = str(SAMPLES / "clothes_clean.png")
    inside = {"path": str(shutil.copy(SAMPLES / "clothes_gaussian.png", text.parent))}
    for outside in ({"path": clean}, {"path": clean, "meta": {"_type": "gradio.FileData"}},
                    {"path": str(text.parent / ".." / ".." / "notes.png")}):
        for image, reference in ((outside, None), (inside, outside)):
            with pytest.raises(gr.Error, match="only uploaded files are read: upload the image"):
                app.denoise(image, MODEL, 1.0, "none", 0.0, 0, reference, progress=no_progress)
    link = text.parent / "link.png"  # nor through a link in the upload folder
    link.symlink_to(SAMPLES / "clothes_clean.png")
    with pytest.raises(gr.Error, match="only uploaded files are read"):
        app.compare({"path": str(link)}, MODEL, "none", 0.0, 0, None, progress=no_progress)
    assert app.denoise(inside, MODEL, 1.0, "none", 0.0, 0, None, progress=no_progress)[2]["width"] == 140


def test_denoise_raises_psnr_and_writes_a_full_size_png(app):
    preview, residual, report, png = app.denoise(
        str(SAMPLES / "clothes_gaussian.png"), MODEL, 1.0, "none", 0.0, 0,
        str(SAMPLES / "clothes_clean.png"), progress=no_progress)
    assert report["denoised_psnr"] > report["noisy_psnr"] + 3.0
    assert report["denoised_ssim"] > report["noisy_ssim"]
    assert (report["width"], report["height"], report["mode"], report["bit_depth"]) == (140, 56, "L", 8)
    with Image.open(png) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (140, 56))
        written = np.asarray(im)
    np.testing.assert_array_equal(written, preview[1])  # the download is exactly the shown result
    clean = to_model(load_image(SAMPLES / "clothes_clean.png").pixels)
    assert float(psnr(clean, to_model(written))) == pytest.approx(report["denoised_psnr"], abs=1e-3)
    assert residual.shape == (56, 140) and residual.dtype == np.uint8
    assert Path(png).name == "clothes_gaussian-denoised.png"


def test_a_bfloat16_server_computes_in_bfloat16(app):
    # That bfloat16 denoises as well as float32 is measured in tests/app/test_engine.py.
    fast = ui.DenoiserApp(ui.model_choices(), precision=ui.parse_args(["--precision", "bfloat16"]).precision)
    encoder = fast.denoiser(MODEL).model.get_layer("encoder")
    assert encoder.get_layer("down0_conv0").compute_dtype == "bfloat16"
    report = fast.denoise(str(SAMPLES / "clothes_gaussian.png"), MODEL, 1.0, "none", 0.0, 0,
                          str(SAMPLES / "clothes_clean.png"), progress=no_progress)[2]
    assert report["precision"] == "bfloat16" and report["denoised_psnr"] > report["noisy_psnr"] + 3.0
    assert app.denoiser(MODEL).precision == "float32"  # the handlers' default
    with pytest.raises(ValueError, match="precision must be one of"):
        ui.DenoiserApp(ui.model_choices(), precision="float16")


def test_self_ensemble_on_the_photo_model_and_refused_for_the_grey_one(app):
    # That the ensemble cleans further is measured in tests/app/test_engine.py; here: it arrives.
    args = (str(SAMPLES / "photo_gaussian.png"), "photo", 1.0, "none", 0.0, 0,
            str(SAMPLES / "photo_clean.png"))
    _, _, plain, plain_png = app.denoise(*args, progress=no_progress)
    _, _, two, two_png = app.denoise(*args, 2, progress=no_progress)
    assert (plain["ensemble"], two["ensemble"]) == (1, 2)  # the report says which ran
    written = {n: load_image(png).pixels for n, png in ((1, plain_png), (2, two_png))}
    expected = denoise(load_image(SAMPLES / "photo_gaussian.png").pixels, app.denoiser("photo", 2)).output
    np.testing.assert_array_equal(written[2], expected)  # the engine's x2 result ...
    assert not np.array_equal(written[2], written[1])  # ... not the plain one
    with pytest.raises(gr.Error, match="not trained on flipped and rotated images"):
        ui.user_errors(app.denoise)(str(SAMPLES / "clothes_gaussian.png"), MODEL, 1.0, "none", 0.0, 0,
                                    None, 2, progress=no_progress)
    with pytest.raises(gr.Error, match=r"ensemble must be one of \(1, 2, 8\), got 'x'"):
        ui.user_errors(app.denoise)(*args, "x", progress=no_progress)
    # The control follows the model: offered for photo, off and locked for the grey model.
    assert app.ensemble_allowed("photo") and not app.ensemble_allowed(MODEL)
    assert app.ensemble_control("photo").interactive is True
    locked = app.ensemble_control(MODEL)
    assert locked.interactive is False and locked.value == 1 and "not trained" in locked.info


def test_denoise_keeps_sixteen_bits_and_strength_zero_keeps_the_input(app, tmp_path):
    path, ramp = grey16(tmp_path)
    _, _, report, png = app.denoise(path, MODEL, 0.0, "none", 0.0, 0, None, progress=no_progress)
    with Image.open(png) as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
        out = np.asarray(im).astype(np.int64)
    assert report["bit_depth"] == 16 and "noisy_psnr" not in report  # no reference, no scores
    assert np.abs(out - ramp).max() <= 1  # strength 0: the input, at full 16-bit precision


def test_denoise_keeps_the_alpha_channel(app, tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    path = write_png(tmp_path / "icon.png", rgba, "RGBA")
    _, _, report, png = app.denoise(path, MODEL, 1.0, "none", 0.0, 0, None, progress=no_progress)
    with Image.open(png) as im:
        assert (im.mode, im.size) == ("RGBA", (32, 24))
        np.testing.assert_array_equal(np.asarray(im)[..., 3], rgba[..., 3])
    assert report["mode"] == "RGBA"


def test_an_animation_is_denoised_from_its_first_frame_and_the_report_says_so(app, tmp_path):
    frames = [Image.fromarray(np.full((12, 12), v, np.uint8)) for v in (40, 140, 240)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="only the first is denoised"):
        _, _, report, png = app.denoise(str(tmp_path / "anim.gif"), MODEL, 1.0, "none", 0.0, 0, None,
                                        progress=no_progress)
    assert report["note"] == "first of 3 frames: only it is denoised and in the PNG"
    assert abs(float(np.asarray(Image.open(png)).mean()) - 40) < 10
    single = tmp_path / "one.png"
    frames[0].save(single)
    report = app.denoise(str(single), MODEL, 1.0, "none", 0.0, 0, None, progress=no_progress)[2]
    assert "note" not in report


def test_compare_scores_the_model_against_classic_denoisers(app):
    gallery, rows = app.compare(str(SAMPLES / "clothes_clean.png"), MODEL, "gaussian", 0.3, 0, None,
                                progress=no_progress)
    methods = [row[0] for row in rows]
    assert methods[0] == "noisy input" and methods[1] == f"DAE ({MODEL})"
    assert {"median 3x3", "non-local means (OpenCV)", "total variation (Chambolle)"} <= set(methods)
    assert not any(m.startswith("inpainting") for m in methods)  # meant for masking only
    scores = {row[0]: row[1] for row in rows}
    assert scores[f"DAE ({MODEL})"] > scores["noisy input"] + 3.0
    assert scores["median 3x3"] > scores["noisy input"]
    assert all(row[3] >= 0.0 for row in rows if row[3] is not None)
    assert len(gallery) == len([r for r in rows if r[1] is not None])
    assert all(img.shape == (56, 140) for img, _ in gallery)


def test_compare_tells_inpainting_where_its_own_masking_put_zeros_and_an_upload_is_read_as_seen(
        app, tmp_path):
    clean = load_image(SAMPLES / "clothes_clean.png").pixels  # a dark background, many zeros
    assert (clean == 0).mean() > 0.1
    _, rows = app.compare(str(SAMPLES / "clothes_clean.png"), MODEL, "masking", 0.25, 3, None,
                          progress=no_progress)
    here = {row[0]: row[1] for row in rows}
    told = here["inpainting of the masked pixels (OpenCV)"]
    assert told > here["noisy input"] + 8.0
    noisy = from_model(corrupt(to_model(clean), "masking", 0.25, seed=3), np.uint8)
    upload = write_png(tmp_path / "masked.png", noisy[..., 0])  # the same pixels, uploaded: the
    _, rows = app.compare(upload, MODEL, "none", 0.0, 0, str(SAMPLES / "clothes_clean.png"),  # mask
                          progress=no_progress)  # is read off the image, every zero a hole
    uploaded = {row[0]: row[1] for row in rows}
    assert uploaded["noisy input"] == pytest.approx(here["noisy input"], abs=1e-6)
    assert uploaded["inpainting of the masked pixels (OpenCV)"] < told - 3.0


def test_compare_on_images_too_small_for_bm3d_and_ssim_lists_why_instead_of_failing(app, tmp_path):
    rng = np.random.default_rng(0)
    for shape in ((6, 40), (2, 40)):  # BM3D needs sides over 8 px; SSIM a side of 3 px or more
        image = write_png(tmp_path / f"{shape[0]}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        _, rows = app.compare(image, MODEL, "gaussian", 0.2, 0, None, progress=no_progress)
        by_label = {row[0].split(" (skipped")[0]: row for row in rows}
        assert any(row[0].startswith("BM3D (skipped: ") and row[1] is None for row in rows)
        for label in ("noisy input", f"DAE ({MODEL})", "median 3x3", "total variation (Chambolle)"):
            assert np.isfinite(by_label[label][1])  # PSNR
            assert (by_label[label][2] is None) == (shape[0] < 3)  # SSIM, undefined below 3 px


def test_compare_runs_slow_denoisers_only_on_small_images(app, tmp_path, monkeypatch):
    from models.classic import ClassicDenoiser

    calls = []
    slowpoke = ClassicDenoiser("slowpoke", "slowpoke", lambda x, params: calls.append(x.shape) or x,
                               ({},), {}, slow=True)
    monkeypatch.setattr(ui, "CLASSIC_DENOISERS", {**ui.CLASSIC_DENOISERS, "slowpoke": slowpoke})
    monkeypatch.setattr(ui, "COMPARE_SLOW_MAX_PIXELS", 300)
    rng = np.random.default_rng(2)
    for side in (16, 20):  # 256 and 400 pixels
        image = write_png(tmp_path / f"{side}.png", rng.integers(0, 256, (side, side), dtype=np.uint8))
        _, rows = app.compare(image, MODEL, "gaussian", 0.2, 0, None, progress=no_progress)
        row = next(row for row in rows if row[0].startswith("slowpoke"))
        if side == 16:
            assert row[0] == "slowpoke" and row[3] is not None
        else:
            assert row[0] == ("slowpoke (skipped: it takes seconds per megapixel; Compare runs it on "
                              "images up to 0.0003 MP)") and row[1] is None
    assert calls == [(16, 16, 1)]


def test_engine_events_share_the_servers_concurrency_and_small_events_skip_the_queue(app):
    # Gradio gives a shared concurrency_id the smallest limit among its events, and a full queue
    # refuses every queued event: the model card, the ensemble control and the clearing of an old
    # result must not wait behind denoising, nor be refused.
    demo = ui.build_app(app, concurrency=3)
    fns = demo.fns
    engine = {f.api_name: f.concurrency_limit for f in fns.values() if f.concurrency_id == "engine"}
    assert engine == {"denoise": 3, "compare": 3, "score_field": 3}
    small = [f for f in fns.values() if f.name in ("model_info", "ensemble_control", "<lambda>")]
    assert len(small) == 5 and not any(f.queue for f in small)  # 2 model cards, ensemble, 2 clearings
    # A new upload in a tab cancels that tab's run (tests/e2e/test_ui_browser.py watches it happen).
    cancels = {}
    for f in fns.values():
        if f.is_cancel_function:
            ((block, trigger),) = f.targets
            cancels[(demo.blocks[block].elem_id, trigger)] = {fns[i].api_name for i in f.cancels}
    assert cancels == {("denoise-image", "change"): {"denoise"}, ("compare-image", "change"): {"compare"}}


def test_server_limits_below_one_are_refused(capsys):
    for flag in ("--concurrency", "--queue-size", "--max-pixels"):
        with pytest.raises(SystemExit):
            ui.parse_args([flag, "0"])
        assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err


def test_unknown_model_and_corruption_are_refused(app, tmp_path):
    image = write_png(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(gr.Error, match="unknown model '/etc/passwd'"):
        app.denoise(image, "/etc/passwd", 1.0, "none", 0.0, 0, None, progress=no_progress)
    with pytest.raises(gr.Error, match="unknown corruption 'blur'"):
        ui.prepare(image, None, "blur", 0.1, 0)


def test_user_errors_reports_messages_and_hides_tracebacks(caplog):
    def bad_value():
        raise ValueError("level must be in [0, 1],\n  got 3")

    def crash():
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.WARNING, logger="app.ui"):
        with pytest.raises(gr.Error) as err:
            ui.user_errors(bad_value)()
    assert err.value.message == "level must be in [0, 1], got 3"  # one line
    # A ValueError may be a fault of ours rather than a refused argument: the server log has it.
    (record,) = [r for r in caplog.records if r.name == "app.ui"]
    assert record.levelno == logging.WARNING and "bad_value refused: level must be" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is ValueError
    with pytest.raises(gr.Error) as err:
        ui.user_errors(crash)()
    assert "internal error (RuntimeError)" in err.value.message and "secret" not in err.value.message


def test_quality_and_previews():
    clean = np.full((8, 8, 1), 0.5, np.float32)
    assert ui.quality(None, clean, clean) == {}
    scores = ui.quality(clean, np.zeros((8, 8, 1), np.uint8), (clean * 255).round().astype(np.uint8))
    assert scores["noisy_psnr"] == pytest.approx(6.0206, abs=1e-3)  # mse 0.25
    assert scores["denoised_psnr"] > 50
    residual = ui.residual_display(np.array([[[-0.5], [0.0], [0.5]]], np.float32))
    np.testing.assert_array_equal(residual, [[0, 128, 255]])


def test_results_go_to_a_private_folder_of_this_process_and_only_it_is_pruned(tmp_path):
    image = load_image(SAMPLES / "clothes_clean.png")
    path = ui.write_result(image, "clothes")
    folder = ui.results_dir()
    assert path.parent.parent == folder and folder.parent == ui.private_dir()
    private = ui.private_dir().stat()
    # mkdtemp's: a fresh name under the temp dir (Gradio serves files from there), this user's
    # own and closed to others, so nobody else can plant a folder or a link in it.
    assert ui.private_dir().name.startswith("dae-ui-") and str(ui.private_dir()) != "/tmp/dae-ui-results"
    assert ui.private_dir().parent == Path(tempfile.gettempdir())
    assert private.st_uid == os.getuid() and stat.S_IMODE(private.st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
    # Pruning: an hour-old result folder goes; a link, however old, is removed, never followed.
    old = folder / "old-result"
    old.mkdir()
    (old / "x-denoised.png").write_bytes(b"png")
    keep = tmp_path / "someone-elses"
    keep.mkdir()
    (keep / "precious.txt").write_text("keep me")
    link = folder / "link"
    link.symlink_to(keep, target_is_directory=True)
    hour_ago = time.time() - ui.OUTPUT_MAX_AGE_S - 60
    for entry in (old, link):
        os.utime(entry, (hour_ago, hour_ago), follow_symlinks=False)
    os.utime(keep, (hour_ago, hour_ago))
    newer = ui.write_result(image, "clothes")
    assert not old.exists() and not link.is_symlink()
    assert (keep / "precious.txt").read_text() == "keep me"
    assert path.is_file() and newer.is_file()  # this hour's results stay


def test_palette_upload_is_written_as_rgb(tmp_path):
    palette = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    palette.save(tmp_path / "p.png")
    image = load_image(tmp_path / "p.png")
    path = ui.write_result(image, "p")
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (8, 8)


def test_default_upload_limit_takes_a_noisy_24_megapixel_photo(capsys):
    # A noisy 6000 x 4000 RGB photo: ~56 MB as an 8-bit PNG, 144 MB of pixels as 16-bit PNG or
    # TIFF (noise does not compress), plus headers.
    limit = ui.parse_args([]).max_file_size
    assert limit >= 6000 * 4000 * 3 * 2 + 2**20
    assert ui.parse_args(["--max-file-size", "2mb"]).max_file_size == 2 * 2**20
    for bad in ("lots", "40 megs", "0mb", "-5mb", "mb", "1.5gb"):
        with pytest.raises(SystemExit):
            ui.parse_args([f"--max-file-size={bad}"])
        err = capsys.readouterr().err
        assert f"--max-file-size must be a positive whole number and a unit (b, kb, mb, gb or tb), e.g. " \
               f"160mb; got {bad!r}" in err and "Traceback" not in err


def test_cli_arguments():
    args = ui.parse_args([])
    assert (args.host, args.port, args.share, args.auth) == ("127.0.0.1", 7860, False, None)
    assert args.concurrency == 1 and args.model == [] and args.precision == "auto"
    assert ui.parse_args(["--auth", "ann:s3cr:et"]).auth == ("ann", "s3cr:et")
    with pytest.raises(argparse.ArgumentTypeError, match="user:password"):
        ui.parse_auth("nopassword")
    assert MODEL in ui.model_choices()
    with pytest.raises(ui.ModelNotFoundError, match="no model"):
        ui.model_choices(["/nowhere/model.keras"])


def test_each_sample_comes_with_the_model_made_for_it():
    rows = ui.sample_examples(ui.model_choices())
    assert [Path(r[0]).name for r in rows][-1] == "photo_gaussian.png"
    assert {r[4] for r in rows[:-1]} == {"fashion-mnist"} and rows[-1][4] == "photo"
    # Without those models every sample falls back to the first one listed.
    assert {r[4] for r in ui.sample_examples({"my run": "runs/x"})} == {"runs/x"}


def test_api_arguments_that_are_not_numbers_are_clear_errors(app, tmp_path):
    image = write_png(tmp_path / "a.png", np.full((16, 16), 128, np.uint8))
    run = ui.user_errors(app.denoise)
    for strength, level, seed, message in (
            (None, 0.1, 0, "strength must be a number, got None"),
            (1.0, None, 0, "level must be a number, got None"),
            (1.0, 0.1, 2**63, r"seed must be a whole number from 0 to 2\*\*63 - 1, got 9223372036854775808"),
            (1.0, 0.1, 1.5, "seed must be a whole number"),
            (1.0, 0.1, "x", "seed must be a number, got 'x'")):
        with pytest.raises(gr.Error, match=message):
            run(image, MODEL, strength, "gaussian", level, seed, None, progress=no_progress)
    assert ui.number(2**63 - 1, "seed", integer=True) == 2**63 - 1 and ui.number("0.5", "level") == 0.5


def test_the_server_serves_the_score_tabs_pictures_whatever_folder_it_starts_in(app, tmp_path, monkeypatch):
    # Gradio serves returned files from its cwd, its temp dir and launch(allowed_paths=...) only;
    # the Score field tab returns pictures under the repository's runs/score-ui/.
    from gradio.utils import get_upload_folder, is_allowed_file

    from app import score_tab

    launched = {}
    monkeypatch.setattr(ui, "DenoiserApp", lambda *args, **kwargs: app)
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # main sets it; undone after the test
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ui.main([])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    picture = score_tab.CACHE_DIR / "spiral-sigma0.1-0123abcd" / "quiver.png"
    served_from = [*launched.get("allowed_paths", []), os.getcwd(), tempfile.gettempdir()]
    assert is_allowed_file(picture, [], served_from, [])[0], served_from
    # The results, and Gradio's cache, are this server's own (not /tmp/gradio, the first user's).
    result = ui.write_result(load_image(SAMPLES / "clothes_clean.png"), "clothes")
    assert is_allowed_file(result, [], served_from, [])[0], served_from
    assert Path(get_upload_folder()) == ui.private_dir() / "gradio"
    assert launched["max_file_size"] == ui.file_size(ui.DEFAULT_MAX_FILE_SIZE)


def test_a_grey_image_in_a_colour_model_is_warned_about(tmp_path, app, monkeypatch):
    warnings = []
    monkeypatch.setattr(ui.gr, "Warning", warnings.append)
    photo = load_image(SAMPLES / "photo_clean.png").pixels
    grey = write_png(tmp_path / "grey.png", photo.mean(-1).astype(np.uint8))
    _, _, scores, _ = app.denoise(grey, "photo", 1.0, "gaussian", 0.1, 0, None, progress=no_progress)
    assert scores["note"] == ui.GREY_IN_COLOUR and warnings == [ui.GREY_IN_COLOUR]
    _, _, scores, _ = app.denoise(grey, MODEL, 1.0, "gaussian", 0.1, 0, None, progress=no_progress)
    assert "note" not in scores and len(warnings) == 1  # a grey model: nothing to say
    app.compare(grey, "photo", "gaussian", 0.1, 0, None, progress=no_progress)
    assert warnings == [ui.GREY_IN_COLOUR] * 2


def test_the_report_keeps_every_note(tmp_path, app, monkeypatch):
    monkeypatch.setattr(ui.gr, "Warning", lambda text: None)
    grey = load_image(SAMPLES / "photo_clean.png").pixels.mean(-1).astype(np.uint8)
    path = tmp_path / "two-pages.tif"
    Image.fromarray(grey).save(path, save_all=True, append_images=[Image.fromarray(grey)])
    _, _, scores, _ = app.denoise(str(path), "photo", 1.0, "none", 0.0, 0, None, progress=no_progress)
    assert scores["note"] == f"{ui.GREY_IN_COLOUR}; first of 2 frames: only it is denoised and in the PNG"
