"""Single-setting specialists: their run configs, resuming, and the comparison's numbers."""

import dataclasses
import json
import shutil

import pytest

from tests.training.representation_fixtures import save_tiny_dae, write_quadrant_dataset
from training.benchmark import BenchmarkConfig, run_benchmark
from training.bundle import pretrain_command
from training.cli import parse_config
from training.pretrain import PretrainConfig, train
from training.specialists import (
    SpecialistsConfig,
    finished,
    main,
    parse_setting,
    run,
    specialist_config,
)


def scores(report):
    """PSNR and SSIM of every row (timings differ from run to run)."""
    return {label: {who: (row[who]["psnr"], row[who]["ssim"])
                    for who in ("blind", "specialist") if who in row}
            for label, row in report["settings"].items()}


TINY = dict(dataset="fashion_mnist", epochs=2, widths=(4, 8), bottleneck=8, batch_size=32,
            eval_images=64)


def test_a_specialist_is_the_base_run_with_one_fixed_corruption(tmp_path):
    base = PretrainConfig(epochs=20, widths=(16, 32))
    config = specialist_config(base, parse_setting("masking:0.25"), tmp_path)
    assert config.corruptions == ("masking:0.25",)
    assert config.specs[0].low == config.specs[0].high == 0.25
    assert config.out == str(tmp_path / "masking-0.25")
    assert dataclasses.replace(config, corruptions=base.corruptions, out=base.out) == base


@pytest.mark.parametrize("base", [
    PretrainConfig(),
    PretrainConfig(dataset="mnist", data_dir="/data/mnist", epochs=3, widths=(8, 16), skips=False,
                   residual=False, distribution="bernoulli", learning_rate=1e-3),
])
def test_the_printed_command_parses_back_to_the_same_config(base):
    config = specialist_config(base, parse_setting("gaussian:25/255"), "runs/spec")
    command = pretrain_command(config)
    assert command.startswith(f"python -m training.pretrain --dataset {base.dataset} ")
    assert f"--epochs {base.epochs} " in command
    args = command.split()[3:]
    assert parse_config(PretrainConfig, "", args) == config


def test_finished_needs_metrics_and_the_same_config_up_to_how_it_computed(tmp_path):
    config = specialist_config(PretrainConfig(epochs=2), parse_setting("gaussian:0.1"), tmp_path)
    folder = tmp_path / "gaussian-0.1"
    folder.mkdir()
    # Trained elsewhere (then moved here) in bfloat16, in stints of 100 minutes: the same specialist.
    saved = {**dataclasses.asdict(config), "out": "somewhere/else", "mixed_precision": "bfloat16",
             "time_limit": 100.0}
    (folder / "config.json").write_text(json.dumps(saved))
    assert finished(config) is None  # no metrics yet: a run in progress
    (folder / "metrics.json").write_text('{"epochs_run": 2}')
    found = finished(config)
    assert found == dataclasses.replace(config, mixed_precision="bfloat16", time_limit=100.0)
    assert "--mixed-precision bfloat16" in pretrain_command(found)
    assert finished(dataclasses.replace(config, epochs=3)) is None
    assert finished(dataclasses.replace(config, widths=(8, 16))) is None
    (folder / "backup").mkdir()  # stopped at its --time-limit: it goes on when run again
    assert finished(config) is None


def test_bad_options_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--setting", "gaussian"])
    assert "NAME:LEVEL" in capsys.readouterr().err
    assert main(["--report-only", "--", "--dataset", "folder:/tmp"]) == 2
    assert "named dataset" in capsys.readouterr().err
    # A mistyped --blind is refused before any specialist trains.
    assert main(["--blind", "fashion-mnist-wdie", "--out", str(tmp_path / "s"), "--", "--epochs", "1"]) == 2
    assert "fashion-mnist-wdie" in capsys.readouterr().err and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_trains_each_specialist_once_and_scores_it_as_the_benchmark_does(tmp_path):
    data_dir = str(write_quadrant_dataset(tmp_path / "data"))
    base = PretrainConfig(data_dir=data_dir, **TINY)
    blind = dataclasses.replace(base, out=str(tmp_path / "blind"))
    train(blind)
    config = SpecialistsConfig(blind=blind.out, setting=("gaussian:0.3", "masking:0.5"),
                               out=str(tmp_path / "spec"), limit=50)
    report = run(config, base)

    rows = report["settings"]
    assert list(rows) == ["gaussian:0.3", "masking:0.5"]
    for label, row in rows.items():
        assert row["trained"] and row["epochs_run"] == 2
        saved = json.loads((tmp_path / "spec" / label.replace(":", "-") / "config.json").read_text())
        assert saved["corruptions"] == [label]
        assert row["gap_db"] == round(row["blind"]["psnr"] - row["specialist"]["psnr"], 3)
        assert row["blind"]["images"] == row["specialist"]["images"] == 50

    # The same numbers as the benchmark itself gives both models on the same images and noise.
    bench = run_benchmark(BenchmarkConfig(
        model=(blind.out, rows["masking:0.5"]["run"]), data_dir=data_dir, limit=50,
        contender=("median3",), setting=("masking:0.5",)))["results"]["masking:0.5"]
    assert bench["blind"]["psnr"] == rows["masking:0.5"]["blind"]["psnr"]
    assert bench["masking-0.5"]["psnr"] == rows["masking:0.5"]["specialist"]["psnr"]

    table = (tmp_path / "spec" / "results-first50.md").read_text()
    g = rows["gaussian:0.3"]
    line = next(x for x in table.splitlines() if x.startswith("| gaussian:0.3"))
    for cell in (f"{g['blind']['psnr']:.2f}", f"{g['specialist']['psnr']:.2f}", f"{g['gap_db']:+.2f}"):
        assert cell in line
    assert json.loads((tmp_path / "spec" / "results-first50.json").read_text())["settings"] == json.loads(
        json.dumps(rows))

    # Rerun: nothing retrained. A finished run moved into another OUT is found there too.
    stamp = (tmp_path / "spec" / "masking-0.5" / "model.keras").stat().st_mtime_ns
    assert scores(run(config, base)) == scores(report)
    assert (tmp_path / "spec" / "masking-0.5" / "model.keras").stat().st_mtime_ns == stamp
    shutil.copytree(tmp_path / "spec" / "masking-0.5", tmp_path / "moved" / "masking-0.5")
    moved = dataclasses.replace(config, out=str(tmp_path / "moved"), setting=("masking:0.5",),
                                report_only=True)
    assert run(moved, base)["settings"]["masking:0.5"]["specialist"]["psnr"] == \
        rows["masking:0.5"]["specialist"]["psnr"]


def test_report_only_scores_the_blind_model_where_no_specialist_finished(tmp_path):
    data_dir = str(write_quadrant_dataset(tmp_path / "data"))
    blind = save_tiny_dae(tmp_path / "blind.keras")
    config = SpecialistsConfig(blind=str(blind), setting=("salt_pepper:0.3",), out=str(tmp_path / "s"),
                               limit=20, report_only=True)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "results.md").write_text("the full test split's report")
    report = run(config, PretrainConfig(data_dir=data_dir, **TINY))
    row = report["settings"]["salt_pepper:0.3"]
    assert not row["trained"] and "specialist" not in row and row["blind"]["images"] == 20
    quick = (tmp_path / "s" / "results-first20.md").read_text()  # --limit: beside, not over it
    assert "| salt_pepper:0.3 " in quick and "not trained" in quick
    assert (tmp_path / "s" / "results.md").read_text() == "the full test split's report"
    assert json.loads((tmp_path / "s" / "results-first20.json").read_text())["settings"]
    assert not (tmp_path / "s" / "salt_pepper-0.3").exists()
