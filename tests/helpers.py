"""Shared test helpers (keras-hub's run_vision_backbone_test pattern)."""

from __future__ import annotations

import numpy as np


def run_model_serialization_test(model, inputs, tmp_path, atol=1e-6):
    """Asserts that get_config -> from_config keeps the config, and that a ``.keras`` save ->
    load (safe_mode) gives identical outputs. Works for any registered model class.

    Returns:
        The reloaded model.
    """
    import keras

    config = model.get_config()
    rebuilt = model.__class__.from_config(config)
    assert rebuilt.get_config() == config
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model)
    assert reloaded.get_config() == config
    expected = keras.ops.convert_to_numpy(model(inputs))
    got = keras.ops.convert_to_numpy(reloaded(inputs))
    np.testing.assert_allclose(got, expected, atol=atol)
    return reloaded


def fashion_mnist_available() -> bool:
    """Whether Fashion-MNIST's original files are on this machine (no download tried)."""
    from data.datasets import DatasetNotFoundError, load_named

    try:
        load_named("fashion_mnist", download=False)
    except DatasetNotFoundError:
        return False
    return True
