"""The registry's answer to files that are not models this app can use."""

import zipfile

import pytest

from models.registry import ModelNotFoundError, load_model


def _mlp_dae(path):
    from models.mlp_dae import MLPDAE

    model = MLPDAE(widths=(8,), code=4, name="points")
    model.save(path)
    return path


@pytest.mark.parametrize("make,why", [
    (lambda p: p.write_text("just text"), "it is not a .keras archive (a zip file)"),
    (lambda p: p.write_bytes(b""), "it is not a .keras archive (a zip file)"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("metadata.json", "{}"), "config.json"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("config.json", "{not json"), "Keras cannot load it"),
    (_mlp_dae, "MLPDAE"),  # a point DAE (training.score): refused whether or not its class is imported
])
def test_a_keras_file_that_is_no_usable_model_is_a_clear_error(tmp_path, make, why):
    path = tmp_path / "bad.keras"
    make(path)
    with pytest.raises(ModelNotFoundError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path.resolve()} is not a model this app can use: ")
    assert why in message


def test_a_bad_model_file_is_one_line_in_a_cli(tmp_path, capsys):
    from training.export import main

    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    assert main(["encoder", "--model", str(path), "--out", str(tmp_path / "enc.keras")]) == 2
    assert "is not a model this app can use: it is not a .keras archive" in capsys.readouterr().err
    assert not (tmp_path / "enc.keras").exists()


def test_save_model_replaces_the_file_whole_or_not_at_all(tmp_path, monkeypatch):
    # Every run folder and the bundle save models this way: saved in full beside the real name,
    # then renamed over it. When that last step fails (as when the run is killed before it) the
    # old file is still whole and no scratch is left; when it succeeds the model loads.
    import os

    import numpy as np

    from models.conv_dae import ConvDAE
    from models.registry import save_model

    path = tmp_path / "model.keras"
    path.write_bytes(b"old model")
    model = ConvDAE(widths=(4,), bottleneck=4)

    def no_rename(*args):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk went away"):
        save_model(model, path)
    assert path.read_bytes() == b"old model" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    monkeypatch.undo()
    assert save_model(model, path) == path and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    images = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(load_model(path).predict(images, verbose=0),
                               model.predict(images, verbose=0), rtol=1e-6)


def test_a_model_loaded_during_a_mixed_precision_run_computes_in_float32(tmp_path):
    import shutil

    import keras

    from models.registry import computes_in, resolve_model_path

    # A copy: the registry caches by file, and the bundled file may be cached already.
    path = tmp_path / "fm.keras"
    shutil.copy(resolve_model_path("fashion-mnist"), path)
    keras.config.set_dtype_policy("mixed_bfloat16")  # what pretraining sets for its run
    try:
        model = load_model(path)
    finally:
        keras.config.set_dtype_policy("float32")
    assert computes_in(model) == "float32"
    assert computes_in(load_model(path, precision="bfloat16")) == "bfloat16"
