"""Single-setting specialists: their run configs, resuming, and the comparison's numbers."""

import dataclasses
import json
import shutil
from pathlib import Path

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


def fake_folder(run, *, finished=True, model=None):
    """``run``'s folder as training.pretrain leaves it: config.json, and metrics.json (and the
    model) once finished."""
    from training.cli import save_config

    folder = Path(run.out)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(run, folder / "config.json")
    if finished:
        (folder / "metrics.json").write_text('{"epochs_run": 2, "train_seconds": 1.0}')
        if model is not None:
            shutil.copy(model, folder / "model.keras")
    return folder


@pytest.fixture
def fake_training(monkeypatch):
    """A clock in minutes and a ``train`` that needs ``minutes[label]`` of training per specialist
    (4 by default), runs until its ``time_limit`` (as the epoch timer stops it) and goes on from
    there when run again. Returns the clock and the calls, ``(label, time_limit)``."""
    import types

    import training.pretrain
    import training.specialists

    clock = types.SimpleNamespace(now=0.0, minutes={}, done={}, calls=[])
    monkeypatch.setattr(training.specialists, "time", types.SimpleNamespace(monotonic=lambda: 60 * clock.now),
                        raising=False)

    def train(run):
        label = run.corruptions[0]
        clock.calls.append((label, run.time_limit))
        need = clock.minutes.get(label, 4.0) - clock.done.get(label, 0.0)
        spent = min(need, run.time_limit or need)
        clock.now += spent
        clock.done[label] = clock.done.get(label, 0.0) + spent
        folder = fake_folder(run)
        if spent < need:  # stopped at its time limit: the backup stays, to go on from
            (folder / "backup").mkdir(exist_ok=True)
        else:
            shutil.rmtree(folder / "backup", ignore_errors=True)
        return {}

    monkeypatch.setattr(training.pretrain, "train", train)
    return clock


SETTINGS = ("gaussian:0.1", "masking:0.5", "salt_pepper:0.3")


def test_the_time_limit_bounds_the_whole_command_not_each_specialist(tmp_path, fake_training, capsys):
    from training.specialists import train_missing

    config = SpecialistsConfig(setting=SETTINGS, out=str(tmp_path / "s"))
    # 10 minutes for three specialists of 4: the second gets the 6 left, the third the 2 left of
    # those (and stops at them).
    train_missing(config, PretrainConfig(epochs=3, time_limit=10.0))
    assert fake_training.calls == [("gaussian:0.1", 10.0), ("masking:0.5", 6.0), ("salt_pepper:0.3", 2.0)]
    assert fake_training.now == 10.0
    # Run again, it gets its whole limit again: the third goes on, the others are finished.
    fake_training.calls.clear()
    train_missing(config, PretrainConfig(epochs=3, time_limit=10.0))
    assert fake_training.calls == [("salt_pepper:0.3", 10.0)]
    assert finished(specialist_config(PretrainConfig(epochs=3), parse_setting(SETTINGS[2]), config.out))


def test_no_specialist_starts_after_one_stopped_at_the_time_limit(tmp_path, fake_training, capsys):
    from training.specialists import train_missing

    config = SpecialistsConfig(setting=SETTINGS, out=str(tmp_path / "s"))
    train_missing(config, PretrainConfig(epochs=3, time_limit=3.0))
    assert fake_training.calls == [("gaussian:0.1", 3.0)]  # stopped at 3 of its 4 minutes
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("time limit:")] == [
        "time limit: specialist gaussian:0.1 stopped at the 3 min of this command; not starting "
        "the specialists masking:0.5, salt_pepper:0.3; the same command goes on from there"]
    assert not (tmp_path / "s" / "masking-0.5").exists()
    # Nothing left after one that finished just in time: the others are not started either.
    fake_training.calls.clear()
    fake_training.minutes = {"gaussian:0.1": 5.0}  # the 3 minutes before, and 2 more now
    train_missing(config, PretrainConfig(epochs=3, time_limit=2.0))
    assert fake_training.calls == [("gaussian:0.1", 2.0)]
    assert "time limit: 2 min spent; not starting the specialists masking:0.5, salt_pepper:0.3; " \
        in capsys.readouterr().out
    # Without a limit, every specialist trains unbounded.
    fake_training.calls.clear()
    train_missing(config, PretrainConfig(epochs=3))
    assert fake_training.calls == [("masking:0.5", 0.0), ("salt_pepper:0.3", 0.0)]


def tiny_args(data_dir, epochs=2):
    """The options after ``--`` of a tiny specialist on the quadrant dataset."""
    return ["--dataset", "fashion_mnist", "--data-dir", data_dir, "--epochs", str(epochs), "--widths", "4",
            "8", "--bottleneck", "8", "--batch-size", "32", "--eval-images", "64"]


def test_report_only_refuses_options_no_specialist_was_trained_with(tmp_path, capsys):
    data_dir = str(write_quadrant_dataset(tmp_path / "data"))
    blind = save_tiny_dae(tmp_path / "blind.keras")
    out = tmp_path / "s"
    base = PretrainConfig(data_dir=data_dir, **TINY)  # trained with 2 epochs
    for text in ("gaussian:0.1", "masking:0.5"):
        fake_folder(specialist_config(base, parse_setting(text), out), model=blind)
    (out / "results-first20.md").write_text("the good report")
    args = ["--report-only", "--blind", str(blind), "--out", str(out), "--limit", "20",
            "--setting", "gaussian:0.1", "--setting", "masking:0.5", "--"]
    assert main([*args, *tiny_args(data_dir, epochs=3)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --report-only: no specialist finished with the options given after --")
    assert f"{out / 'masking-0.5'} (differs in: epochs)" in err and len(err.strip().splitlines()) == 1
    assert (out / "results-first20.md").read_text() == "the good report"
    assert not (out / "results-first20.json").exists()

    # One of them retrained with 3 epochs: the other's row says what its folder holds.
    fake_folder(specialist_config(dataclasses.replace(base, epochs=3), parse_setting("gaussian:0.1"), out),
                model=blind)
    assert main([*args, *tiny_args(data_dir, epochs=3)]) == 0
    rows = json.loads((out / "results-first20.json").read_text())["settings"]
    assert rows["gaussian:0.1"]["trained"]
    assert not rows["masking:0.5"]["trained"] and rows["masking:0.5"]["other_config"] == ["epochs"]
    line = next(x for x in (out / "results-first20.md").read_text().splitlines() if x.startswith("| masking"))
    assert "other config (differs in: epochs)" in line


@pytest.mark.parametrize("report_only", [False, True])
@pytest.mark.parametrize("below", ["", "sub"])
def test_an_out_that_is_or_lies_under_a_file_is_one_error_line(tmp_path, monkeypatch, capsys, report_only,
                                                               below):
    import training.pretrain

    def refuse(config):
        raise AssertionError(f"trained {config.out}: --out is checked first")

    monkeypatch.setattr(training.pretrain, "train", refuse)
    data_dir = str(write_quadrant_dataset(tmp_path / "data"))
    blind = save_tiny_dae(tmp_path / "blind.keras")
    (tmp_path / "afile").touch()
    out = tmp_path / "afile" / below if below else tmp_path / "afile"
    args = ["--blind", str(blind), "--out", str(out), "--setting", "gaussian:0.1", "--limit", "20"]
    assert main([*args, *(["--report-only"] if report_only else []), "--", *tiny_args(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --out {out}: {tmp_path / 'afile'} is a file, not a folder; "
                   "give a folder for the runs\n")
    assert (tmp_path / "afile").read_text() == ""
