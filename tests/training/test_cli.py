import pytest

from training.cli import build_parser, config_from_dict, parse_config
from training.pretrain import PretrainConfig


def test_flags_map_onto_the_dataclass():
    config = parse_config(PretrainConfig, "x", [
        "--dataset", "mnist", "--data-dir", "/d", "--corruption", "masking:0.25",
        "--corruption", "gaussian:0.1-0.2", "--epochs", "3", "--widths", "8", "16", "--no-skips",
        "--no-residual", "--out", "runs/m"])
    assert config.dataset == "mnist" and config.data_dir == "/d"
    assert config.corruptions == ("masking:0.25", "gaussian:0.1-0.2")
    assert config.widths == (8, 16) and config.skips is False and config.epochs == 3


def test_defaults_are_the_blind_model():
    config = parse_config(PretrainConfig, "x", [])
    assert [s.name for s in config.specs] == ["gaussian", "salt_pepper", "masking"]


def test_every_field_has_help_and_a_flag():
    help_text = build_parser(PretrainConfig, "x").format_help()
    for name in PretrainConfig.__dataclass_fields__:
        flag = PretrainConfig.__dataclass_fields__[name].metadata.get("flag", name)
        assert "--" + flag.replace("_", "-") in help_text
        assert PretrainConfig.__dataclass_fields__[name].metadata["help"]


def test_help_states_each_default_once():
    help_text = " ".join(build_parser(PretrainConfig, "x").format_help().split())
    assert "(default: None)" not in help_text
    assert "(repeatable; default: gaussian:0.05-0.5 salt_pepper:0.05-0.5 masking:0.1-0.6)" in help_text
    assert "(default: 20)" in help_text  # --epochs


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="unknown PretrainConfig keys: colour, lr"):
        config_from_dict(PretrainConfig, {"lr": 1, "colour": 3})


def test_bad_corruption_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        parse_config(PretrainConfig, "x", ["--corruption", "blur:0.3"])
    assert "unknown corruption 'blur'" in capsys.readouterr().err


def test_card_command_parses_back_to_the_same_config():
    import shlex

    from training.bundle import pretrain_command

    config = parse_config(PretrainConfig, "x", [
        "--dataset", "folder:/photos/my dir", "--corruption", "gaussian:0-0.1",
        "--corruption", "masking:0.05-0.5", "--widths", "32", "64", "128", "--no-skips",
        "--no-residual", "--mixed-precision", "bfloat16", "--patches", "400", "--out", "runs/p"])
    command = pretrain_command(config)
    assert command.startswith("python -m training.pretrain --dataset 'folder:/photos/my dir'")
    assert parse_config(PretrainConfig, "x", shlex.split(command)[3:]) == config
    # defaults are spelled out for the options every card must show
    plain = pretrain_command(parse_config(PretrainConfig, "x", []))
    assert "--epochs 20" in plain and "--corruption masking:0.1-0.6" in plain and "--out runs/dae" in plain


def test_config_differences_name_the_fields_and_skip_the_ignored_ones():
    import dataclasses
    import json

    from training.cli import config_differences

    config = PretrainConfig(widths=(16, 32))
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    assert config_differences(saved, config) == []
    changed = {**saved, "epochs": 3, "seed": 7, "extra": 1}
    assert config_differences(changed, config) == ["epochs", "extra", "seed"]
    assert config_differences(changed, config, ignore=("seed", "extra")) == ["epochs"]
    # The run folder's own name never counts, however it was spelled when the run began.
    assert config_differences({**saved, "out": "/elsewhere/runs/x/"}, config) == []
    # A run saved before an option existed matches while that option keeps its default.
    older = {k: v for k, v in saved.items() if k != "init_from"}
    assert config_differences(older, config) == []
    assert config_differences(older, dataclasses.replace(config, init_from="photo")) == ["init_from"]
