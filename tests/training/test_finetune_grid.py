"""The fine-tuning grid's command line: options after -- that the grid sets per cell."""

import pytest

from training.finetune import FinetuneConfig
from training.finetune_grid import GridConfig, cell_configs, main


@pytest.mark.parametrize("after,grid_flag", [
    (["--mode", "linear"], "--mode"),
    (["--labels-per-class", "10"], "--labels"),
    (["--out", "runs/mine"], "--out"),
])
def test_a_cell_option_after_the_separator_is_refused_before_training(tmp_path, monkeypatch, capsys,
                                                                      after, grid_flag):
    import training.finetune

    def no_training(config):
        raise AssertionError(f"trained {config.out} despite the refusal")

    monkeypatch.setattr(training.finetune, "run", no_training)
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
