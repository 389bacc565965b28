import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import pytest

from models.conv_dae import negative_log_likelihood
from models.mlp_dae import MLPDAE, check_architecture
from tests.helpers import run_model_serialization_test


@pytest.mark.parametrize("residual", [True, False])
def test_round_trip_and_shapes(tmp_path, residual):
    model = MLPDAE(dim=2, widths=(16, 8), code=12, activation="relu", residual=residual, name="dae")
    x = np.random.default_rng(0).standard_normal((5, 2)).astype(np.float32)
    reloaded = run_model_serialization_test(model, x, tmp_path)
    assert np.asarray(reloaded(x)).shape == (5, 2)
    assert np.asarray(reloaded.encode(x)).shape == (5, 12)
    assert model.encoder.name == "encoder" and model.decoder.name == "decoder"


def test_residual_model_with_zero_correction_is_the_identity():
    model = MLPDAE(widths=(8,), code=4)
    layer = model.decoder.get_layer("correction")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(x)), x, atol=1e-7)


def test_loss_is_squared_error_as_for_the_image_dae():
    loss = MLPDAE().loss_function()
    assert loss.name == "gaussian_nll"
    # One loss for every DAE: the image DAE's Gaussian negative log-likelihood.
    shared = negative_log_likelihood("gaussian")
    assert type(loss) is type(shared) and loss.get_config() == shared.get_config()
    assert float(loss(np.array([[0.0, 0.0]]), np.array([[1.0, 3.0]]))) == pytest.approx(5.0)


@pytest.mark.parametrize("kwargs,message", [
    ({"code": 0}, "dim and code must be >= 1, got dim=2, code=0"),
    ({"widths": (8, 0)}, r"widths must be positive ints, got \(8, 0\)"),
    ({"activation": "wiggle"}, "unknown activation 'wiggle'; expected a Keras activation name"),
])
def test_bad_arguments_say_what_was_received(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLPDAE(**kwargs)
    # The same check, without building anything: what ScoreConfig runs on its flags.
    arguments = {"dim": 2, "widths": (128,), "code": 128, "activation": "relu", **kwargs}
    with pytest.raises(ValueError, match=message):
        check_architecture(**arguments)
    assert check_architecture(2, [8.0, "4"], 3, "silu") == (8, 4)
