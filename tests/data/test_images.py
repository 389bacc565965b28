"""Image files in and out: every corpus format loads with its mode, depth and alpha; writing
keeps them (and ICC/EXIF); broken files raise their specific errors; writes are atomic."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from data import images
from data.images import (
    BIT_DEPTHS,
    BitDepthError,
    EmptyImageError,
    ImageDimensionsError,
    ImageFile,
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageError,
    from_full_scale,
    from_model,
    load_image,
    read_image,
    save_image,
    to_full_scale,
    to_model,
)
from tests.corpus import camera_exif, png_header_only, srgb_profile


def good(corpus):
    return [f for f in corpus[1].values() if f.reason is None]


def test_to_model_and_from_model_map_the_card_range():
    pixels = np.array([[0, 128, 255]], dtype=np.uint8)
    x = to_model(pixels, value_range=(-1.0, 1.0))
    np.testing.assert_allclose(x[..., 0], [[-1.0, 128 / 255 * 2 - 1, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(from_model(x, np.uint8, value_range=(-1.0, 1.0))[..., 0], pixels)
    with pytest.raises(ValueError, match="high > low"):
        to_model(pixels, value_range=(1.0, 1.0))


@pytest.mark.parametrize("bits", list(BIT_DEPTHS))
def test_full_scale_maps_n_bit_data_to_sixteen_bits_and_back_exactly(bits):
    top = 2**bits - 1
    values = np.arange(top + 1, dtype=np.uint16)
    full = to_full_scale(values, bits)
    np.testing.assert_array_equal(full, np.rint(values * (65535 / top)))  # nearest, never a tie
    assert (full[0], full[-1]) == (0, 65535) and np.all(np.diff(full.astype(np.int64)) > 0)
    np.testing.assert_array_equal(from_full_scale(full, bits), values)
    every = np.arange(65536, dtype=np.uint16)  # any denoised value comes back to the nearest level
    np.testing.assert_array_equal(from_full_scale(every, bits), np.rint(every * (top / 65535)))


def test_full_scale_refuses_values_above_the_bit_depth_and_bad_depths():
    over = np.array([[0, 4095], [4096, 5000]], dtype=np.uint16)
    with pytest.raises(BitDepthError,
                       match=r"^holds values up to 5000, above the 12-bit maximum 4095$") as err:
        to_full_scale(over, 12)
    assert err.value.reason == "above_bit_depth"
    for bits in (8, 17):
        with pytest.raises(ValueError, match=f"bit depth must be 9 to 16, got {bits}"):
            to_full_scale(over, bits)
    with pytest.raises(ValueError, match="12-bit samples are held in uint16, got uint8"):
        from_full_scale(np.zeros(3, np.uint8), 12)


def test_every_corpus_format_loads_with_its_mode_depth_and_alpha(corpus):
    root, _ = corpus
    for f in good(corpus):
        image = load_image(root / "noisy" / f.rel)
        assert image.mode == f.mode, f.rel
        assert str(image.pixels.dtype) == f.dtype, f.rel
        assert (image.alpha is not None) == f.alpha, f.rel
        assert image.pixels.ndim == 3 and image.pixels.shape[-1] in (1, 3), f.rel
        # Upright: the EXIF-rotated JPEG comes out in the clean image's orientation.
        clean = np.asarray(Image.open(root / "clean" / f.reference))
        assert image.pixels.shape[:2] == clean.shape[:2], f.rel


def test_sixteen_bit_colour_keeps_all_sixteen_bits(corpus):
    root, _ = corpus
    image = load_image(root / "noisy" / "png/rgb16.png")
    assert image.pixels.dtype == np.uint16
    assert np.any(image.pixels % 257 != 0)  # not 8-bit values scaled up
    assert len(np.unique(image.pixels)) > 256


@pytest.mark.parametrize("rel", ["png/grey8.png", "png/grey16.png", "png/rgb16.png", "png/grey_alpha.png",
                                 "png/grey_alpha16.png", "png/rgba.png", "png/rgba16.png", "tiff/grey8.tif",
                                 "tiff/grey16.tif", "tiff/rgb8.tif", "tiff/rgb16.tif", "other/image.bmp",
                                 "other/lossless_alpha.webp", "other/grey.pgm", "other/grey16.pgm",
                                 "other/colour.ppm", "other/colour16.ppm"])
def test_lossless_round_trip_is_exact(corpus, tmp_path, rel):
    root, files = corpus
    image = load_image(root / "noisy" / rel)
    out = save_image(image, tmp_path / rel.replace("/", "_"))
    back = load_image(out)
    assert (back.mode, back.format, back.pixels.dtype) == (image.mode, image.format, image.pixels.dtype)
    np.testing.assert_array_equal(back.pixels, image.pixels)
    if files[rel].alpha:
        np.testing.assert_array_equal(back.alpha, image.alpha)


@pytest.mark.parametrize("rel", ["png/palette.png", "other/animation.gif", "jpeg/cmyk.jpg", "jpeg/grey.jpg",
                                 "jpeg/progressive.jpg", "other/lossy.webp"])
def test_lossy_round_trip_keeps_mode_and_stays_close(corpus, tmp_path, rel):
    root, _ = corpus
    image = load_image(root / "noisy" / rel)
    back = load_image(save_image(image, tmp_path / rel.replace("/", "_")))
    assert back.mode == image.mode and back.pixels.shape == image.pixels.shape
    error = np.abs(to_model(back.pixels) - to_model(image.pixels)).mean()
    assert error < 0.03, f"{rel}: mean error {error:.4f} after a re-save"
    if image.format == "JPEG":
        assert back.info["progressive"] == image.info["progressive"]


def test_icc_and_exif_kept_but_orientation_dropped(corpus, tmp_path):
    root, _ = corpus
    image = load_image(root / "noisy" / "jpeg/rotated.jpg")
    out = save_image(image, tmp_path / "rotated.jpg")
    with Image.open(root / "noisy" / "jpeg/rotated.jpg") as src:
        profile = src.info["icc_profile"]
    with Image.open(out) as im:
        assert im.info["icc_profile"] == profile and profile.startswith(srgb_profile()[:24])
        exif = im.getexif()
        assert exif[0x010F] == "DAE Test Camera" and exif[0x0131] == "tests/corpus.py"
        assert 0x0112 not in exif
        assert im.size == (image.pixels.shape[1], image.pixels.shape[0])


@pytest.mark.parametrize("rel", ["png/rgb16.png", "png/grey_alpha16.png"])
def test_sixteen_bit_colour_png_keeps_icc_and_exif(corpus, tmp_path, rel):
    root, _ = corpus
    image = load_image(root / "noisy" / rel)
    image = dataclasses.replace(image, info={"icc_profile": srgb_profile(), "exif": camera_exif().tobytes()})
    out = save_image(image, tmp_path / "deep.png")
    with Image.open(out) as im:
        assert im.info["icc_profile"] == srgb_profile()
        assert im.getexif()[0x010F] == "DAE Test Camera"
    back = load_image(out)
    np.testing.assert_array_equal(back.pixels, image.pixels)
    assert back.mode == image.mode
    if image.alpha is not None:
        np.testing.assert_array_equal(back.alpha, image.alpha)


def test_sixteen_bit_grey_alpha_png_is_written_as_colour_type_4():
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    image = images.ImageFile(grey[..., None], 65535 - grey, "PNG", "LA")
    data = images.encode_image(image, "PNG")
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour_type) == (4, 3, 16, 4)  # grey + alpha, 16 bits a sample
    back = load_image(data)
    assert back.mode == "LA" and back.pixels.shape == (3, 4, 1)
    np.testing.assert_array_equal(back.pixels[..., 0], grey)
    np.testing.assert_array_equal(back.alpha, 65535 - grey)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(pixels).save(path, exif=camera_exif(orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(load_image(path).pixels, expected)


@pytest.mark.parametrize("rel, error, words", [
    ("bad/truncated.png", TruncatedImageError, "truncated"),
    ("bad/truncated.jpg", TruncatedImageError, "truncated"),
    ("bad/empty.png", EmptyImageError, "empty (0 bytes)"),
    ("bad/notes.png", NotAnImageError, "not an image"),
    ("bad/bomb.png", ImageTooLargeError, "decompression-bomb limit"),
    ("bad/big_header.png", ImageTooLargeError, "12000 x 12000 = 144.0 MP is more than the 100 MP limit"),
    ("bad/absurd.png", ImageDimensionsError, "1000000 x 1"),
])
def test_broken_files_raise_specific_errors(corpus, rel, error, words):
    root, files = corpus
    with pytest.raises(error) as info:
        load_image(root / "noisy" / rel)
    assert words in str(info.value) and rel.split("/")[-1] in str(info.value)
    assert info.value.reason == files[rel].reason
    with pytest.raises(error):  # the dataset reader refuses them the same way
        read_image(root / "noisy" / rel)


def test_a_jpeg_or_png_whose_header_pillow_cannot_parse_is_damaged_not_something_else(tmp_path):
    # A Photoshop segment that ends inside a resource makes Pillow's JPEG reader give up; the
    # file was called "not an image", as a text file would be.
    payload = b"Photoshop 3.0\x00" + b"8BIM\x04\x04"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
        tmp_path / "cut.jpg", extra=b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload)
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHD")
    for name, fmt in (("cut.jpg", "JPEG"), ("cut.png", "PNG")):
        with pytest.raises(TruncatedImageError, match=f"{name}: a {fmt} file whose header is damaged"):
            load_image(tmp_path / name)
    (tmp_path / "notes.jpg").write_text("shopping list")
    with pytest.raises(NotAnImageError, match="not an image"):
        load_image(tmp_path / "notes.jpg")


def test_a_12_bit_lossless_or_jpeg_ls_file_is_unsupported_not_damaged():
    import imagecodecs

    samples = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0..4092: 12-bit
    for kind, data in (("12-bit JPEG", imagecodecs.jpeg8_encode(samples, bitspersample=12)),
                       ("lossless JPEG", imagecodecs.ljpeg_encode(samples)),
                       ("JPEG-LS file", imagecodecs.jpegls_encode(samples))):
        with pytest.raises(images.UnsupportedImageError, match=f"<bytes>: a {kind}, which cannot be decoded"):
            load_image(data)


def test_pixel_limit_is_configurable_and_missing_files_named(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    with pytest.raises(ImageTooLargeError, match="20 = 0.0 MP"):
        load_image(path, max_pixels=500)
    assert load_image(path.read_bytes()).pixels.shape == (20, 30, 1)
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageDimensionsError, match="cannot be 0"):
        images._check_dimensions("x.png", (0, 10), 100)
    with pytest.raises(ImageTooLargeError):
        load_image(png_header_only(11_000, 11_000))


def test_failed_write_leaves_existing_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous contents")
    rgba = images.ImageFile(np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 9, np.uint8), "PNG", "RGBA")
    with pytest.raises(ImageWriteError, match="JPEG cannot store the alpha channel"):
        save_image(rgba, tmp_path / "out.jpg")

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(images.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_image(rgba, target)
    assert target.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_format_conversion_on_save(corpus, tmp_path):
    root, _ = corpus
    grey16 = load_image(root / "noisy" / "png/grey16.png")
    jpeg = load_image(save_image(grey16, tmp_path / "grey.jpg"))  # JPEG holds 8 bits: rounded
    assert jpeg.format == "JPEG" and jpeg.pixels.dtype == np.uint8
    assert np.abs(to_model(jpeg.pixels) - to_model(grey16.pixels)).mean() < 0.03
    palette = load_image(root / "noisy" / "png/palette.png")
    as_webp = load_image(save_image(palette, tmp_path / "p.webp"))
    assert as_webp.format == "WEBP" and as_webp.mode == "RGB"
    with pytest.raises(ImageWriteError, match="cannot write format"):
        save_image(palette, tmp_path / "p.xyz", format="xyz")


def test_read_image_keeps_its_dataset_behaviour(corpus):
    root, _ = corpus
    assert read_image(root / "noisy" / "png/grey8.png").ndim == 2
    assert read_image(root / "noisy" / "png/grey16.png").dtype == np.uint16
    assert read_image(root / "noisy" / "png/rgba.png").shape[-1] == 3
    assert read_image(root / "noisy" / "png/rgb8.png", mode="L").ndim == 2
    buf = io.BytesIO()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(buf, "PNG")
    assert load_image(buf.getvalue()).format == "PNG"


def _tiff_with_next_ifd_past_the_end(arr: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack("<I", data[4:8])[0]
    pointer = ifd + 2 + 12 * struct.unpack("<H", data[ifd:ifd + 2])[0]
    data[pointer:pointer + 4] = struct.pack("<I", len(data) + 1000)
    return bytes(data)


@pytest.mark.parametrize("kind", ["png", "webp", "jpeg", "tiff8", "tiff16"])
def test_damaged_metadata_keeps_the_pixels_and_drops_only_the_metadata(tmp_path, kind):
    pixels = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(12, 10, 3)
    expected = pixels
    if kind in ("png", "webp"):  # getexif() raises SyntaxError "not a TIFF file"
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, kind.upper(), exif=b"Exif\x00\x00XX\x00*\x00\x00\x00\x08",
                                     **({"lossless": True} if kind == "webp" else {}))
        data = buf.getvalue()
    elif kind == "jpeg":  # Software (0x0131, a string) renamed TileWidth (a LONG): tobytes() struct.error
        exif = camera_exif(6).tobytes()
        assert exif.count(b"\x01\x31\x00\x02") == 1
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=100,
                                     exif=exif.replace(b"\x01\x31\x00\x02", b"\x01\x41\x00\x02"))
        data = buf.getvalue()
        expected = np.rot90(pixels, -1)  # the orientation itself was readable
    else:  # n_frames raises TypeError "Missing dimensions"
        if kind == "tiff16":
            pixels = expected = pixels.astype(np.uint16) * 257
        data = _tiff_with_next_ifd_past_the_end(pixels)
    image = load_image(data)
    if kind == "jpeg":
        assert image.pixels.shape == expected.shape
        assert np.abs(image.pixels.astype(int) - expected).mean() < 2
    else:
        np.testing.assert_array_equal(image.pixels, expected)
    assert "exif" not in image.info and image.info["frames"] == 1
    dataset = read_image(bytes(data))  # the dataset reader keeps them too (as 8-bit RGB)
    assert dataset.shape == image.pixels.shape
    if kind != "tiff16":
        np.testing.assert_array_equal(dataset, image.pixels)
    back = load_image(save_image(image, tmp_path / f"again.{'tif' if kind.startswith('tiff') else kind}"))
    assert back.pixels.shape == image.pixels.shape


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_is_oriented_once_like_eight_bit(orientation):
    import tifffile

    eight = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    sixteen = eight.astype(np.uint16) * 257
    tiffs = []
    for arr in (eight, sixteen):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb", extratags=[(0x0112, 3, 1, orientation, True)])
        tiffs.append(load_image(buf.getvalue()).pixels)
    expected = images._orient(eight, orientation)
    np.testing.assert_array_equal(tiffs[0], expected)
    np.testing.assert_array_equal(tiffs[1], expected.astype(np.uint16) * 257)
    png8 = io.BytesIO()
    Image.fromarray(eight).save(png8, "PNG", exif=camera_exif(orientation))
    png16 = images.encode_image(
        images.ImageFile(sixteen, None, "PNG", "RGB", {"exif": camera_exif(orientation).tobytes()}), "PNG")
    np.testing.assert_array_equal(load_image(png8.getvalue()).pixels, expected)
    np.testing.assert_array_equal(load_image(png16).pixels, expected.astype(np.uint16) * 257)


def _cmyk16_tiff(inks: np.ndarray, orientation: int = 1, profile: bytes | None = None,
                 compression: str | None = None) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, inks, photometric="separated", iccprofile=profile, compression=compression,
                     resolution=(300, 300), resolutionunit="INCH",
                     extratags=[(0x0112, 3, 1, orientation, True)])
    return buf.getvalue()


@pytest.mark.parametrize("orientation, compression", [(1, None), (6, None), (1, "lzw"), (8, "zlib")])
def test_sixteen_bit_cmyk_tiff_keeps_its_sixteen_bits_both_ways(tmp_path, orientation, compression):
    import tifffile

    rng = np.random.default_rng(0)
    inks = rng.integers(0, 65536, size=(6, 10, 4), dtype=np.uint16)
    image = load_image(_cmyk16_tiff(inks, orientation, compression=compression))
    ink = inks / 65535
    rgb = np.rint((1 - ink[..., :3]) * (1 - ink[..., 3:]) * 65535).astype(np.uint16)
    expected = images._orient(rgb, orientation)
    assert (image.mode, image.format, image.pixels.dtype) == ("CMYK", "TIFF", np.uint16)
    np.testing.assert_array_equal(image.pixels, expected)  # Pillow's formula, on all 16 bits
    assert np.any(image.pixels % 257 != 0)  # not 8-bit values scaled up
    eight = load_image(_cmyk16_tiff((inks >> 8).astype(np.uint8), orientation))
    assert eight.mode == "CMYK" and np.abs(eight.pixels.astype(int) - (expected >> 8)).max() <= 1
    out = save_image(image, tmp_path / "out.tif")
    written = tifffile.TiffFile(out)
    assert written.pages[0].photometric == tifffile.PHOTOMETRIC.SEPARATED
    assert written.pages[0].dtype == np.uint16
    np.testing.assert_array_equal(written.asarray()[..., 3], 0)  # K = 0, as Pillow writes 8-bit CMYK
    back = load_image(out)
    assert (back.mode, back.pixels.dtype, back.info.get("dpi")) == ("CMYK", np.uint16, (300.0, 300.0))
    np.testing.assert_array_equal(back.pixels, image.pixels)
    as_png = load_image(save_image(image, tmp_path / "out.png"))  # 16-bit RGB, nothing lost
    assert as_png.mode == "RGB" and as_png.info.get("dpi") == pytest.approx((300.0, 300.0), abs=0.01)
    np.testing.assert_array_equal(as_png.pixels, image.pixels)


def test_a_cmyk_profile_is_kept_in_cmyk_and_dropped_from_rgb_outputs(tmp_path):
    cmyk_profile = srgb_profile()[:16] + b"CMYK" + srgb_profile()[20:]
    inks = np.full((4, 5, 4), 20000, dtype=np.uint16)
    sixteen = load_image(_cmyk16_tiff(inks, profile=cmyk_profile))
    eight_path = tmp_path / "eight.tif"
    Image.fromarray(np.full((4, 5, 4), 80, np.uint8), "CMYK").save(eight_path, icc_profile=cmyk_profile)
    for image in (sixteen, load_image(eight_path)):
        assert image.info["icc_profile"] == cmyk_profile
        for suffix in ("tif", "png", "webp"):
            out = save_image(image, tmp_path / f"out{image.bit_depth}.{suffix}")
            with Image.open(out) as im:
                assert im.info.get("icc_profile") == (cmyk_profile if suffix == "tif" else None), out.name
    as_rgb = dataclasses.replace(sixteen, mode="RGB", info={"icc_profile": srgb_profile()})
    rgb = load_image(save_image(as_rgb, tmp_path / "rgb.png"))
    assert rgb.info["icc_profile"] == srgb_profile()  # an RGB profile on RGB pixels stays


@pytest.mark.parametrize("maxval", [1023, 4095, 65535])
def test_deep_colour_ppm_is_scaled_like_grey_pgm(maxval):
    values = np.array([0, 1, 511, 1000, maxval], dtype=np.uint16)
    header = f"4 2\n{maxval}\n".encode()
    grey = np.resize(values, (2, 4))
    colour = np.stack([grey, grey[:, ::-1], np.full_like(grey, 1000)], axis=-1)
    ppm = load_image(b"P6\n" + header + colour.astype(">u2").tobytes())
    pgm = load_image(b"P5\n" + header + grey.astype(">u2").tobytes())
    expected = np.rint(colour * (65535 / maxval)).astype(np.uint16)
    assert ppm.pixels.dtype == np.uint16
    np.testing.assert_array_equal(ppm.pixels, expected)
    np.testing.assert_array_equal(ppm.pixels[..., 0], pgm.pixels[..., 0])  # the same scaling as grey
    if maxval == 1023:
        assert ppm.pixels[0, 0, 2] == 64062  # 1000 * 65535 / 1023, rounded


@pytest.mark.parametrize("resolution, dpi", [((0, 0), None), ((1, 0), None), ((10**9, 1), None),
                                             ((300, 1), (300.0, 300.0))])
def test_degenerate_tiff_resolution_is_dropped_and_the_image_still_saves(tmp_path, resolution, dpi):
    from PIL.TiffImagePlugin import IFDRational

    pixels = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    path = tmp_path / "res.tif"
    Image.fromarray(pixels).save(path, tiffinfo={282: IFDRational(*resolution), 283: IFDRational(*resolution),
                                                 296: 2})
    image = load_image(path)
    assert image.info.get("dpi") == dpi
    for suffix in ("png", "tif"):
        back = load_image(save_image(image, tmp_path / f"out.{suffix}"))
        np.testing.assert_array_equal(back.pixels, pixels)


def test_written_files_get_the_permissions_open_would_give_them(tmp_path):
    image = load_image(save_image(ImageFile(np.zeros((4, 4, 1), np.uint8), None, "PNG", "L", {}),
                                  tmp_path / "a.png"))
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")  # what open() gives under this process's umask
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 != 0o600
    assert image.pixels.shape == (4, 4, 1)


@pytest.mark.parametrize("kind", ["float rgb", "grey16 with alpha", "planar rgb16"])
def test_tiffs_that_cannot_be_decoded_say_so_instead_of_not_an_image_or_wrong_pixels(kind):
    import tifffile

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    if kind == "float rgb":
        tifffile.imwrite(buf, rng.random((6, 8, 3), dtype=np.float32), photometric="rgb")
    elif kind == "grey16 with alpha":
        tifffile.imwrite(buf, rng.integers(0, 65535, (6, 8, 2), dtype=np.uint16),
                         photometric="minisblack", extrasamples=["unassalpha"])
    else:  # Pillow and OpenCV both read these planes as 8-bit: wrong pixels, silently
        tifffile.imwrite(buf, rng.integers(0, 65535, (3, 6, 8), dtype=np.uint16),
                         photometric="rgb", planarconfig="separate")
    for reader in (load_image, read_image):
        with pytest.raises(UnsupportedImageError, match="TIFF"):
            reader(buf.getvalue())


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "I;16"])
def test_a_png_colour_key_becomes_alpha_and_stays_transparent(tmp_path, mode):
    # PNG's tRNS chunk in a grey or RGB image: every pixel of one value is transparent.
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    grey[grey == 7] = 8
    grey[2, 3:6] = 7
    if mode == "1":
        grey = np.where(grey == 7, 0, 255).astype(np.uint8)
        im, key = Image.fromarray(grey).convert("1"), 0
    elif mode == "RGB":
        im, key = Image.fromarray(np.stack([grey] * 3, axis=-1)), (7, 7, 7)
    elif mode == "I;16":
        im, key = Image.fromarray(grey.astype(np.uint16) * 257), 7 * 257
    else:
        im, key = Image.fromarray(grey), 7
    im.save(tmp_path / "keyed.png", transparency=key)
    loaded = load_image(tmp_path / "keyed.png")
    transparent = (grey == 0) if mode == "1" else (grey == 7)
    assert loaded.alpha is not None and loaded.alpha.dtype == loaded.pixels.dtype
    np.testing.assert_array_equal(loaded.alpha == 0, transparent)
    again = load_image(save_image(loaded, tmp_path / "out.png"))
    np.testing.assert_array_equal(again.alpha == 0, transparent)
    assert again.pixels.dtype == loaded.pixels.dtype  # 16-bit grey stays 16-bit


def test_jpeg_keeps_its_chroma_subsampling_comment_and_xmp(tmp_path):
    from PIL import JpegImagePlugin

    rgb = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">rights</x:xmpmeta>'
    for sampling in (0, 2):  # 4:4:4 and 4:2:0
        Image.fromarray(rgb).save(tmp_path / "in.jpg", quality=90, subsampling=sampling,
                                  comment=b"shot on film", xmp=xmp)
        with Image.open(save_image(load_image(tmp_path / "in.jpg"), tmp_path / "out.jpg")) as out:
            assert JpegImagePlugin.get_sampling(out) == sampling
            assert out.info["comment"] == b"shot on film" and out.info["xmp"] == xmp


def test_an_output_name_of_up_to_255_bytes_is_written_atomically(tmp_path):
    name = "夜" * 81 + ".png"  # 3 bytes a character: 247 bytes, too long with a ".partial" suffix
    assert len(os.fsencode(name)) == 247
    image = images.ImageFile(np.full((4, 4, 1), 90, np.uint8), None, "PNG", "L")
    save_image(image, tmp_path / name)
    assert os.listdir(tmp_path) == [name] and load_image(tmp_path / name).pixels.max() == 90


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_the_dataset_reader_scales_sixteen_bit_grey_instead_of_clipping_it(tmp_path, mode):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    arr = read_image(tmp_path / "ramp16.png", mode=mode)
    expected = from_model(to_model(ramp[..., None]), np.uint8)[..., 0]
    assert arr.dtype == np.uint8
    np.testing.assert_array_equal(arr if mode == "L" else arr[..., 0], expected)


XMP_ORIENTATION = {  # tiff:Orientation 6 as an attribute and as an element, as cameras and editors write it
    "attribute": '<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>',
    "element": ('<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/">'
                "<tiff:Orientation>6</tiff:Orientation></rdf:Description>"),
}


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("form, with_exif", [("attribute", True), ("element", True), ("attribute", False)])
def test_an_xmp_orientation_is_applied_once_and_not_again_by_readers_of_the_output(tmp_path, fmt, form,
                                                                                  with_exif):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left: a turned copy is 40 high and 20 wide
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           f"{XMP_ORIENTATION[form]}</rdf:RDF></x:xmpmeta>").encode()
    extra = {"exif": camera_exif(6)} if with_exif else {}
    suffix = ".jpg" if fmt == "JPEG" else ".webp"
    Image.fromarray(pixels).save(tmp_path / f"in{suffix}", fmt, xmp=xmp, **extra)
    image = load_image(tmp_path / f"in{suffix}")
    assert image.pixels.shape == (40, 20, 3)  # turned once, as Pillow turns it (from XMP alone, too)
    out = save_image(image, tmp_path / f"out{suffix}")
    with Image.open(out) as im:
        assert im.getexif().get(0x0112, 1) == 1 and b"tiff:Orientation" in im.info["xmp"]
        assert b"rdf:RDF" in im.info["xmp"]  # the rest of the XMP is kept
        assert ImageOps.exif_transpose(im).size == (20, 40)  # upright for every reader: not turned again
    assert load_image(out).pixels.shape == (40, 20, 3)


def test_sixteen_bit_premultiplied_alpha_tiff_reads_as_its_colour_and_writes_unassociated(tmp_path):
    import tifffile

    colour = np.array([200, 100, 50], np.uint16) * 257
    alpha = np.array([[65535, 32768], [16384, 0]], np.uint16)  # opaque, half, quarter, transparent
    stored = np.rint(colour * (alpha[..., None] / 65535)).astype(np.uint16)  # "associated": premultiplied
    tifffile.imwrite(tmp_path / "premultiplied16.tif", np.concatenate([stored, alpha[..., None]], axis=-1),
                     photometric="rgb", extrasamples=["assocalpha"])
    image = load_image(tmp_path / "premultiplied16.tif")
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.alpha, alpha)
    seen = alpha > 0
    assert np.abs(image.pixels[seen].astype(int) - colour).max() <= 2  # not darkened by the alpha
    assert not image.pixels[~seen].any()
    # Pillow reads the same file at 8 bits (un-premultiplying on its own) to the same colour.
    eight = np.concatenate([np.rint(stored / 257), np.rint(alpha[..., None] / 257)], axis=-1).astype(np.uint8)
    tifffile.imwrite(tmp_path / "premultiplied8.tif", eight, photometric="rgb", extrasamples=["assocalpha"])
    pillow = load_image(tmp_path / "premultiplied8.tif").pixels.astype(int)
    assert np.abs(pillow[seen] - image.pixels[seen] / 257).max() <= 2
    # Written back with unassociated alpha, which the colour now is.
    with tifffile.TiffFile(save_image(image, tmp_path / "out.tif")) as tif:
        assert tuple(tif.pages[0].extrasamples) == (2,)  # 2: unassociated alpha
        written = tif.pages[0].asarray()
    np.testing.assert_array_equal(written[..., :3], image.pixels)
    np.testing.assert_array_equal(written[..., 3], alpha)


def test_a_camera_jpeg_that_pillow_calls_mpo_is_written_back_as_the_jpeg_it_is(tmp_path):
    from PIL import JpegImagePlugin

    rgb = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">rights</x:xmpmeta>'
    preview = Image.fromarray(rgb[::2, ::2])  # cameras append a preview (or a stereo pair) this way
    Image.fromarray(rgb).save(tmp_path / "in.jpg", "MPO", save_all=True, append_images=[preview], quality=90,
                              subsampling=0, comment=b"shot on film", xmp=xmp, progressive=True)
    with Image.open(tmp_path / "in.jpg") as im:
        assert im.format == "MPO"
    image = load_image(tmp_path / "in.jpg")
    assert image.format == "JPEG" and image.info["frames"] == 2
    with Image.open(save_image(image, tmp_path / "out.jpg")) as out:
        assert out.format == "JPEG" and JpegImagePlugin.get_sampling(out) == 0  # 4:4:4 kept
        assert out.info["comment"] == b"shot on film" and out.info["xmp"] == xmp and out.info["progressive"]


# ------------------------------------------------------------------ multi-page TIFF


def _stack_pages() -> list[tuple[np.ndarray, np.ndarray | None, int]]:
    """``(pixels, alpha, orientation)`` per page: 16-bit RGB, then 16-bit RGBA turned by the
    Orientation tag 6, then 8-bit grey of another size."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    rgba = rng.integers(0, 65536, (12, 10, 4), dtype=np.uint16)
    rgba[..., 3] = np.maximum(rgba[..., 3], 1)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    return [(rgb, None, 1), (rgba[..., :3], rgba[..., 3], 6), (grey[..., None], None, 1)]


def test_every_page_of_a_multi_page_tiff_reads_upright_and_writes_back_exactly(tmp_path):
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tiff:
        for pixels, alpha, orientation in _stack_pages():
            stored = pixels if alpha is None else np.concatenate([pixels, alpha[..., None]], axis=-1)
            tiff.write(stored if stored.shape[-1] > 1 else stored[..., 0],
                       photometric="rgb" if stored.shape[-1] >= 3 else "minisblack",
                       extrasamples=["unassalpha"] if alpha is not None else None,
                       extratags=[(0x0112, 3, 1, orientation, True)])
    stack = load_image(buf.getvalue(), pages=True)
    assert stack.info["frames"] == 3 and len(stack.pages) == 2
    assert load_image(buf.getvalue()).pages == ()  # the first page only, unless asked
    got = [stack, *stack.pages]
    for page, (pixels, alpha, orientation) in zip(got, _stack_pages(), strict=True):
        np.testing.assert_array_equal(page.pixels, np.rot90(pixels, -1) if orientation == 6 else pixels)
        if alpha is None:
            assert page.alpha is None
        else:
            np.testing.assert_array_equal(page.alpha, np.rot90(alpha, -1))
    back = load_image(save_image(stack, tmp_path / "stack.tif"), pages=True)
    assert [p.pixels.shape for p in (back, *back.pages)] == [(12, 10, 3), (10, 12, 3), (7, 9, 1)]
    for page, written in zip(got, (back, *back.pages), strict=True):
        np.testing.assert_array_equal(written.pixels, page.pixels)
        assert (written.alpha is None) == (page.alpha is None)
    np.testing.assert_array_equal(back.pages[0].alpha, stack.pages[0].alpha)
    # Another format holds the first page only.
    png = load_image(save_image(stack, tmp_path / "first.png"), pages=True)
    np.testing.assert_array_equal(png.pixels, stack.pixels)
    assert png.pages == ()


def test_an_eight_bit_stack_keeps_each_pages_mode_and_the_compression(tmp_path):
    grey = Image.fromarray(np.arange(120, dtype=np.uint8).reshape(10, 12))
    palette = Image.fromarray(np.arange(120, dtype=np.uint8).reshape(10, 12) % 7).convert("P")
    rgb = Image.fromarray(np.stack([np.arange(120, dtype=np.uint8).reshape(10, 12)] * 3, axis=-1))
    grey.save(tmp_path / "in.tif", save_all=True, append_images=[palette, rgb],
              compression="tiff_adobe_deflate")
    stack = load_image(tmp_path / "in.tif", pages=True)
    assert [p.mode for p in (stack, *stack.pages)] == ["L", "P", "RGB"]
    save_image(stack, tmp_path / "out.tif")
    written = Image.open(tmp_path / "out.tif")
    assert written.n_frames == 3 and written.info["compression"] == "tiff_adobe_deflate"
    again = load_image(tmp_path / "out.tif", pages=True)
    for index, (page, back) in enumerate(zip((stack, *stack.pages), (again, *again.pages), strict=True)):
        written.seek(index)
        assert written.mode == back.mode == page.mode
        np.testing.assert_array_equal(back.pixels, page.pixels)


def test_a_stack_past_the_pixel_limit_or_with_a_damaged_page_is_refused_by_page(tmp_path):
    pages = [Image.fromarray(np.full((1000, 1000), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    assert load_image(tmp_path / "stack.tif", max_pixels=2_500_000).pages == ()  # one page: fine
    with pytest.raises(ImageTooLargeError, match=r"stack\.tif: its first 3 of 3 pages hold 3\.0 MP together, "
                                                 r"more than the 2\.5 MP limit"):
        load_image(tmp_path / "stack.tif", max_pixels=2_500_000, pages=True)
    # Uncompressed pages one after another: cut the file inside the last page's pixels.
    (tmp_path / "cut.tif").write_bytes((tmp_path / "stack.tif").read_bytes()[:2_500_000])
    with pytest.raises(TruncatedImageError, match=r"cut\.tif, page 3 of 3: "):
        load_image(tmp_path / "cut.tif", pages=True)
    assert load_image(tmp_path / "cut.tif").pixels.mean() == 10  # the first page alone is whole


def test_avif_reads_upright_and_writes_back_with_its_metadata(tmp_path):
    yy, xx = np.mgrid[0:20, 0:30]
    pixels = np.stack([xx * 8, yy * 12, (xx + yy) * 4], axis=-1).astype(np.uint8)  # smooth: AVIF keeps it
    exif = camera_exif(6)
    Image.fromarray(pixels).save(tmp_path / "photo.avif", quality=100, exif=exif.tobytes(),
                                 xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    image = load_image(tmp_path / "photo.avif")
    assert (image.format, image.mode, image.pixels.shape) == ("AVIF", "RGB", (30, 20, 3))
    assert np.abs(image.pixels.astype(int) - np.rot90(pixels, -1)).mean() < 2  # turned once
    assert image.info["xmp"] == b'<x:xmpmeta><rdf:Description tiff:Orientation="1"/></x:xmpmeta>'
    save_image(image, tmp_path / "out.avif")
    written = Image.open(tmp_path / "out.avif")
    assert written.format == "AVIF" and written.size == (20, 30)
    assert written.getexif().get(0x0112, 1) == 1 and written.getexif()[0x010F] == exif[0x010F]
    back = load_image(tmp_path / "out.avif")
    assert np.abs(back.pixels.astype(int) - image.pixels).mean() < 2 and back.info["xmp"] == image.info["xmp"]


# ------------------------------------------------------------------ text metadata


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append((kind, data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 1), (np.uint8, 3), (np.uint16, 3)])
def test_png_text_chunks_are_written_back_as_they_were_and_xmp_upright(tmp_path, dtype, channels):
    from PIL.PngImagePlugin import PngInfo

    pixels = np.zeros((20, 40, channels), dtype)
    pixels[:, :10] = np.iinfo(dtype).max  # a white band on the left: a turned copy is 40 high
    text = PngInfo()
    text.add_text("Author", "A. Photographer")
    text.add_text("parameters", "steps: 20, sampler: Euler", zip=True)
    text.add_itxt("Title", "Débruitage", lang="fr", tkey="Titre")
    text.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>',
                  zip=True)
    text.add_text("Raw profile type exif", "\nexif\n      8\n457869660000\n")
    if dtype == np.uint8:
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(tmp_path / "in.png", pnginfo=text)
    else:  # Pillow writes no 16-bit colour: our writer, then the chunks Pillow would add
        data = images.encode_image(ImageFile(pixels, None, "PNG", "RGB"), "PNG")
        chunks = b"".join(images._png_chunk(kind, body) for kind, body, _ in text.chunks)
        (tmp_path / "in.png").write_bytes(data[:33] + chunks + data[33:])
    image = load_image(tmp_path / "in.png")
    assert image.pixels.shape[:2] == (40, 20)  # turned once, by the XMP's orientation
    written = save_image(image, tmp_path / "out.png").read_bytes()
    chunks = [(kind, body) for kind, body in _png_chunks(written) if kind in (b"tEXt", b"zTXt", b"iTXt")]
    assert [body.split(b"\x00")[0] for _, body in chunks] == [
        b"Author", b"parameters", b"Title", b"XML:com.adobe.xmp"]  # the raw EXIF copy is dropped
    with Image.open(tmp_path / "out.png") as im:
        assert im.text["Author"] == "A. Photographer" and im.text["parameters"] == "steps: 20, sampler: Euler"
        assert im.text["Title"] == "Débruitage" and im.text["Title"].lang == "fr"
        assert 'tiff:Orientation="1"' in im.text["XML:com.adobe.xmp"]
        assert ImageOps.exif_transpose(im).size == (20, 40)  # upright for every reader
    assert load_image(written).pixels.shape[:2] == (40, 20)


def test_xmp_goes_from_jpeg_into_a_png_output_as_itxt_and_back_into_a_jpeg_once(tmp_path):
    xmp = b'<x:xmpmeta><rdf:Description dc:creator="me"/></x:xmpmeta>'
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.jpg", xmp=xmp)
    save_image(load_image(tmp_path / "in.jpg"), tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as im:
        assert im.text["XML:com.adobe.xmp"] == xmp.decode()
    again = save_image(load_image(tmp_path / "out.png"), tmp_path / "again.png").read_bytes()
    assert again.count(b"XML:com.adobe.xmp") == 1
    back = save_image(load_image(tmp_path / "out.png"), tmp_path / "back.jpg")
    assert back.read_bytes().count(b"http://ns.adobe.com/xap/1.0/\x00") == 1
    with Image.open(back) as im:
        assert im.info["xmp"] == xmp


@pytest.mark.parametrize("suffix", ["jpg", "webp", "avif", "tif", "png"])
@pytest.mark.parametrize("kind", ["iTXt", "tEXt"])
def test_a_pngs_xmp_orientation_turns_it_once_into_every_output_format(tmp_path, suffix, kind):
    from PIL.PngImagePlugin import PngInfo

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255
    text = PngInfo()
    xmp = '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    text.add_itxt("XML:com.adobe.xmp", xmp) if kind == "iTXt" else text.add_text("XML:com.adobe.xmp", xmp)
    Image.fromarray(pixels).save(tmp_path / "in.png", pnginfo=text)
    image = load_image(tmp_path / "in.png")
    assert image.pixels.shape[:2] == (40, 20) and image.info["xmp"] == xmp.replace('"6"', '"1"').encode()
    out = save_image(image, tmp_path / f"out.{suffix}")
    with Image.open(out) as im:
        assert ImageOps.exif_transpose(im).size == (20, 40)  # upright: not turned again by any reader
    assert load_image(out).pixels.shape[:2] == (40, 20)
    assert out.read_bytes().count(b"tiff:Orientation") == 1


def test_xmp_too_large_for_a_jpeg_segment_is_left_out_and_the_jpeg_written(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>" + "a" * 70_000 + "</x:xmpmeta>")
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png", pnginfo=text)
    out = save_image(load_image(tmp_path / "in.png"), tmp_path / "out.jpg")
    with Image.open(out) as im:
        assert im.size == (8, 8) and "xmp" not in im.info


@pytest.mark.parametrize("sixteen_bit_colour", [False, True])
def test_each_tiff_pages_text_tags_and_xmp_are_kept_and_nothing_is_added(tmp_path, sixteen_bit_colour):
    import tifffile

    described = [
        {270: "ImageJ=1.54f\nimages=2\nslices=2\nunit=micron\nspacing=0.5\n", 315: "Lab A",
         33432: "CC-BY 4.0", 306: "2026:11:28 10:00:00", 700: b'<x:xmpmeta tiff:Orientation="1"/>'},
        {285: "second slice"},
    ]
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tiff:
        for index, tags in enumerate(described):
            arr = (np.full((6, 8, 3), 1000 * (index + 1), np.uint16) if sixteen_bit_colour
                   else np.full((6, 8), 10 * (index + 1), np.uint8))
            extra = [(tag, "B" if isinstance(v, bytes) else "s", 0, v, True)
                     for tag, v in tags.items() if tag != 270]
            tiff.write(arr, photometric="rgb" if sixteen_bit_colour else "minisblack", metadata=None,
                       software=False, description=tags.get(270), extratags=extra)
    save_image(load_image(buf.getvalue(), pages=True), tmp_path / "out.tif")

    def text_tags(source) -> list[dict]:
        with tifffile.TiffFile(source) as tif:  # tifffile strips an ASCII value's trailing newline
            return [{tag.code: tag.value for tag in page.tags if tag.code in (*images.TIFF_TEXT_TAGS, 700)}
                    for page in tif.pages]

    written = text_tags(tmp_path / "out.tif")
    assert written == text_tags(io.BytesIO(buf.getvalue()))  # nothing added: no Software of tifffile's
    assert written[0][270].endswith("spacing=0.5") and written[1] == {285: "second slice"}
    with Image.open(tmp_path / "out.tif") as im:
        assert im.tag_v2[270] == described[0][270]  # to the last byte


@pytest.mark.parametrize("sixteen_bit_colour", [False, True])
def test_a_pyramids_reduced_resolution_pages_stay_marked_as_such(tmp_path, sixteen_bit_colour):
    # A slide scanner's or GDAL's pyramid: the full image, then half and quarter size copies
    # marked NewSubfileType 1, which viewers show as levels, not as further pages of the scan.
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tiff:
        for level, side in enumerate((32, 16, 8)):
            arr = (np.full((side, side, 3), 9000, np.uint16) if sixteen_bit_colour
                   else np.full((side, side), 90, np.uint8))
            tiff.write(arr, subfiletype=1 if level else 0, metadata=None, software=False)
        # A malformed page that claims to be a transparency mask (4) but holds grey: tifffile
        # refuses to write that mark, which failed the stack; it is dropped, the page kept.
        tiff.write(np.full((8, 8), 40, np.uint8), metadata=None, software=False,
                   extratags=[(254, 4, 1, 5, True)])

    def subfile_types(source) -> list[int]:
        with tifffile.TiffFile(source) as tif:
            return [page.tags.valueof(254, 0) for page in tif.pages]

    assert subfile_types(io.BytesIO(buf.getvalue())) == [0, 1, 1, 5]
    image = load_image(buf.getvalue(), pages=True)
    assert [page.info.get("subfile_type", 0) for page in (image, *image.pages)] == [0, 1, 1, 1]
    save_image(image, tmp_path / "out.tif")
    assert subfile_types(tmp_path / "out.tif") == [0, 1, 1, 1]
    with Image.open(tmp_path / "out.tif") as im:
        im.seek(2)
        assert im.size == (8, 8) and im.tag_v2[254] == 1


@pytest.mark.parametrize("sixteen_bit", [True, False])
def test_a_stack_cut_short_anywhere_fails_as_damaged_and_never_loses_pages_unsaid(sixteen_bit, tmp_path):
    # A three-page stack cut short by 1 to 700 bytes, every 3rd length. Before: a cut through
    # a pointer to the next page gave 2 pages or 1, read without a word (but for tifffile's and
    # OpenCV's lines on stderr); a cut elsewhere said a page "cannot be read here", as if its
    # kind were the matter, or raised imagecodecs' DeflateError, which the batch reported as
    # "unreadable"; and Pillow's, tifffile's and OpenCV's warnings went to stderr. In a fresh
    # interpreter, as a user's script would run it (pytest catches warnings and logs itself).
    import subprocess
    import sys

    import tifffile

    buf = io.BytesIO()
    if sixteen_bit:  # tifffile writes each page's directory before its pixels
        with tifffile.TiffWriter(buf) as tiff:
            for index in range(3):
                tiff.write(np.full((64, 64, 3), 1000 * (index + 1), np.uint16), photometric="rgb",
                           compression="zlib")
    else:  # Pillow after them
        pages = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64), np.uint8))
                 for i in range(3)]
        pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_adobe_deflate")
    data, paths = buf.getvalue(), []
    for cut in range(1, 700, 3):
        paths.append(tmp_path / f"{cut}.tif")
        paths[-1].write_bytes(data[:-cut])
    script = ("import sys\nfrom data.images import load_image\n"
              "for path in sys.argv[1:]:\n"
              "    try:\n        print(1 + len(load_image(path, pages=True).pages), 'pages')\n"
              "    except Exception as err:\n        print(type(err).__name__, err)\n")
    done = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True,
                          text=True, cwd=Path(__file__).parents[2], timeout=300, check=True)
    results = done.stdout.splitlines()
    assert len(results) == len(paths)
    odd = [(p.name, r) for p, r in zip(paths, results, strict=True)
           if r != "3 pages" and not r.startswith(f"TruncatedImageError {p}")]
    assert not odd, odd
    assert sum(r.startswith("TruncatedImageError") for r in results) > 0.9 * len(results)
    assert any("its list of pages breaks after page" in r for r in results)
    # Nothing of Pillow's, tifffile's or OpenCV's; Pillow's libtiff prints from C, beyond reach
    # ("TIFFAdvanceDirectory: Error fetching directory link.").
    assert all(line.startswith("TIFF") for line in done.stderr.splitlines()), done.stderr
    assert done.stderr == "" or not sixteen_bit


@pytest.mark.parametrize("pages", [50, 150])
def test_a_stack_whose_chain_of_pages_loops_back_fails_at_once(pages, tmp_path):
    # tifffile looks for a loop only at its 100th page, and followed a longer loop for ever
    # (memory growing by 30 MB/s); Pillow stops at a repeated page. Run apart, with a time
    # limit, so that a hang fails the test instead of the suite.
    import subprocess
    import sys

    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tiff:
        for index in range(pages):
            tiff.write(np.full((4, 4), index, np.uint8), metadata=None, software=False)
    data = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        first, last = tif.pages[0].offset, tif.pages[-1].offset
    entries = struct.unpack_from("<H", data, last)[0]
    struct.pack_into("<I", data, last + 2 + 12 * entries, first)  # the last page's "next" is the first
    (tmp_path / "loop.tif").write_bytes(bytes(data))
    script = ("import sys\nfrom data.images import load_image\n"
              "try:\n    load_image(sys.argv[1], pages=True)\n"
              "except Exception as err:\n    print(type(err).__name__, err)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "loop.tif")], capture_output=True,
                          text=True, cwd=Path(__file__).parents[2], timeout=60, check=True)
    assert done.stdout == (f"TruncatedImageError {tmp_path / 'loop.tif'}: its list of pages breaks after "
                           f"page {pages} (the pointer after page {pages} goes back to page 1): the file "
                           "is damaged or cut short\n"), done.stdout


# ------------------------------------------------------------------ stacks and text: hard cases


@pytest.mark.parametrize("modes", [("L", "RGB", "P"), ("RGB", "P", "RGB"), ("P", "1", "RGBA"),
                                   ("1", "P", "CMYK")])
def test_a_stack_with_a_palette_page_reads_every_page_as_a_file_of_that_page_alone(tmp_path, modes):
    # Pillow 12.3 applies a palette page's palette to the pages after it once n_frames has run.
    base = np.arange(120, dtype=np.uint8).reshape(10, 12)
    made = {"L": Image.fromarray(base), "RGB": Image.fromarray(np.stack([base, 255 - base, base // 2], -1)),
            "P": Image.fromarray(base % 9).convert("P"), "1": Image.fromarray(base > 60),
            "RGBA": Image.fromarray(np.stack([base, base, 255 - base, base | 128], -1)),
            "CMYK": Image.fromarray(np.stack([base, base, 255 - base], -1)).convert("CMYK")}
    pages = [made[m] for m in modes]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    stack = load_image(tmp_path / "stack.tif", pages=True)
    for index, (page, mode) in enumerate(zip((stack, *stack.pages), modes, strict=True)):
        pages[index].save(tmp_path / f"alone{index}.tif")
        alone = load_image(tmp_path / f"alone{index}.tif")
        assert page.mode == mode
        np.testing.assert_array_equal(page.pixels, alone.pixels)
        if alone.alpha is not None:
            np.testing.assert_array_equal(page.alpha, alone.alpha)
    again = load_image(save_image(stack, tmp_path / "out.tif"), pages=True)
    for page, back in zip((stack, *stack.pages), (again, *again.pages), strict=True):
        np.testing.assert_array_equal(back.pixels, page.pixels)


def test_a_page_that_cannot_be_read_fails_the_stack_by_name_instead_of_being_dropped():
    import tifffile

    rng = np.random.default_rng(1)
    grey_alpha16 = dict(data=rng.integers(0, 65535, (4, 5, 2), dtype=np.uint16), photometric="minisblack",
                        extrasamples=["unassalpha"])
    planar16 = dict(data=rng.integers(0, 65535, (3, 4, 5), dtype=np.uint16), photometric="rgb",
                    planarconfig="separate")
    for bad, words in ((grey_alpha16, r"page 2 of 3: this page cannot be read here"),
                       (planar16, r"page 2 of 3: a 16-bit TIFF stored in separate colour planes")):
        buf = io.BytesIO()
        with tifffile.TiffWriter(buf) as tiff:
            tiff.write(np.zeros((4, 5), np.uint8), photometric="minisblack", metadata=None)
            tiff.write(**bad, metadata=None)
            tiff.write(np.zeros((4, 5), np.uint8), photometric="minisblack", metadata=None)
        assert load_image(buf.getvalue()).info["frames"] == 3  # counted even where Pillow cannot
        with pytest.raises(UnsupportedImageError, match=words):
            load_image(buf.getvalue(), pages=True)


def test_a_later_page_past_pillows_own_bomb_limit_is_refused_as_too_large(monkeypatch):
    pages = [Image.fromarray(np.zeros((10, 10), np.uint8)), Image.fromarray(np.zeros((60, 60), np.uint8))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3,600 px is past twice it
    with pytest.raises(ImageTooLargeError, match=r"page 2 of 2: .*decompression bomb"):
        load_image(buf.getvalue(), pages=True)


def test_later_pages_with_associated_alpha_or_an_xmp_orientation_read_as_the_first_page_would(tmp_path):
    import tifffile

    colour = np.array([200, 100, 50], np.uint16) * 257
    alpha = np.full((6, 10), 32768, np.uint16)
    premultiplied = np.concatenate([(colour * (32768 / 65535)).round().astype(np.uint16) * np.ones((6, 10, 1),
                                    np.uint16), alpha[..., None]], axis=-1)
    turned_xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    ramp = (np.arange(60, dtype=np.uint16).reshape(6, 10)[..., None] * np.array([1000, 500, 10], np.uint16))
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tiff:
        for _ in range(2):  # the first page through OpenCV, the second through tifffile
            tiff.write(premultiplied, photometric="rgb", extrasamples=["assocalpha"], metadata=None)
        for _ in range(2):
            tiff.write(ramp, photometric="rgb", metadata=None, extratags=[(700, "B", 0, turned_xmp, True)])
    stack = load_image(buf.getvalue(), pages=True)
    for page in (stack, stack.pages[0]):
        assert np.abs(page.pixels.astype(int) - colour).max() <= 257, page.pixels[0, 0]  # the colour itself
        np.testing.assert_array_equal(page.alpha, alpha)
    for page in stack.pages[1:]:  # turned once, by the XMP alone
        np.testing.assert_array_equal(page.pixels, np.rot90(ramp, -1))
        assert page.info["xmp"] == turned_xmp.replace(b'"6"', b'"1"')


def test_non_ascii_tiff_text_and_a_cameras_exif_and_xmp_are_kept_in_tiff_outputs(tmp_path):
    import tifffile

    copyright_ = "© 2026 Jürgen, scale 5 µm".encode()  # UTF-8 bytes, as most writers store them
    for sixteen in (False, True):
        arr = np.full((6, 8, 3), 40000 if sixteen else 100, np.uint16 if sixteen else np.uint8)
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb", metadata=None, software=False, description=copyright_,
                         extratags=[(33432, "s", 0, copyright_, True)])
        save_image(load_image(buf.getvalue()), tmp_path / f"out{sixteen}.tif")
        with tifffile.TiffFile(tmp_path / f"out{sixteen}.tif") as tif:
            tags = tif.pages[0].tags
            assert tags[270].value == tags[33432].value == copyright_.decode(), sixteen
    # A phone JPEG (EXIF with its Exif and GPS sub-directories, the size the camera took it at,
    # turned by its orientation, and XMP) into a TIFF: the EXIF's record of the camera's own
    # file must not describe the TIFF's pixels.
    exif = camera_exif(6)
    exif[0x0100], exif[0x0101] = 4032, 3024  # ImageWidth, ImageLength before resizing
    exif[0x8769] = {0x9003: "2026:11:28 10:00:00"}  # DateTimeOriginal
    exif[0x8825] = {0x0001: "N", 0x0003: "E"}  # GPS: latitude and longitude references
    xmp = b'<x:xmpmeta><rdf:Description dc:creator="me"/></x:xmpmeta>'
    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[:, :10] = 255
    Image.fromarray(pixels).save(tmp_path / "cam.jpg", exif=exif, xmp=xmp, quality=95)
    photo = load_image(tmp_path / "cam.jpg")
    assert photo.pixels.shape == (40, 30, 3)
    save_image(photo, tmp_path / "cam.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "cam.tif").pixels, photo.pixels)
    with Image.open(tmp_path / "cam.tif") as im:
        written = im.getexif()
        assert written[0x010F] == "DAE Test Camera" and im.info["xmp"] == xmp
        assert written.get_ifd(0x8769)[0x9003] == "2026:11:28 10:00:00"
        assert written.get_ifd(0x8825) == {0x0001: "N", 0x0003: "E"}


def test_a_single_page_written_from_a_stack_drops_the_stacks_imagej_description(tmp_path):
    pages = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (1, 2, 3)]
    from PIL import TiffImagePlugin

    described = TiffImagePlugin.ImageFileDirectory_v2()
    described[270], described[315] = "ImageJ=1.54f\nimages=3\nslices=3\n", "Lab A"
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:], tiffinfo=described)
    with Image.open(save_image(load_image(tmp_path / "stack.tif"), tmp_path / "one.tif")) as im:
        assert 270 not in im.tag_v2 and im.tag_v2[315] == "Lab A"
    with Image.open(save_image(load_image(tmp_path / "stack.tif", pages=True), tmp_path / "all.tif")) as im:
        assert im.tag_v2[270] == "ImageJ=1.54f\nimages=3\nslices=3\n" and im.n_frames == 3


def _with_chunks(png: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    end = png.rfind(b"IEND") - 4
    return png[:33] + before + png[33:end] + after + png[end:]


@pytest.mark.parametrize("kind", ["tEXt", "zTXt"])
def test_an_xmp_orientation_in_a_plain_png_text_chunk_is_made_upright_too(tmp_path, kind):
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    import zlib

    body = images._PNG_XMP_KEY + (b"\x00" + xmp if kind == "tEXt" else b"\x00\x00" + zlib.compress(xmp))
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255
    png = _with_chunks(images.encode_image(ImageFile(pixels, None, "PNG", "RGB"), "PNG"),
                       before=images._png_chunk(kind.encode(), body))
    image = load_image(png)
    assert image.pixels.shape[:2] == (40, 20)
    written = save_image(image, tmp_path / "out.png")
    with Image.open(written) as im:
        assert ImageOps.exif_transpose(im).size == (20, 40)  # not turned again
    assert load_image(written).pixels.shape[:2] == (40, 20)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_text_after_the_pixels_stays_after_them_and_damaged_or_huge_text_is_dropped(tmp_path, dtype):
    import zlib

    good_after = images._png_chunk(b"tEXt", b"Comment\x00written after the pixels")
    damaged = [
        images._png_chunk(b"zTXt", b"Comment\x00\x01garbage"),  # compression method 1 does not exist
        images._png_chunk(b"zTXt", b"Huge\x00\x00" + zlib.compress(b"a" * (2 << 20))),  # 2 MB inflated
        images._png_chunk(b"tEXt", b"Bad crc\x00text")[:-4] + b"\x00\x00\x00\x00",
        images._png_chunk(b"tEXt", b"\x00no keyword"),
    ]
    pixels = np.full((4, 4, 3), 7, dtype)
    png = images.encode_image(ImageFile(pixels, None, "PNG", "RGB"), "PNG")
    source = _with_chunks(png, after=good_after + b"".join(damaged))
    if dtype == np.uint8:  # Pillow refuses some of these chunks itself: only the good one here
        source = _with_chunks(png, after=good_after + damaged[2])
    image = load_image(source)
    written = images.encode_image(image, "PNG")
    chunks = _png_chunks(written)
    kinds = [kind for kind, _ in chunks]
    texts = [body for kind, body in chunks if kind in (b"tEXt", b"zTXt")]
    assert texts == [b"Comment\x00written after the pixels"]
    assert kinds.index(b"tEXt") > kinds.index(b"IDAT") and kinds[-1] == b"IEND"
    with Image.open(io.BytesIO(written)) as im:
        im.load()
        assert im.text["Comment"] == "written after the pixels"
    np.testing.assert_array_equal(load_image(written).pixels, pixels)


def test_a_jpegs_photoshop_thumbnail_of_the_noisy_input_is_left_out_and_the_rest_kept(tmp_path):
    def resource(code: int, data: bytes, name: bytes = b"", signature: bytes = b"8BIM") -> bytes:
        label = bytes([len(name)]) + name
        return (signature + code.to_bytes(2, "big") + label + b"\x00" * (len(label) % 2)
                + len(data).to_bytes(4, "big") + data + b"\x00" * (len(data) % 2))

    def app13(*resources: bytes) -> bytes:
        payload = b"Photoshop 3.0\x00" + b"".join(resources)
        return b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload

    iptc = resource(0x0404, b"\x1c\x02\x19\x00\x05heron")
    resolution = resource(0x03ED, bytes(range(16)), name=b"res")
    thumbnail = b"\x00" * 28 + b"\xff\xd8 a small JPEG of the noisy image \xff\xd9"  # odd length: padded
    spread = app13(iptc[:-3])  # a resource that goes on in a next segment: not ours to change
    # ImageReady's signature and zeros after the last resource, as some writers leave them
    padded = app13(iptc, resource(0x040C, thumbnail, signature=b"MeSa")) + b"\x00" * 4
    padded = padded[:2] + (len(padded) - 2).to_bytes(2, "big") + padded[4:]
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(
        tmp_path / "in.jpg", extra=app13(iptc, resource(0x040C, thumbnail), resolution)
        + app13(resource(0x0409, thumbnail)) + spread + padded)
    with Image.open(tmp_path / "in.jpg") as im:
        assert {0x0404, 0x040C, 0x0409, 0x03ED} <= set(im.info["photoshop"])
    written = save_image(load_image(tmp_path / "in.jpg"), tmp_path / "out.jpg").read_bytes()
    after = app13(iptc) + b"\x00" * 4
    after = after[:2] + (len(after) - 2).to_bytes(2, "big") + after[4:]
    assert written.count(app13(iptc, resolution) + spread + after) == 1  # the second segment is gone
    assert b"noisy image" not in written
    with Image.open(io.BytesIO(written)) as im:
        assert set(im.info["photoshop"]) == {0x0404, 0x03ED}


def test_a_jpegs_iptc_caption_and_keywords_are_written_back(tmp_path):
    from PIL import IptcImagePlugin

    caption = b"Heron at dawn, Lake Constance"
    iim = b"\x1c\x02\x78" + len(caption).to_bytes(2, "big") + caption + b"\x1c\x02\x19\x00\x05heron"
    resource = b"8BIM\x04\x04\x00\x00" + len(iim).to_bytes(4, "big") + iim + b"\x00" * (len(iim) % 2)
    payload = b"Photoshop 3.0\x00" + resource
    segment = b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload
    other = b"\xff\xed" + (len(b"Photoshop 3.0\x00") + 2).to_bytes(2, "big") + b"Photoshop 3.0\x00"
    # Two APP13 segments, the second after a fill byte (0xFF), as some writers pad.
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(
        tmp_path / "in.jpg", extra=segment + b"\xff" + other, exif=camera_exif())
    written = save_image(load_image(tmp_path / "in.jpg"), tmp_path / "out.jpg")
    assert written.read_bytes().count(segment + other) == 1
    with Image.open(written) as im:
        assert IptcImagePlugin.getiptcinfo(im) == {(2, 120): caption, (2, 25): b"heron"}
        assert im.getexif()[0x010F] == "DAE Test Camera"


def _raw_png(pixels: np.ndarray, colour: int, interlaced: bool, keep: float = 1.0) -> bytes:
    """A PNG written by hand (Pillow writes no interlaced ones): 8-bit ``pixels`` (H, W[, C]),
    every row unfiltered, its whole compressed stream ending after ``keep`` of the rows (of all
    the passes), at the end of a row: Pillow itself refuses a stream that stops inside a row."""
    height, width = pixels.shape[:2]
    passes = images._ADAM7 if interlaced else ((0, 0, 1, 1),)
    rows = [b"\x00" + row.tobytes() for x, y, dx, dy in passes for row in pixels[y::dy, x::dx] if row.size]
    raw = b"".join(rows[: int(len(rows) * keep)])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + images._png_chunk(b"IHDR", ihdr)
            + images._png_chunk(b"IDAT", images.zlib.compress(raw))
            + images._png_chunk(b"IEND", b""))


@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize("shape,colour", [((37, 29), 0), ((37, 29, 3), 2), ((5, 3, 4), 6), ((1, 1), 0)])
def test_a_png_whose_pixel_data_ends_early_is_refused_not_filled_with_black(shape, colour, interlaced):
    pixels = np.random.default_rng(0).integers(1, 256, shape, dtype=np.uint8)  # no black pixel
    whole = load_image(_raw_png(pixels, colour, interlaced))
    got = whole.pixels if whole.alpha is None else np.dstack([whole.pixels, whole.alpha])
    np.testing.assert_array_equal(got.reshape(shape), pixels)
    if pixels.size == 1:  # 1 x 1: only the header's sizes to check (6 of Adam7's 7 passes are empty)
        return
    short = _raw_png(pixels, colour, interlaced, keep=0.9)  # a whole stream, but 10 % short
    with pytest.raises(TruncatedImageError, match=r"<bytes>: its pixel data ends early \([\d,]+ of the "
                       r"[\d,]+ bytes its header asks for; the missing rows would be black\)"):
        load_image(short)


def test_an_uncompressed_ycbcr_tiff_is_unsupported_not_damaged_and_a_compressed_one_loads():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("YCbCr").save(buf, "TIFF")  # a whole file Pillow cannot decode
    with pytest.raises(UnsupportedImageError, match="<bytes>: an uncompressed TIFF in YCbCr colour, "
                       "which cannot be decoded here; save it as RGB, or compressed"):
        load_image(buf.getvalue())
    for compression in ("tiff_lzw", "tiff_adobe_deflate", "packbits"):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert("YCbCr").save(buf, "TIFF", compression=compression)
        assert np.abs(load_image(buf.getvalue()).pixels.astype(int) - rgb).max() <= 3, compression


# ------------------------------------------------------- damaged files the decoders trip on


def _set_tiff_field(data: bytes, tag: int, kind: int | None = None, count: int | None = None,
                    value: int | None = None) -> bytes:
    """A little-endian TIFF with one entry of its first IFD changed (type, count or value)."""
    b = bytearray(data)
    ifd = struct.unpack("<I", b[4:8])[0]
    for i in range(struct.unpack("<H", b[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", b[entry:entry + 2])[0] == tag:
            for offset, fmt, new in ((2, "<H", kind), (4, "<I", count), (8, "<I", value)):
                if new is not None:
                    b[entry + offset:entry + offset + struct.calcsize(fmt)] = struct.pack(fmt, new)
    return bytes(b)


def _damaged_files() -> dict[str, bytes]:
    import tifffile

    rgb = np.arange(9 * 13 * 3, dtype=np.uint8).reshape(9, 13, 3)
    files = {}
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TIFF")
    files["strip offsets of type RATIONAL (TypeError)"] = _set_tiff_field(buf.getvalue(), 273, kind=5)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((32, 32, 3), np.uint8), photometric="rgb", tile=(16, 16))
    files["tiles 2**31 - 1 wide (OverflowError)"] = _set_tiff_field(buf.getvalue(), 322, value=2**31 - 1)
    buf = io.BytesIO()
    inks = np.arange(9 * 13 * 4, dtype=np.uint16).reshape(9, 13, 4) * 97
    tifffile.imwrite(buf, inks, photometric="separated")
    files["16-bit CMYK without RowsPerStrip values (TypeError)"] = _set_tiff_field(
        buf.getvalue(), 278, count=0)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "QOI")
    files["QOI cut short (IndexError)"] = buf.getvalue()[:30]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "AVIF")
    files["AVIF without its image item (RuntimeError)"] = buf.getvalue().replace(b"pitm", b"pitX", 1)
    return files


@pytest.mark.parametrize("what", list(_damaged_files()))
def test_files_the_decoders_trip_on_with_other_exceptions_are_our_errors(what):
    with pytest.raises(ImageReadError) as info:
        load_image(_damaged_files()[what], pages=True)
    assert info.value.reason in ("truncated", "not_an_image"), info.value


def test_a_plain_ppm_of_more_than_8_bits_without_a_final_newline_is_read():
    samples = np.arange(2 * 3 * 3).reshape(2, 3, 3) * 200
    body = " ".join(map(str, samples.ravel())).encode()
    image = load_image(b"P3\n3 2\n4095\n" + body)
    assert image.pixels.dtype == np.uint16 and image.info["maxval"] == 4095
    np.testing.assert_array_equal(image.pixels, np.rint(samples * 65535 / 4095).astype(np.uint16))


@pytest.mark.parametrize("kind", ["cmyk", "associated alpha"])
def test_16_bit_cmyk_and_associated_alpha_convert_a_block_of_rows_at_a_time(kind):
    import tracemalloc

    import tifffile

    rng = np.random.default_rng(4)
    height, width = 12 * images._BLOCK_ROWS + 17, 400  # blocks, and a short one last
    samples = rng.integers(0, 65536, (height, width, 4), dtype=np.uint16)
    buf = io.BytesIO()
    if kind == "cmyk":
        tifffile.imwrite(buf, samples, photometric="separated")
        paper = 65535 - samples.astype(np.uint64)
        expected = ((paper[..., :3] * paper[..., 3:] + 32767) // 65535).astype(np.uint16)
    else:
        samples[..., :3] = np.minimum(samples[..., :3], samples[..., 3:])  # colour <= alpha, as stored
        tifffile.imwrite(buf, samples, photometric="rgb", extrasamples=["assocalpha"])
        a = samples[..., 3:].astype(np.uint64)
        colour = (samples[..., :3].astype(np.uint64) * 65535 + a // 2) // np.maximum(a, 1)
        expected = np.where(a > 0, np.minimum(colour, 65535), 0).astype(np.uint16)
    data = buf.getvalue()
    tracemalloc.start()
    try:
        image = load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(image.pixels, expected)
    # The file's bytes, its samples, the image, and one block's 32-bit intermediates (2.2 times
    # the samples measured); a whole 32-bit copy of the samples at once made it 6.3 times.
    assert peak < 3 * samples.nbytes, f"peak {peak / 1e6:.1f} MB for {samples.nbytes / 1e6:.1f} MB of samples"
