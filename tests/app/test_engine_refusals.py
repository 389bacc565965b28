"""What the engine refuses before it denoises anything: tiles too small to hide their seams, a
model that does not map images to images, a card that contradicts its model, and a loaded
model asked for another precision."""

import keras
import numpy as np
import pytest

from app.engine import as_denoiser, denoise, tiling
from models.conv_dae import ConvDAE


def test_tiles_under_twice_the_overlap_are_refused_not_left_with_seams():
    # The default overlap is 16 strides: 64 px at stride 4, 128 px at stride 8.
    assert tiling(4, 128, None) == (128, 64) and tiling(8, 300, None) == (296, 128)
    for stride, tile, least in ((4, 127, 128), (4, 32, 128), (8, 255, 256)):
        with pytest.raises(ValueError, match=rf"tile must be at least {least} px, twice the "
                                             rf"{least // 2}-px overlap .* got {tile}$"):
            tiling(stride, tile, None)
    assert tiling(4, 32, 16) == (32, 16)  # a smaller overlap, asked for, allows smaller tiles
    with pytest.raises(ValueError, match="at least 40 px, twice the 20-px overlap"):
        tiling(4, 32, 17)  # overlaps round up to the stride
    # Through denoise as well, before any model call.
    model = ConvDAE(channels=1, widths=(4, 8), bottleneck=4)
    with pytest.raises(ValueError, match="tile must be at least 128 px"):
        denoise(np.zeros((200, 200), np.uint8), model, tile=64)


def test_a_model_that_does_not_map_images_to_images_is_refused():
    image = keras.Input((None, None, 1))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    classifier = keras.Model(image, keras.layers.Dense(3)(features), name="clf")
    with pytest.raises(ValueError, match=r"model clf is not a denoiser: it maps images of 1 "
                                         r"channel\(s\) to \(None, 3\)"):
        as_denoiser(classifier)
    grey_to_rgb = keras.Model(image, keras.layers.Conv2D(3, 3, padding="same")(image), name="g2c")
    with pytest.raises(ValueError, match=r"model g2c is not a denoiser"):
        as_denoiser(grey_to_rgb)
    same = keras.Model(image, keras.layers.Conv2D(1, 3, padding="same")(image), name="same")
    assert as_denoiser(same).stride == 1  # a plain image-to-image model is taken


def test_the_card_cannot_change_the_models_stride():
    model = ConvDAE(channels=1, widths=(4, 8), bottleneck=4)  # stride 4
    assert as_denoiser(model, card={"channels": 1, "stride": 4}).stride == 4
    with pytest.raises(ValueError, match="card says stride 8 but the model's is 4"):
        as_denoiser(model, card={"channels": 1, "stride": 8})


def test_a_loaded_model_keeps_its_precision_or_refuses_another():
    fast = as_denoiser("fashion-mnist", precision="bfloat16")
    assert as_denoiser(fast) is fast and as_denoiser(fast, precision="bfloat16") is fast
    assert as_denoiser(fast, precision="auto") is fast
    with pytest.raises(ValueError, match="loaded to compute in bfloat16, not float32"):
        as_denoiser(fast, precision="float32")
    # denoise takes it as it is: the output is the bfloat16 model's.
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    slow = as_denoiser("fashion-mnist")
    out_fast, out_slow = denoise(pixels, fast).output, denoise(pixels, slow).output
    differ = np.abs(out_fast.astype(int) - out_slow.astype(int))
    assert differ.any() and differ.max() <= 3  # a few 8-bit steps at most


def test_an_unknown_precision_is_named_as_such_for_a_loaded_model_too():
    den = as_denoiser("fashion-mnist")
    for model in ("fashion-mnist", den):
        with pytest.raises(ValueError, match="float16") as err:
            as_denoiser(model, precision="float16")
        assert "load it again" not in str(err.value)
