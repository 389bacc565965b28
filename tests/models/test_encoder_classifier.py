import keras
import numpy as np
import pytest

from models.conv_dae import ConvDAE
from models.encoder_classifier import EncoderClassifier, code_encoder, feature_extractor
from tests.helpers import run_model_serialization_test


def tiny_dae(skips=True, channels=1):
    keras.utils.set_random_seed(0)
    return ConvDAE(channels=channels, widths=(4, 8), bottleneck=6, skips=skips, residual=skips)


def images(n=3, size=8, channels=1, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


@pytest.mark.parametrize("skips", [True, False])
@pytest.mark.parametrize("pooling,image_size", [("avg", None), ("max", None), ("flatten", (8, 8))])
def test_round_trip(tmp_path, skips, pooling, image_size):
    model = EncoderClassifier(tiny_dae(skips), num_classes=4, pooling=pooling, dropout=0.2,
                              freeze_encoder=skips, image_size=image_size, name="clf")
    model.adapt(images(8, seed=1))  # non-trivial standardisation must survive the round trip
    reloaded = run_model_serialization_test(model, images(), tmp_path)
    assert reloaded.freeze_encoder == skips and reloaded.pooling == pooling
    probs = np.asarray(reloaded(images()))
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("skips", [True, False])
def test_features_are_the_pooled_code_only(skips):
    dae = tiny_dae(skips)
    x = images()
    code = np.asarray(dae.encode(x))  # (3, 2, 2, 6): the code, not the skip tensors
    np.testing.assert_allclose(np.asarray(feature_extractor(dae, "avg")(x)), code.mean(axis=(1, 2)),
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(feature_extractor(dae, "max")(x)), code.max(axis=(1, 2)),
                               atol=1e-6)
    flat = feature_extractor(dae, "flatten", image_size=(8, 8))(x)
    np.testing.assert_allclose(np.asarray(flat), code.reshape(3, -1), atol=1e-6)


def test_classifier_never_touches_the_pretrained_model():
    dae = tiny_dae()
    before = [w.copy() for w in dae.encoder.get_weights()]
    flags = [layer.trainable for layer in dae.encoder.layers]
    clf = EncoderClassifier(dae, 4, freeze_encoder=True)
    # A copy: same trained weights, distinct variables; the DAE's flags are as they were.
    for mine, theirs in zip(clf.encoder.weights, code_encoder(dae).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    dae_ids = {id(v) for v in dae.weights}
    assert not dae_ids & {id(v) for v in clf.weights}
    assert [layer.trainable for layer in dae.encoder.layers] == flags
    # Fine-tuning everything changes the classifier's encoder, never the DAE's.
    unfrozen = clf.with_frozen_encoder(False)
    unfrozen.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    unfrozen.fit(images(16), np.arange(16) % 4, epochs=2, verbose=0)
    for w, b in zip(dae.encoder.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)
    assert any(not np.allclose(a, b) for a, b in
               zip(unfrozen.encoder.get_weights(), clf.encoder.get_weights(), strict=True))


def test_frozen_encoder_trains_only_the_head_and_unfreezing_is_a_new_model():
    clf = EncoderClassifier(tiny_dae(), 4, freeze_encoder=True)
    assert {w.path.split("/")[0] for w in clf.trainable_weights} == {"predictions"}
    unfrozen = clf.with_frozen_encoder(False)
    assert unfrozen is not clf and clf.freeze_encoder and not unfrozen.freeze_encoder
    assert len(unfrozen.trainable_weights) == len(clf.encoder.weights) + 2
    x = images()
    np.testing.assert_allclose(np.asarray(unfrozen(x)), np.asarray(clf(x)), atol=1e-6)


def test_new_model_from_weights_keeps_the_feature_standardisation(tmp_path):
    clf = EncoderClassifier(tiny_dae(), 4, freeze_encoder=True)
    clf.adapt(images(32, seed=2))
    unfrozen = clf.with_frozen_encoder(False)
    x = images()
    np.testing.assert_allclose(np.asarray(unfrozen(x)), np.asarray(clf(x)), atol=1e-6)
    run_model_serialization_test(unfrozen, x, tmp_path)


def test_scratch_encoder_has_the_architecture_but_fresh_weights():
    dae = tiny_dae()
    pretrained, scratch = code_encoder(dae), code_encoder(dae, pretrained=False)
    assert [w.shape for w in scratch.weights] == [w.shape for w in pretrained.weights]
    kernels = [(a, b) for a, b in zip(scratch.get_weights(), pretrained.get_weights(), strict=True)
               if a.ndim == 4]
    assert kernels and all(not np.allclose(a, b) for a, b in kernels)


def test_adapt_standardises_the_pooled_features():
    clf = EncoderClassifier(tiny_dae(), 4)
    x = images(64, seed=3)
    clf.adapt(x)
    normed = keras.Model(clf.inputs, clf.get_layer("feature_norm").output).predict(x, verbose=0)
    live = normed.std(axis=0) > 0  # ReLU units that never fire stay at 0
    np.testing.assert_allclose(normed[:, live].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normed[:, live].std(axis=0), 1.0, atol=1e-2)


def test_features_that_never_vary_are_centred_not_blown_up():
    clf = EncoderClassifier(tiny_dae(), 4)
    kernel, bias = clf.encoder.get_layer("code_conv").get_weights()
    kernel[..., :2], bias[:2] = 0.0, -1.0  # two code units whose ReLU never fires
    clf.encoder.get_layer("code_conv").set_weights([kernel, bias])
    x = images(64, seed=3)
    pooled = keras.Model(clf.inputs, clf.get_layer("avg_pool").output).predict(x, verbose=0)
    dead = pooled.std(axis=0) == 0
    assert dead.tolist() == [True, True, False, False, False, False]
    clf.adapt(x)
    norm = clf.get_layer("feature_norm")
    np.testing.assert_allclose(np.asarray(norm.variance).ravel()[dead], 1.0)
    np.testing.assert_allclose(np.asarray(norm.variance).ravel()[~dead], pooled.var(axis=0)[~dead],
                               rtol=1e-3)
    # A unit that wakes up a little (as fine-tuning may make it) moves its feature a little.
    flicker = pooled[:2] + np.where(dead, 1e-3, 0.0).astype(np.float32)
    moved = np.asarray(norm(flicker)) - np.asarray(norm(pooled[:2]))
    np.testing.assert_allclose(moved[:, dead], 1e-3, rtol=1e-2)
    # It survives saving: the scale is part of the weights.
    again = EncoderClassifier.from_config(clf.get_config())
    again.set_weights(clf.get_weights())
    np.testing.assert_allclose(np.asarray(again.get_layer("feature_norm").variance),
                               np.asarray(norm.variance))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"pooling": "mean"}, ValueError, "pooling must be one of"),
    ({"pooling": "flatten"}, ValueError, "pooling='flatten' needs a fixed image_size"),
    ({"num_classes": 1}, ValueError, "num_classes must be at least 2, got 1"),
    ({"dropout": 1.0}, ValueError, r"dropout must be in \[0, 1\), got 1.0"),
    ({"image_size": (8,)}, ValueError, "image_size must be"),
])
def test_bad_arguments_say_what_was_received(kwargs, error, message):
    args = {"num_classes": 4, **kwargs}
    with pytest.raises(error, match=message):
        EncoderClassifier(tiny_dae(), **args)


def test_code_encoder_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="expected a ConvDAE, an EncoderClassifier or a functional"):
        code_encoder("fashion-mnist")


def test_a_classifier_trained_under_mixed_bfloat16_loads_and_exports_in_float32(tmp_path):
    # Fine-tuning runs with --mixed-precision bfloat16; what it saves must compute in float32
    # when loaded (features labelled float32 are float32), and in bfloat16 only when asked.
    from models.registry import computes_in, load_model, with_precision

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        dae = ConvDAE(widths=(4, 8), bottleneck=8)
        trained = EncoderClassifier(dae, num_classes=3)
        assert computes_in(trained) == "bfloat16"
        trained.save(tmp_path / "classifier.keras")
    finally:
        keras.config.set_dtype_policy(previous)
    loaded = load_model(tmp_path / "classifier.keras")
    assert computes_in(loaded) == "float32"
    assert computes_in(feature_extractor(loaded)) == "float32"
    assert computes_in(with_precision(loaded, "bfloat16")) == "bfloat16"
