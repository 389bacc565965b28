import keras
import numpy as np
import pytest

from models.conv_dae import ConvDAE, check_arguments, negative_log_likelihood, widen
from tests.helpers import run_model_serialization_test


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("skips,residual,distribution", [
    (True, True, "gaussian"), (True, False, "bernoulli"), (False, False, "gaussian")])
def test_round_trip_and_shapes(tmp_path, channels, skips, residual, distribution):
    model = ConvDAE(channels=channels, widths=(8, 16), bottleneck=12, skips=skips,
                    residual=residual, distribution=distribution, name="dae")
    x = np.random.default_rng(0).random((2, 16, 24, channels), dtype=np.float32)
    reloaded = run_model_serialization_test(model, x, tmp_path)
    out = np.asarray(reloaded(x))
    assert out.shape == x.shape
    assert np.asarray(reloaded.encode(x)).shape == (2, 4, 6, 12)
    if distribution == "bernoulli":
        assert out.min() >= 0.0 and out.max() <= 1.0


class _ForgetsResidual(ConvDAE):
    """A ConvDAE whose config leaves out ``residual``: from_config silently builds the default."""

    def get_config(self):
        config = super().get_config()
        del config["residual"]
        return config


def test_round_trip_compares_outputs_not_just_configs(tmp_path):
    # Same config and same weight shapes either way (a 3x3 conv to the output), so only the
    # outputs of the model rebuilt from its config tell that it adds x̃ back and the original doesn't.
    model = _ForgetsResidual(channels=1, widths=(4,), bottleneck=4, residual=False)
    x = np.random.default_rng(2).random((2, 8, 8, 1), dtype=np.float32)
    with pytest.raises(AssertionError, match="from_config -> set_weights changed outputs"):
        run_model_serialization_test(model, x, tmp_path)


def test_encoder_and_decoder_are_named_models():
    model = ConvDAE(channels=1, widths=(8, 16), bottleneck=4)
    assert model.encoder.name == "encoder" and model.decoder.name == "decoder"
    assert model.stride == 4
    # Fully convolutional: any size that is a multiple of the stride goes through.
    assert model(np.zeros((1, 36, 20, 1), np.float32)).shape == (1, 36, 20, 1)


def test_residual_model_starts_near_identity_scale():
    # A residual DAE adds a correction to its input; with zero correction weights it is exactly
    # the identity, which is what makes residual learning easy to train.
    model = ConvDAE(channels=1, widths=(4,), bottleneck=4, residual=True)
    layer = model.decoder.get_layer("correction")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.random.default_rng(1).random((1, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), x, atol=1e-7)


@pytest.mark.parametrize("kwargs,message", [
    ({"channels": 2}, "channels must be 1 or 3, got 2"),
    ({"distribution": "laplace"}, "distribution must be one of"),
    ({"residual": True, "distribution": "bernoulli"}, "residual=True needs skips=True and a gaussian"),
    ({"widths": ()}, "widths must be a non-empty list"),
    ({"widths": (0,)}, "widths must be a non-empty list of positive ints, got \\(0,\\)"),
    ({"bottleneck": 0}, "bottleneck must be a positive int, got 0"),
])
def test_bad_arguments_say_what_was_received(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvDAE(**kwargs)
    with pytest.raises(ValueError, match=message):  # the same check, with nothing built
        check_arguments(**kwargs)


def test_loss_matches_decoder_distribution():
    assert ConvDAE(distribution="gaussian").loss_function().name == "gaussian_nll"
    assert ConvDAE(residual=False, distribution="bernoulli").loss_function().name == "bernoulli_nll"


def test_negative_log_likelihood_values():
    x, r = np.array([[0.0, 1.0, 1.0]]), np.array([[0.5, 0.5, 1.0]])
    # Gaussian with fixed variance: mean squared error.
    assert float(negative_log_likelihood("gaussian")(x, r)) == pytest.approx((0.25 + 0.25) / 3)
    # Bernoulli: -mean(x log r + (1 - x) log(1 - r)), up to Keras' clipping of log 0.
    assert float(negative_log_likelihood("bernoulli")(x, r)) == pytest.approx(2 * np.log(2) / 3, rel=1e-5)
    with pytest.raises(ValueError, match=r"distribution must be one of \('gaussian', 'bernoulli'\), "
                                         r"got 'laplace'"):
        negative_log_likelihood("laplace")


def test_per_image_variance_loss_is_the_mean_log_error_per_image_and_tracks_mean_psnr():
    import keras

    x = np.zeros((2, 4, 4, 1), np.float32)
    r = x.copy()
    r[0] += 0.1    # squared error 0.01 on every pixel: 20 dB
    r[1, 0] += 0.5  # 0.25 on one row of four: 0.0625, 12.04 dB
    loss = negative_log_likelihood("gaussian", "per_image")
    assert loss.name == "gaussian_nll_per_image"
    expected = 0.5 * (np.log(0.01 + 1e-6) + np.log(0.0625 + 1e-6)) / 2
    assert float(loss(x, r)) == pytest.approx(expected, rel=1e-5)
    psnr = np.mean([10 * np.log10(1 / 0.01), 10 * np.log10(1 / 0.0625)])
    assert float(loss(x, r)) == pytest.approx(-np.log(10) / 20 * psnr, rel=1e-3)
    # Squared error is dominated by the worse image; the per-image loss weighs both alike:
    # halving the first image's error moves it as much as halving the second's.
    halved = [r.copy(), r.copy()]
    halved[0][0] = x[0] + 0.1 / np.sqrt(2)
    halved[1][1] = x[1] + (r[1] - x[1]) / np.sqrt(2)
    drops = [float(loss(x, r)) - float(loss(x, h)) for h in halved]
    assert drops[0] == pytest.approx(drops[1], rel=1e-3)
    assert drops[0] == pytest.approx(np.log(2) / 4, rel=1e-3)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert float(again(x, r)) == pytest.approx(float(loss(x, r)))
    assert ConvDAE().loss_function("per_image").name == "gaussian_nll_per_image"


@pytest.mark.parametrize("distribution, variance, message", [
    ("gaussian", "laplace", r"variance must be one of \('fixed', 'per_image'\), got 'laplace'"),
    ("bernoulli", "per_image", "a bernoulli decoder has no variance to fit"),
])
def test_negative_log_likelihood_refuses_a_variance_it_cannot_fit(distribution, variance, message):
    with pytest.raises(ValueError, match=message):
        negative_log_likelihood(distribution, variance)


def test_with_precision_keeps_the_weights_and_refuses_what_it_cannot_change():
    import keras

    from models.registry import with_precision

    model = ConvDAE(channels=3, widths=(8, 16), bottleneck=12, name="dae")
    x = np.random.default_rng(1).random((2, 16, 24, 3), dtype=np.float32)
    fast = with_precision(model, "bfloat16")
    assert with_precision(model, "float32") is model
    assert fast.get_layer("encoder").get_layer("down0_conv0").compute_dtype == "bfloat16"
    assert fast.get_layer("encoder").get_layer("down0_conv0").kernel.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    for a, b in zip(model.get_weights(), fast.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    exact, quick = np.asarray(model(x)), np.asarray(fast(x))
    assert quick.dtype == np.float32 and not np.array_equal(exact, quick)
    np.testing.assert_allclose(quick, exact, atol=0.05)
    functional = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="cannot compute in bfloat16"):
        with_precision(functional, "bfloat16")
    with pytest.raises(ValueError, match="precision must be one of"):
        with_precision(model, "float16")


def test_auto_precision_is_bfloat16_only_where_the_machine_has_bfloat16_units(monkeypatch):
    import keras

    from models import registry

    model = ConvDAE(channels=1, widths=(8,), bottleneck=8, name="dae")
    functional = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    monkeypatch.setattr(registry, "native_bfloat16", lambda: True)
    fast = registry.with_precision(model, "auto")
    assert registry.computes_in(fast) == "bfloat16" and registry.computes_in(model) == "float32"
    assert registry.with_precision(functional, "auto") is functional  # cannot: stays float32, no error
    monkeypatch.setattr(registry, "native_bfloat16", lambda: False)
    assert registry.with_precision(model, "auto") is model


@pytest.mark.parametrize("gpus, flags, backend, native", [
    ([], "fpu sse avx2 avx512f", "tensorflow", False),
    ([], "fpu avx512f avx512_bf16", "tensorflow", True),
    ([], "fpu amx_bf16 amx_tile", "tensorflow", True),
    ([], "fpu avx512f avx512_bf16", "jax", False),  # XLA:CPU gained nothing from bfloat16
    (["7.5"], "avx512_bf16", "tensorflow", False),  # a T4 emulates bfloat16, whatever the CPU has
    (["8.0", "9.0"], "", "jax", True),
    (["9.0", "7.0"], "", "tensorflow", False),
    (["gfx90a"], "avx512_bf16", "jax", False),  # ROCm names its GPUs, no compute capability
])
def test_native_bfloat16_reads_the_gpus_then_the_cpu_flags(tmp_path, monkeypatch, gpus, flags, backend,
                                                           native):
    import keras

    from models import registry

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    read = registry.cpu_flags
    assert read(cpuinfo) == set(flags.split())
    assert read(tmp_path / "no-such-file") == set()  # not Linux: no flags, so float32
    monkeypatch.setattr(registry, "gpu_devices", lambda: [("GPU", registry._capability(c)) for c in gpus])
    monkeypatch.setattr(registry, "cpu_flags", lambda: read(cpuinfo))
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    registry.native_bfloat16.cache_clear()
    try:
        assert registry.native_bfloat16() is native
    finally:
        registry.native_bfloat16.cache_clear()


def test_gpu_compute_capabilities_parse_or_count_as_none(monkeypatch):
    import tensorflow as tf

    from models.registry import _capability, gpu_devices

    assert _capability("8.6") == (8, 6) and _capability("12.0") == (12, 0)
    assert _capability("gfx90a") == _capability("") == _capability(None) == (0, 0)
    # What TensorFlow reports of a CUDA GPU and of a ROCm one (a gfx name, no capability), here
    # on any machine.
    cuda, rocm = (tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in (0, 1))
    details = {cuda: {"device_name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)},
               rocm: {"device_name": "AMD Instinct MI210"}}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [cuda, rocm])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", details.__getitem__)
    assert gpu_devices() == [("NVIDIA H100 80GB HBM3", (9, 0)), ("AMD Instinct MI210", (0, 0))]


def _tensorflow_gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


@pytest.mark.skipif(not _tensorflow_gpus(), reason="no GPU")
def test_a_real_gpu_reports_its_name_and_capability():
    import tensorflow as tf

    from models.registry import gpu_devices

    found = gpu_devices()
    assert len(found) == len(_tensorflow_gpus()), found
    for name, (major, minor) in found:
        assert name and not name.startswith("/physical_device"), found  # the model, not TF's id
        if tf.test.is_built_with_cuda():  # a ROCm build reports a gfx name: (0, 0)
            assert major >= 3 and minor >= 0, found  # no CUDA GPU TensorFlow runs on is older


def _trained_like(model, seed=0):
    """Random non-zero weights everywhere (biases too), as a trained model has."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("channels,skips,residual,distribution", [
    (1, True, True, "gaussian"), (3, True, False, "bernoulli"), (1, False, False, "gaussian")])
def test_widen_computes_exactly_what_the_narrow_model_did(channels, skips, residual, distribution):
    kwargs = dict(channels=channels, skips=skips, residual=residual, distribution=distribution)
    narrow = _trained_like(ConvDAE(widths=(4, 6), bottleneck=5, **kwargs))
    wide = widen(narrow, ConvDAE(widths=(8, 6), bottleneck=9, **kwargs))
    x = np.random.default_rng(1).random((3, 16, 20, channels), dtype=np.float32)
    assert np.abs(np.asarray(wide(x)) - np.asarray(narrow(x))).max() < 1e-5
    assert wide.count_params() > narrow.count_params()
    # The new filters are live: they see the input, and training reaches them.
    code = np.asarray(wide.encode(x))
    assert np.abs(code[..., 5:]).max() > 0
    assert np.abs(code[..., :5] - np.asarray(narrow.encode(x))).max() < 1e-5
    wide.compile(optimizer=keras.optimizers.SGD(0.1), loss=wide.loss_function())
    wide.train_on_batch(x, x)
    assert np.abs(np.asarray(wide(x)) - np.asarray(narrow(x))).max() > 1e-4


@pytest.mark.parametrize("target,message", [
    (dict(widths=(2, 6), bottleneck=5), "a model can only be widened"),
    (dict(widths=(4, 6, 8), bottleneck=5), "depth 2 vs 3 levels"),
    (dict(widths=(4, 6), bottleneck=5, channels=3), "channels 1 vs 3"),
    (dict(widths=(4, 6), bottleneck=5, residual=False), "residual True vs False"),
])
def test_widen_refuses_what_is_not_a_widening(target, message):
    narrow = ConvDAE(widths=(4, 6), bottleneck=5)
    with pytest.raises(ValueError, match=message):
        widen(narrow, ConvDAE(**target))


def test_a_model_built_under_mixed_precision_adds_back_the_exact_input(tmp_path):
    # The composite itself must not cast x̃ to bfloat16: its residual path would add back a
    # rounded copy (up to 0.002 off in [0, 1]), also after saving and loading in float32.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = ConvDAE(widths=(4,), bottleneck=4)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.encoder.get_layer("down0_conv0").compute_dtype == "bfloat16"
    correction = model.decoder.get_layer("correction")
    correction.set_weights([np.zeros_like(w) for w in correction.get_weights()])
    x = np.random.default_rng(3).random((2, 8, 8, 1), dtype=np.float32)
    assert np.array_equal(np.asarray(model(x)), x)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.dtype_policy.name == "float32"
    assert np.array_equal(np.asarray(reloaded(x)), x)
