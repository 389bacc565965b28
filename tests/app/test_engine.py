"""The denoising engine: PSNR gained on real Fashion-MNIST images, tiled == untiled, exact
blending, bounded model calls, channel policies, the card's input range, strength/residual."""

from __future__ import annotations

import numpy as np
import pytest

from app import engine
from app.engine import (
    Denoiser,
    as_denoiser,
    denoise,
    denoise_many,
    tile_shape,
    tile_side,
    tile_starts,
    tile_weights,
)
from data.corruption import corrupt
from data.datasets import load_named
from data.images import from_model, match_channels, to_model
from data.metrics import psnr
from tests.corpus import clean_colour, clean_mosaic
from tests.helpers import fashion_mnist_available, needs_fashion_mnist

MODEL = "fashion-mnist"  # the bundled model: its tests need no dataset


class Recorder:
    """A stand-in network: multiplies by ``gain`` and records every batch it is given."""

    def __init__(self, channels=1, gain=1.0):
        self.channels, self.gain, self.calls = channels, gain, []

    def predict_on_batch(self, x):
        self.calls.append((x.shape, float(x.min()), float(x.max())))
        return x * self.gain


def recorder_denoiser(channels=1, stride=4, value_range=(0.0, 1.0), gain=1.0):
    rec = Recorder(channels, gain)
    return Denoiser(rec, "recorder", channels, stride, value_range), rec


@pytest.fixture(scope="module")
def fashion():
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST files missing (make setup)")
    return load_named("fashion_mnist", download=False).x_test


@pytest.fixture(scope="module")
def big_grey(fashion):
    """A 150 x 230 mosaic of Fashion-MNIST test images with Gaussian noise, as float."""
    clean = np.concatenate([np.concatenate([clean_mosaic(3 * r + c) for c in range(3)], axis=1)
                            for r in range(3)], axis=0)[:150, :230]
    return corrupt(to_model(clean), "gaussian", 0.25, seed=1)


def test_psnr_gain_on_real_fashion_mnist(fashion):
    clean = to_model(fashion[:32])
    noisy = from_model(corrupt(clean, "gaussian", 0.3, seed=0), np.uint8)
    results = denoise_many(list(noisy), MODEL)
    out = to_model(np.stack([r.output for r in results]))
    gain = psnr(clean, out).mean() - psnr(clean, to_model(noisy)).mean()
    assert gain > 2.0, f"denoising gained only {gain:.2f} dB"
    # Batched together or one by one: the same result.
    alone = denoise(noisy[5], MODEL).output
    assert np.abs(alone.astype(int) - results[5].output.astype(int)).max() <= 1
    assert all(r.output.dtype == np.uint8 and r.output.shape == (28, 28, 1) for r in results)


def test_tiled_equals_untiled(big_grey):
    whole = denoise(big_grey, MODEL, tile=None)
    tiled = denoise(big_grey, MODEL, tile=128)  # the smallest tile at the default 64-px overlap
    assert whole.tiles == 1 and tiled.tiles >= 4
    np.testing.assert_allclose(tiled.output, whole.output, atol=1e-3)
    assert np.abs(tiled.output - whole.output).mean() < 1e-5


def test_identity_network_gives_back_the_input_exactly():
    """Blending weights sum to one everywhere: tiles of an identity network reassemble the image."""
    den, rec = recorder_denoiser()
    pixels = np.random.default_rng(0).integers(0, 65536, size=(203, 157), dtype=np.uint16)
    out = denoise(pixels, den, tile=48, overlap=16, batch_pixels=48 * 48 * 3).output
    np.testing.assert_array_equal(out, pixels)
    shapes = [shape for shape, _, _ in rec.calls]
    assert all(s[1:] == (48, 48, 1) for s in shapes)  # every call is a batch of tiles ...
    assert max(s[0] for s in shapes) == 3  # ... of at most batch_pixels


def test_tile_weights_crossfade_and_cover():
    starts = tile_starts(300, 64, 16)
    assert starts[0] == 0 and starts[-1] == 300 - 64 and all(s % 4 == 0 for s in starts)
    weights = tile_weights(starts, 64, 16)
    total = np.zeros(300)
    for s, w in zip(starts, weights, strict=True):
        total[s:s + 64] += w
    assert total.min() > 0.0
    np.testing.assert_allclose(total[: starts[-2] + 64], 1.0, atol=1e-6)  # exact-overlap part
    assert weights[1][0] == 0.0 and weights[1][32] == 1.0  # zero at interior edges, one inside


def test_tiles_are_as_few_as_the_side_allows_and_of_one_size():
    tile, overlap, stride = 512, 128, 8
    for length in range(8, 4000, 8):
        side = tile_side(length, tile, overlap, stride)
        starts = tile_starts(length, side, overlap)
        assert side <= tile and (side == length or side % stride == 0)
        assert starts[0] == 0 and starts[-1] + side == length and all(s % stride == 0 for s in starts)
        # neighbours share at least `overlap` pixels
        assert all(b - a <= side - overlap for a, b in zip(starts, starts[1:], strict=False))
        fewest = 1 if length <= tile else -(-(length - overlap) // (tile - overlap))
        assert len(starts) == fewest, length
    # A 1000-pixel side: three 424-pixel tiles, where full 512-pixel tiles with the last one
    # shifted back took three of 512; the other side then fits two 568-pixel tiles in the same
    # area. The model sees 1.4 instead of 9 x 512² = 2.4 megapixels.
    assert tile_side(1000, tile, overlap, stride) == 424
    assert tile_shape(1000, 1000, tile, overlap, stride) == (424, 568)
    assert engine._plane_work((1000, 1000, 3), tile, overlap, stride) == 3 * 2 * 424 * 568
    # A side just over one tile is cut in two halves, not one tile and a near copy of it.
    assert tile_side(1032, 1024, 128, 8) == 584
    # A tile may be longer than `tile` along one side while it holds at most tile² pixels:
    # a 1-megapixel photo goes through in one piece, upright or on its side.
    assert tile_shape(792, 1272, 1024, 128, 8) == (792, 1272)
    assert tile_shape(1272, 792, 1024, 128, 8) == (1272, 792)
    for height, width in [(6200, 3880), (3000, 1100), (200, 9000), (1100, 1300), (64, 64)]:
        th, tw = tile_shape(height, width, 1024, 128, 8)
        assert th * tw <= 1024 * 1024 and th <= height and tw <= width
        assert tile_starts(height, th, 128)[-1] + th == height
        assert tile_starts(width, tw, 128)[-1] + tw == width


def test_bfloat16_computes_in_bfloat16_and_scores_as_float32(fashion):
    # 64 images: measured 0.0006 dB apart (0.0008 on 300) and at most 0.011 per pixel (0.019)
    clean = to_model(fashion[:64])
    noisy = corrupt(clean, "gaussian", 0.2, seed=4)
    fast = as_denoiser(MODEL, precision="bfloat16")
    assert fast is as_denoiser(MODEL, precision="bfloat16")  # loaded once
    assert (fast.precision, as_denoiser(MODEL).precision) == ("bfloat16", "float32")
    layers = fast.model.get_layer("encoder").layers
    assert {layer.compute_dtype for layer in layers if layer.name.endswith("conv0")} == {"bfloat16"}
    assert fast.model.get_layer("decoder").get_layer("reconstruction").compute_dtype == "float32"
    exact = to_model(np.stack([r.output for r in denoise_many(list(noisy), MODEL)]))
    quick = to_model(np.stack([r.output for r in denoise_many(list(noisy), fast)]))
    assert not np.array_equal(exact, quick)  # it really computed otherwise ...
    assert abs(psnr(clean, quick).mean() - psnr(clean, exact).mean()) < 0.05  # ... to the same quality
    assert np.abs(quick - exact).max() < 0.05
    with pytest.raises(ValueError, match="precision must be one of"):
        as_denoiser(MODEL, precision="float16")


def test_model_calls_stay_bounded_on_a_large_image():
    den, rec = recorder_denoiser(channels=3)
    pixels = np.zeros((1100, 1300, 3), np.uint8)
    denoise(pixels, den, tile=256, batch_pixels=1 << 18)
    assert max(np.prod(shape[:3]) for shape, _, _ in rec.calls) <= 1 << 18
    assert sum(np.prod(shape[:3]) for shape, _, _ in rec.calls) < 2 * 1100 * 1300


def test_output_keeps_shape_and_dtype(big_grey):
    for pixels in (from_model(big_grey[..., 0], np.uint8)[:50, :61],
                   from_model(big_grey, np.uint16)[:33, :29],
                   big_grey[:21, :30].astype(np.float64)):
        result = denoise(pixels, MODEL)
        assert result.output.shape == pixels.shape and result.output.dtype == pixels.dtype
        assert result.residual.shape == pixels.shape and result.residual.dtype == np.float32


@needs_fashion_mnist
def test_grey_model_on_colour_per_channel_and_luminance():
    colour = from_model(corrupt(to_model(clean_colour(0)), "gaussian", 0.2, seed=2), np.uint8)
    per_channel = denoise(colour, MODEL, colour="per_channel").output
    for c in range(3):  # each channel exactly as the grey model alone would do it
        np.testing.assert_array_equal(per_channel[..., c:c + 1], denoise(colour[..., c:c + 1], MODEL).output)
    luminance = denoise(colour, MODEL, colour="luminance").output
    x, y = to_model(colour), to_model(luminance)
    # Only the luma changes: the colour differences stay (up to rounding and clipping).
    unclipped = (y > 0.01).all(-1) & (y < 0.99).all(-1)
    diff_in, diff_out = x[..., 0] - x[..., 1], y[..., 0] - y[..., 1]
    assert np.abs(diff_in - diff_out)[unclipped].max() <= 1.5 / 255
    expected_luma = to_model(denoise(match_channels(x, 1), MODEL).output)
    assert np.abs(match_channels(y, 1) - expected_luma)[unclipped].mean() < 2 / 255


@needs_fashion_mnist
def test_colour_model_on_grey_image(tmp_path):
    from models.conv_dae import ConvDAE

    model = ConvDAE(channels=3, widths=(4, 8), bottleneck=8)
    path = tmp_path / "colour.keras"
    model.save(path)
    grey = clean_mosaic(1)  # (55, 81) uint8
    out = denoise(grey, path)
    assert out.output.shape == grey.shape and out.output.dtype == np.uint8
    # The same as denoising the grey repeated in R, G and B, then taking the luma.
    rgb = denoise(np.repeat(grey[..., None], 3, axis=-1), path, colour="per_channel").output
    expected = from_model(match_channels(to_model(rgb), 1), np.uint8)[..., 0]
    assert np.abs(out.output.astype(int) - expected.astype(int)).max() <= 1
    colour = denoise(clean_colour(2), path)
    assert colour.output.shape == (55, 81, 3)


def test_input_range_comes_from_the_card():
    den, rec = recorder_denoiser(value_range=(-1.0, 1.0))
    pixels = np.array([[0, 255], [128, 64]], np.uint8)
    out = denoise(pixels, den).output
    np.testing.assert_array_equal(out, pixels)
    assert rec.calls[0][1] == -1.0 and rec.calls[0][2] == 1.0
    card = {"channels": 1, "stride": 8, "input": {"range": [-0.5, 0.5]}}
    loaded = as_denoiser(Recorder(), card=card)
    assert (loaded.channels, loaded.stride, loaded.value_range) == (1, 8, (-0.5, 0.5))
    with pytest.raises(ValueError, match="card says 3 channels"):
        as_denoiser(Recorder(channels=1), card={"channels": 3})
    bundled = as_denoiser(MODEL)
    assert bundled.value_range == (0.0, 1.0) and bundled.stride == bundled.model.stride


def test_strength_blends_and_residual_is_what_was_removed(big_grey):
    den, _ = recorder_denoiser(gain=0.5)  # "denoises" by halving
    x = big_grey[:40, :40]
    assert np.array_equal(denoise(x, den, strength=0.0).output, x)
    half = denoise(x, den, strength=0.5)
    np.testing.assert_allclose(half.output, 0.75 * x, atol=1e-6)
    np.testing.assert_allclose(half.residual, x - half.output, atol=1e-6)


def test_progress_is_reported_up_to_one(big_grey):
    seen = []
    denoise(big_grey, MODEL, tile=128, progress=seen.append)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 1.0


class Ramp(Recorder):
    """A network that sees orientation: adds a left-to-right ramp from 0 to 1 to its input."""

    def predict_on_batch(self, x):
        super().predict_on_batch(x)
        return x + np.linspace(0.0, 1.0, x.shape[2], dtype=np.float32)[None, None, :, None]


@pytest.mark.parametrize("ensemble", [2, 8])
def test_self_ensemble_turns_every_output_back_before_averaging(ensemble):
    """A ramp and its mirror image average to 0.5 everywhere, whatever the turn: the ensemble
    adds exactly 0.5 only if every copy went in turned and came out turned back."""
    rec = Ramp()
    den = Denoiser(rec, "ramp", 1, 4, max_ensemble=8).with_ensemble(ensemble)
    pixels = np.random.default_rng(0).uniform(0.0, 0.4, (40, 72)).astype(np.float32)
    np.testing.assert_allclose(denoise(pixels, den).output, pixels + 0.5, atol=1e-6)
    shapes = {shape[1:3] for shape, _, _ in rec.calls}
    assert len(rec.calls) == ensemble and shapes == ({(40, 72), (72, 40)} if ensemble == 8 else {(40, 72)})
    plain = denoise(pixels, den.with_ensemble(1)).output
    np.testing.assert_allclose(plain, np.clip(pixels + np.linspace(0, 1, 72)[None, :], 0, 1), atol=1e-6)


def test_self_ensemble_cleans_a_real_photo_further():
    from skimage import data as samples

    clean = to_model(samples.astronaut()[100:228, 180:308])
    noisy = corrupt(clean, "gaussian", 25 / 255, seed=3)
    scores = {n: psnr(clean[None], denoise(noisy, as_denoiser("photo", ensemble=n)).output[None])[0]
              for n in (1, 8)}
    assert scores[8] > scores[1] + 0.05, scores


def test_self_ensemble_only_for_models_trained_on_turned_images():
    with pytest.raises(ValueError, match="not trained on flipped and rotated images"):
        as_denoiser(MODEL, ensemble=8)
    for wrong in (3, 2.5, "8", True):
        with pytest.raises(ValueError, match=r"ensemble must be one of \(1, 2, 8\), got "):
            as_denoiser("photo", ensemble=wrong)
    assert as_denoiser(MODEL).max_ensemble == 1 and as_denoiser("photo").max_ensemble == 8
    # A run folder's card carries its config: photo patches (folder:) are flipped and turned.
    assert as_denoiser(Recorder(), card={"config": {"dataset": "folder:photos"}}).max_ensemble == 8
    assert as_denoiser(Recorder(), card={"config": {"dataset": "mnist"}}).max_ensemble == 1


@pytest.mark.parametrize("pixels, kwargs, words", [
    (np.zeros((8, 8, 4), np.uint8), {}, "alpha split off"),
    (np.zeros((8, 8), bool), {}, "uint8, uint16 or float"),
    # Floats are [0, 1]: a 0..255 float image would be clipped to white, not denoised.
    (np.full((8, 8), 128.0, np.float32), {}, r"float pixels must be in \[0, 1\], got values from 128 to 128"),
    (np.array([[0.0, -0.25], [0.5, 1.0]]), {}, r"got values from -0.25 to 1"),
    (np.array([[0.5, np.nan]], np.float32), {}, r"got values from nan to nan"),
    (np.zeros((0, 8), np.uint8), {}, "at least one row"),
    (np.zeros((8, 8), np.uint8), {"strength": 1.5}, "strength must be in"),
    (np.zeros((8, 8), np.uint8), {"colour": "hsv"}, "colour must be one of"),
    (np.zeros((8, 8), np.uint8), {"tile": 2}, "at least the model's stride"),
])
def test_bad_arguments_say_what_was_received(pixels, kwargs, words):
    den, _ = recorder_denoiser()
    with pytest.raises(ValueError, match=words):
        denoise(pixels, den, **kwargs)


def test_engine_defaults_fit_the_model():
    den = as_denoiser(MODEL)
    tile, overlap = engine.tiling(den.stride, engine.DEFAULT_TILE, None)
    assert tile % den.stride == 0 and overlap % den.stride == 0 and 0 < overlap < tile // 2 + 1
