"""Shared test helpers (keras-hub's run_vision_backbone_test pattern)."""

from __future__ import annotations

import functools

import numpy as np
import pytest


def run_model_serialization_test(model, inputs, tmp_path, atol=1e-6):
    """Asserts that get_config -> from_config -> set_weights and a ``.keras`` save -> load
    (safe_mode) both give the same config and identical outputs on ``inputs``. Works for any
    registered model class.

    The outputs, not just the configs, are compared: a constructor argument that
    ``get_config`` forgets is missing from both configs alike, yet changes the model rebuilt.

    Returns:
        The reloaded model.
    """
    import keras

    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    config = model.get_config()
    rebuilt = model.__class__.from_config(config)
    assert rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt(inputs, training=False)), expected,
                               atol=atol, err_msg="get_config -> from_config -> set_weights changed outputs")
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model)
    assert reloaded.get_config() == config
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(inputs, training=False)), expected,
                               atol=atol, err_msg="save -> load changed outputs")
    return reloaded


@functools.cache
def fashion_mnist_available() -> bool:
    """Whether Fashion-MNIST's original files are on this machine (no download tried; read once)."""
    from data.datasets import DatasetNotFoundError, load_named

    try:
        load_named("fashion_mnist", download=False)
    except DatasetNotFoundError:
        return False
    return True


needs_fashion_mnist = pytest.mark.skipif(not fashion_mnist_available(),
                                         reason="Fashion-MNIST files missing (make setup)")
"""Skips a test that needs Fashion-MNIST's files where they are missing."""
