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


def _run_folder(tmp_path, name="run", channels=1, seed=0):
    from tests.training.representation_fixtures import save_tiny_dae

    folder = tmp_path / name
    folder.mkdir()
    save_tiny_dae(folder / "model.keras", channels=channels, seed=seed)
    (folder / "config.json").write_text('{"dataset": "fashion_mnist", "channels": 0}')
    return folder


@pytest.mark.parametrize("damage,names", [
    ({"config.json": "[1, 2]"}, "config.json: not a model card (a JSON list"),
    ({"config.json": ""}, "config.json: cannot be read as a model card"),
])
def test_a_run_folder_with_a_damaged_config_is_one_line_naming_the_file(tmp_path, capsys, damage, names):
    from app.batch import main
    from app.engine import as_denoiser

    folder = _run_folder(tmp_path)
    for file, text in damage.items():
        (folder / file).write_text(text)
    with pytest.raises(ModelNotFoundError) as info:
        as_denoiser(str(folder))
    assert names in str(info.value)
    (tmp_path / "in").mkdir()
    for extra in ([], ["--dry-run"]):
        assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(folder), *extra]) == 2
        err = capsys.readouterr().err
        assert names in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_damaged_metrics_file_holds_only_scores_and_is_left_out(tmp_path):
    from app.engine import as_denoiser
    from models.registry import model_card

    folder = _run_folder(tmp_path)
    (folder / "metrics.json").write_text("")
    assert "metrics" not in model_card(folder)
    assert as_denoiser(str(folder)).channels == 1


@pytest.mark.parametrize("card,field", [
    ({"channels": 2}, "channels"), ({"stride": "4"}, "stride"),
    ({"input": {"range": ["-", 1]}}, "input.range"),
    ({"input": {"range": [1, 0]}}, "input.range"), ({"config": []}, "config"),
])
def test_a_card_that_lies_in_a_field_the_engine_reads_is_refused(tmp_path, card, field):
    import json

    from models.registry import model_card

    folder = _run_folder(tmp_path)
    (folder / "model.json").write_text(json.dumps({"name": "liar", **card}))
    with pytest.raises(ModelNotFoundError, match=f"not a usable model card \\({field} is"):
        model_card(folder / "model.keras")


def test_a_run_folders_card_gives_the_channels_of_its_archive(tmp_path):
    from app.ui import DenoiserApp
    from models.registry import model_card

    grey, colour = _run_folder(tmp_path, "grey"), _run_folder(tmp_path, "colour", channels=3)
    assert (model_card(grey)["channels"], model_card(colour)["channels"]) == (1, 3)
    app = DenoiserApp({"grey run": str(grey), "colour run": str(colour)})
    assert "(grey)" in app.model_info("grey run") and "(colour)" in app.model_info("colour run")
    (grey / "config.json").write_text("[]")
    assert app.model_info("grey run").startswith("**grey run**: cannot be used: ")


def test_a_model_replaced_at_its_old_modification_time_is_loaded_again(tmp_path):
    import os
    import shutil

    import numpy as np

    from app.engine import as_denoiser
    from models.registry import model_sha256

    folder, other = _run_folder(tmp_path, "run", seed=0), _run_folder(tmp_path, "other", seed=1)
    x = np.random.default_rng(0).random((1, 8, 8, 1), np.float32)
    before = load_model(folder)(x)
    sha = model_sha256(folder)
    stat = (folder / "model.keras").stat()
    shutil.copyfile(other / "model.keras", folder / "model.keras")  # then its old mtime, as cp -p gives
    os.utime(folder / "model.keras", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = load_model(folder)(x)
    assert model_sha256(folder) != sha
    np.testing.assert_allclose(after, load_model(other)(x), atol=1e-6)
    assert not np.allclose(after, before, atol=1e-4)
    # A card edited beside an unchanged model is read again by the engine too.
    import json

    card = {"name": "run", "channels": 1, "stride": 4, "input": {"range": [0.0, 2.0]}}
    (folder / "model.json").write_text(json.dumps(card))
    assert as_denoiser(str(folder)).value_range == (0.0, 2.0)
    card["input"]["range"] = [0.0, 1.0]
    (folder / "model.json").write_text(json.dumps(card))
    assert as_denoiser(str(folder)).value_range == (0.0, 1.0)


def test_an_archive_that_unpacks_to_far_more_than_it_holds_is_refused_before_keras_opens_it(tmp_path):
    import shutil

    from models.registry import model_card

    folder = _run_folder(tmp_path)
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(folder / "model.keras") as src, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():
            data = src.read(member)
            if member.filename == "config.json":
                data = data[:-1] + b" " * (20 << 20) + data[-1:]  # 20 MB of spaces, valid JSON
            dst.writestr(member.filename, data, compresslevel=9)
    assert bomb.stat().st_size < 1 << 20
    for call in (load_model, model_card):
        with pytest.raises(ModelNotFoundError, match="unpacks"):
            call(bomb)
    shutil.rmtree(folder)


def test_the_cpu_is_named_with_its_cores_and_bfloat16_units(tmp_path):
    import os

    from models.registry import cpu_description

    amd, intel = tmp_path / "amd", tmp_path / "intel"
    amd.write_text("processor\t: 0\nmodel name\t: AMD  EPYC\nflags\t\t: fpu avx2 fma\n\n"
                   "processor\t: 1\nmodel name\t: AMD  EPYC\nflags\t\t: fpu avx2 fma\n")
    intel.write_text("model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t: avx512f avx512_bf16 amx_bf16\n")
    cores = os.cpu_count()
    assert cpu_description(amd) == f"AMD EPYC, {cores} cores, no bfloat16 units"
    assert cpu_description(intel) == f"Intel(R) Xeon(R) Platinum 8488C, {cores} cores, bfloat16 units"
    assert cpu_description(tmp_path / "none").endswith(f", {cores} cores, no bfloat16 units")


def test_weights_of_zeros_packed_hundreds_of_times_still_load(tmp_path):
    import keras
    import numpy as np

    from models.conv_dae import ConvDAE

    model = ConvDAE(channels=1, widths=(64, 128), bottleneck=256, name="zeros")
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.save(tmp_path / "plain.keras")
    packed = tmp_path / "packed.keras"
    with zipfile.ZipFile(tmp_path / "plain.keras") as src, \
            zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():
            dst.writestr(member.filename, src.read(member), compresslevel=9)
    weights = zipfile.ZipFile(packed).getinfo("model.weights.h5")
    assert weights.file_size > 200 * weights.compress_size > 0  # what the bomb check looks for
    assert isinstance(load_model(packed), keras.Model)


def test_a_loaded_model_predicts_without_xla_even_where_keras_would_compile(tmp_path, monkeypatch):
    """On a GPU Keras's jit_compile "auto" is XLA, which compiles predict again for every new
    image shape (seconds each); the engine feeds one shape per image size, so models are served
    as plain TensorFlow graphs, at float32 and at bfloat16."""
    import shutil

    import tensorflow as tf

    from models.registry import resolve_model_path

    path = tmp_path / "fm.keras"
    shutil.copy(resolve_model_path("fashion-mnist"), path)
    real = tf.config.list_physical_devices
    fake_gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: real(kind) + ([fake_gpu] if kind in (None, "GPU") else []))
    untouched = keras_load(path)
    assert untouched.jit_compile is True  # what Keras itself decides on this "GPU" machine
    assert load_model(path).jit_compile is False
    assert load_model(path, precision="bfloat16").jit_compile is False


def keras_load(path):
    import keras

    import models.conv_dae  # noqa: F401 - registers ConvDAE with Keras

    return keras.saving.load_model(path, safe_mode=True, compile=False)
