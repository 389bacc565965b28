"""The real UI server, called through its Gradio API with ``gradio_client``."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from data.corruption import corrupt
from data.images import from_model, to_model
from data.metrics import psnr
from models.registry import native_bfloat16

pytestmark = pytest.mark.e2e

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
MODEL = "fashion-mnist"


@pytest.fixture(scope="module")
def client(ui_server):
    return Client(ui_server, verbose=False)


def denoise_args(image, reference=None, corruption="none", level=0.0, strength=1.0, seed=0):
    """The ``/denoise`` endpoint's arguments, in its order, for ``client.predict`` or ``submit``."""
    return (handle_file(str(image)), MODEL, strength, corruption, level, seed,
            handle_file(str(reference)) if reference else None)


def denoise(client, image, *args, **kwargs):
    return client.predict(*denoise_args(image, *args, **kwargs), api_name="/denoise")


def read(path) -> tuple[np.ndarray, str, tuple[int, int]]:
    with Image.open(path) as im:
        return np.asarray(im), im.mode, im.size


def test_named_endpoints_are_documented(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/denoise", "/compare", "/score_field"} <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/denoise"]["parameters"]]
    assert names[:3] == ["image_path", "model_choice", "strength"]


def test_denoise_raises_psnr_and_keeps_size_and_mode(client):
    (before, after), residual, report, png = denoise(client, SAMPLES / "clothes_gaussian.png",
                                                     SAMPLES / "clothes_clean.png")
    pixels, mode, size = read(png)
    noisy, noisy_mode, noisy_size = read(SAMPLES / "clothes_gaussian.png")
    clean, _, _ = read(SAMPLES / "clothes_clean.png")
    assert (mode, size) == (noisy_mode, noisy_size) == ("L", (140, 56))
    assert Path(png).name == "clothes_gaussian-denoised.png"
    gain = float(psnr(to_model(clean), to_model(pixels)) - psnr(to_model(clean), to_model(noisy)))
    assert gain > 2.0, f"PSNR went up by only {gain:.2f} dB"
    assert report["denoised_psnr"] == pytest.approx(float(psnr(to_model(clean), to_model(pixels))), abs=1e-3)
    assert report["denoised_ssim"] > report["noisy_ssim"]
    assert report["precision"] == ("bfloat16" if native_bfloat16() else "float32")  # --precision auto
    np.testing.assert_array_equal(read(after)[0], pixels)  # the slider shows exactly the download
    np.testing.assert_array_equal(read(before)[0], noisy)
    assert read(residual)[2] == size


def test_sixteen_bit_input_gives_a_sixteen_bit_png(client, tmp_path):
    clean, _, _ = read(SAMPLES / "clothes_clean.png")
    clean16 = clean.astype(np.uint16) * 257
    noisy16 = from_model(corrupt(to_model(clean16), "gaussian", 0.3, seed=5), np.uint16)[..., 0]
    Image.fromarray(noisy16).save(tmp_path / "noisy16.png")
    Image.fromarray(clean16).save(tmp_path / "clean16.png")
    _, _, report, png = denoise(client, tmp_path / "noisy16.png", tmp_path / "clean16.png")
    pixels, mode, size = read(png)
    assert mode in ("I;16", "I;16B", "I") and pixels.dtype in (np.uint16, np.int32) and size == (140, 56)
    assert report["bit_depth"] == 16
    assert np.any(pixels.astype(np.int64) % 257 != 0)  # finer steps than any 8-bit image has
    assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0


def test_an_avif_upload_is_denoised_and_a_tiff_stack_says_only_its_first_page_is(client, tmp_path):
    noisy, _, _ = read(SAMPLES / "clothes_gaussian.png")
    Image.fromarray(noisy).convert("RGB").save(tmp_path / "clothes.avif", quality=100)
    _, _, report, png = denoise(client, tmp_path / "clothes.avif", SAMPLES / "clothes_clean.png")
    assert read(png)[2] == (140, 56) and report["denoised_psnr"] > report["noisy_psnr"] + 2.0, report
    pages = [Image.fromarray(noisy), Image.fromarray(255 - noisy)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    _, _, report, png = denoise(client, tmp_path / "stack.tif")
    assert report["note"] == "first of 2 frames: only it is denoised and in the PNG"
    assert read(png)[2] == (140, 56)


def test_corruption_control_on_a_colour_photo(client):
    (before, after), _, report, png = denoise(client, SAMPLES / "photo_clean.png", corruption="salt_pepper",
                                              level=0.2, seed=7)
    pixels, mode, size = read(png)
    assert (mode, size) == ("RGB", (176, 176))
    assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0
    again = denoise(client, SAMPLES / "photo_clean.png", corruption="salt_pepper", level=0.2, seed=7)
    np.testing.assert_array_equal(read(again[0][0])[0], read(before)[0])  # seeded corruption


def test_self_ensemble_is_a_named_parameter_of_the_endpoint(client):
    # That the ensemble cleans further is measured in tests/app/test_engine.py; here: it arrives.
    from app.engine import as_denoiser
    from app.engine import denoise as engine_denoise

    photo = (handle_file(str(SAMPLES / "photo_gaussian.png")), "photo", 1.0, "none", 0.0, 0,
             handle_file(str(SAMPLES / "photo_clean.png")))
    _, _, plain, plain_png = client.predict(*photo, api_name="/denoise")  # left out: off
    _, _, two, two_png = client.predict(*photo, ensemble=2, api_name="/denoise")
    assert (plain["ensemble"], two["ensemble"]) == (1, 2)
    noisy = read(SAMPLES / "photo_gaussian.png")[0]
    expected = engine_denoise(noisy, as_denoiser("photo", precision="auto", ensemble=2)).output
    np.testing.assert_array_equal(read(two_png)[0], expected)  # the engine's x2 result ...
    assert not np.array_equal(read(plain_png)[0], expected)  # ... which the plain run is not
    with pytest.raises(AppError, match="not trained on flipped and rotated images"):
        client.predict(*denoise_args(SAMPLES / "clothes_gaussian.png"), ensemble=8, api_name="/denoise")


def test_compare_scores_our_model_and_classic_denoisers(client):
    gallery, table = client.predict(handle_file(str(SAMPLES / "clothes_clean.png")), MODEL, "gaussian",
                                    0.3, 1, None, api_name="/compare")
    rows = {row[0]: row for row in table["data"]}
    assert rows[f"DAE ({MODEL})"][1] > rows["noisy input"][1] + 2.0
    assert {"median 3x3", "total variation (Chambolle)", "non-local means (OpenCV)"} <= set(rows)
    assert len(gallery) >= 5 and all(Path(item["image"]).is_file() for item in gallery)


def test_large_image_keeps_full_resolution_and_reports_progress(client, tmp_path):
    import time

    from data.images import load_image

    photo = load_image("/usr/share/backgrounds/mate/nature/GreenMeadow.jpg").pixels  # 1280 x 1024
    # 1.3 megapixels: more than one tile of the engine's default 1024 x 1024 pixels
    Image.fromarray(np.ascontiguousarray(photo[..., 1])).save(tmp_path / "meadow.png")
    job = client.submit(handle_file(str(tmp_path / "meadow.png")), MODEL, 1.0, "gaussian", 0.2, 0, None,
                        api_name="/denoise")
    fractions = set()
    deadline = time.monotonic() + 600
    while not job.done():
        assert time.monotonic() < deadline, f"no answer in 600 s: {job.status()}"
        for unit in job.status().progress_data or []:
            if unit.desc == "Denoising tiles" and unit.progress is not None:
                fractions.add(unit.progress)
        time.sleep(0.05)
    _, _, report, png = job.result(timeout=60)
    assert any(0.0 < f < 1.0 for f in fractions), f"no progress between 0 and 1 reported: {fractions}"
    assert read(png)[2] == (1280, 1024) and (report["width"], report["height"]) == (1280, 1024)
    assert report["denoised_psnr"] > report["noisy_psnr"] + 2.0


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's shape)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_bad_files_get_clear_errors_and_the_server_keeps_serving(client, tmp_path):
    (tmp_path / "notes.png").write_text("shopping list: milk, eggs")
    good = (SAMPLES / "photo_clean.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "bomb.png").write_bytes(png_claiming(30000, 30000))
    (tmp_path / "empty.png").write_bytes(b"")
    expected = {"notes.png": "image 'notes.png': not an image",
                "cut.png": "image 'cut.png': the pixel data is truncated",
                "bomb.png": "never downscales",
                "empty.png": "the file is empty"}
    for name, message in expected.items():
        with pytest.raises(AppError) as err:
            denoise(client, tmp_path / name)
        assert message in str(err.value), (name, str(err.value))
        # no path on the server (its uploads are under the temp dir, as the test's files are)
        assert tempfile.gettempdir() not in str(err.value), str(err.value)
    with pytest.raises(AppError, match="the reference is 176 x 176 but the image is 140 x 56"):
        denoise(client, SAMPLES / "clothes_gaussian.png", SAMPLES / "photo_clean.png")
    with pytest.raises(AppError, match=r"strength must be in \[0, 1\], got 2"):
        denoise(client, SAMPLES / "clothes_gaussian.png", strength=2.0)
    _, _, report, png = denoise(client, SAMPLES / "clothes_gaussian.png", SAMPLES / "clothes_clean.png")
    assert Path(png).is_file() and report["denoised_psnr"] > report["noisy_psnr"]


def test_upload_size_limit(client, ui_server, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(3_000_000))  # the test server allows 2 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        denoise(client, big)
    with big.open("rb") as fh:  # the server refuses it too, not only the client
        response = httpx.post(ui_server + "gradio_api/upload", files={"files": ("big.png", fh, "image/png")})
    assert response.status_code == 413


def test_a_payload_naming_a_file_on_the_server_is_refused_and_nothing_is_served(ui_server, tmp_path):
    """A client can skip the upload and name a path in the payload itself; Gradio checks only the
    payloads marked as its FileData, so the server must refuse the rest itself."""
    import json

    import httpx

    secret = tmp_path / "secret.png"  # on the server's machine, never uploaded
    secret.write_bytes((SAMPLES / "clothes_clean.png").read_bytes())
    api = ui_server + "gradio_api/call/"

    def call(endpoint, data):
        event = httpx.post(api + endpoint, json={"data": data}).json()["event_id"]
        lines = httpx.get(f"{api}{endpoint}/{event}", timeout=120).text.strip().splitlines()
        return lines[-2], json.loads(lines[-1].removeprefix("data:"))

    unmarked, marked = {"path": str(secret)}, {"path": str(secret), "meta": {"_type": "gradio.FileData"}}
    upload = httpx.post(ui_server + "gradio_api/upload",
                        files={"files": ("clothes.png", (SAMPLES / "clothes_gaussian.png").read_bytes())})
    uploaded = {"path": upload.json()[0], "meta": {"_type": "gradio.FileData"}}
    for endpoint, data in (("denoise", [unmarked, MODEL, 1.0, "none", 0.0, 0, None, 1]),
                           ("denoise", [uploaded, MODEL, 1.0, "none", 0.0, 0, unmarked, 1]),
                           ("compare", [unmarked, MODEL, "none", 0.0, 0, None])):
        event, data = call(endpoint, data)
        assert event == "event: error" and data["error"].startswith("only uploaded files are read"), data
    assert call("denoise", [marked, MODEL, 1.0, "none", 0.0, 0, None, 1])[0] == "event: error"  # Gradio's
    event, (_, _, report, _) = call("denoise", [uploaded, MODEL, 1.0, "none", 0.0, 0, None, 1])
    assert event == "event: complete" and report["width"] == 140  # a real upload is denoised
