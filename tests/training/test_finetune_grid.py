"""The fine-tuning grid's command line: options after -- that the grid sets per cell; reused cells."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from models.registry import ModelNotFoundError
from tests.training.representation_fixtures import save_tiny_dae
from training.cli import save_config
from training.finetune import FinetuneConfig
from training.finetune_grid import GridConfig, cell_configs, main, run_grid


@pytest.fixture
def no_training(monkeypatch):
    """Fails a test in which the grid would train a cell."""
    import training.finetune

    def refuse(config):
        raise AssertionError(f"trained {config.out}: a refused grid or a finished cell trains nothing")

    monkeypatch.setattr(training.finetune, "run", refuse)


@pytest.mark.parametrize("after,grid_flag", [
    (["--mode", "linear"], "--mode"),
    (["--labels-per-class", "10"], "--labels"),
    (["--out", "runs/mine"], "--out"),
])
def test_a_cell_option_after_the_separator_is_refused_before_training(tmp_path, no_training, capsys,
                                                                      after, grid_flag):
    grid = tmp_path / "grid"
    assert main(["--out", str(grid), "--", *after]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {after[0]} {after[1]} after -- is set by the grid for each cell; "
        f"give the grid's own {grid_flag} before -- instead")
    assert not grid.exists()


def test_cells_take_mode_labels_and_folder_from_the_grid(tmp_path):
    grid = GridConfig(labels=("10", "all"), modes=("scratch", "linear"), out=str(tmp_path))
    cells = cell_configs(grid, FinetuneConfig(seeds=2))
    assert [(c.labels_per_class, c.mode, c.out) for c in cells] == [
        ("10", "scratch", str(tmp_path / "scratch-k10")), ("10", "linear", str(tmp_path / "linear-k10")),
        ("all", "scratch", str(tmp_path / "scratch-kall")), ("all", "linear", str(tmp_path / "linear-kall"))]
    assert {c.seeds for c in cells} == {2}  # every other option goes to every cell


@pytest.mark.parametrize("after,message", [
    # Set to their defaults, spelt with "=", or abbreviated as argparse allows: set all the same.
    (["--mode", "finetune", "--labels-per-class", "100", "--out", "runs/finetune"],
     "--mode finetune after -- is set by the grid for each cell; give the grid's own --mode"),
    (["--labels-per-class=100"], "--labels-per-class 100 after -- is set by the grid for each cell; "
                                 "give the grid's own --labels"),
    (["--la", "100"], "--labels-per-class 100 after -- is set by the grid"),
    (["--ou", "runs/finetune"], "--out runs/finetune after -- is set by the grid"),
    (["--seeds", "1", "--out=runs/finetune"], "--out runs/finetune after -- is set by the grid"),
])
def test_a_cell_option_after_the_separator_is_refused_even_at_its_default(tmp_path, no_training, capsys,
                                                                         after, message):
    grid = tmp_path / "grid"
    assert main(["--out", str(grid), "--", *after]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not grid.exists()


def _one_finished_cell(tmp_path, report_only=False):
    """A grid of one finished cell (no model record yet): its model file, grid, folder, metrics."""
    model = save_tiny_dae(tmp_path / "dae.keras")
    grid = GridConfig(labels=("5",), modes=("linear",), out=str(tmp_path / "grid"), report_only=report_only)
    cell = cell_configs(grid, FinetuneConfig(model=str(model)))[0]
    folder = Path(cell.out)
    folder.mkdir(parents=True)
    save_config(cell, folder / "config.json")
    metrics = {"mode": "linear", "labels_per_class": "5", "test_accuracy": {"mean": 0.5, "std": 0.0}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return model, grid, folder, metrics


def test_a_finished_cell_from_another_version_of_the_model_is_refused(tmp_path, no_training):
    model, grid, folder, metrics = _one_finished_cell(tmp_path)
    # A cell finished before runs recorded their model, and one from this very file: reused.
    assert run_grid(grid, FinetuneConfig(model=str(model))) == {("5", "linear"): metrics}
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    (folder / "pretrained.json").write_text(json.dumps({"sha256": sha256}))
    assert run_grid(grid, FinetuneConfig(model=str(model))) == {("5", "linear"): metrics}
    save_tiny_dae(model, seed=1)  # retrained in place: same path, other weights
    with pytest.raises(ValueError, match=f"{folder} holds a run from another version of --model "
                                         f"{model} \\(sha256 {sha256[:12]}, now .*use a new --out"):
        run_grid(grid, FinetuneConfig(model=str(model)))


def test_report_only_refuses_a_cell_from_another_version_of_the_model(tmp_path, no_training):
    model, grid, folder, metrics = _one_finished_cell(tmp_path, report_only=True)
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    (folder / "pretrained.json").write_text(json.dumps({"sha256": sha256}))
    assert run_grid(grid, FinetuneConfig(model=str(model))) == {("5", "linear"): metrics}
    report = (tmp_path / "grid" / "results.md").read_text()
    save_tiny_dae(model, seed=1)  # retrained in place: the old numbers are not this model's
    with pytest.raises(ValueError, match=f"{folder} holds a run from another version of --model "
                                         f"{model} \\(sha256 {sha256[:12]}, now "):
        run_grid(grid, FinetuneConfig(model=str(model)))
    assert (tmp_path / "grid" / "results.md").read_text() == report


def test_report_only_still_reports_a_grid_whose_model_file_has_moved_away(tmp_path, no_training, capsys):
    model, grid, folder, metrics = _one_finished_cell(tmp_path, report_only=True)
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    (folder / "pretrained.json").write_text(json.dumps({"sha256": sha256}))
    model.unlink()
    assert run_grid(grid, FinetuneConfig(model=str(model))) == {("5", "linear"): metrics}
    assert "cells are reported without checking which version" in capsys.readouterr().err
    assert (tmp_path / "grid" / "results.md").is_file()
    with pytest.raises(ModelNotFoundError):  # training a cell needs the model
        run_grid(dataclasses.replace(grid, report_only=False), FinetuneConfig(model=str(model)))


@pytest.mark.parametrize("report_only", [[], ["--report-only"]])
@pytest.mark.parametrize("below", ["", "sub"])
def test_an_out_that_is_or_lies_under_a_file_is_one_error_line(tmp_path, no_training, capsys, report_only,
                                                               below):
    model = save_tiny_dae(tmp_path / "dae.keras")
    (tmp_path / "afile").touch()
    out = tmp_path / "afile" / below if below else tmp_path / "afile"
    assert main(["--out", str(out), "--labels", "5", *report_only, "--", "--model", str(model)]) == 2
    assert capsys.readouterr().err == (f"error: --out {out}: {tmp_path / 'afile'} is a file, not a folder; "
                                       "give a folder for the grid\n")
    assert (tmp_path / "afile").read_text() == ""
