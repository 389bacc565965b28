"""The representation experiment: labels per class x {scratch, linear, finetune} x seeds.

    python -m training.finetune_grid --out runs/finetune-grid -- --model fashion-mnist --seeds 3

Runs :mod:`training.finetune` for every labels-per-class value and mode (options after ``--``
go to every run; see ``python -m training.finetune --help``), one run folder per cell
(``OUT/MODE-kK``), then writes ``OUT/results.md`` (test accuracy mean ± std, and the robustness
of every cell under each corruption), ``OUT/results.json`` and ``OUT/robustness.png``. A cell
whose folder already holds ``metrics.json`` for the same config is not run again, so a killed
grid restarted with the same command carries on (refused if the ``--model`` file has changed
since a cell began: see ``pretrained.json``); ``--report-only`` just rewrites the report (refused
likewise: it would show another model's numbers under this one's name).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import field
from pathlib import Path

from data.datasets import DatasetNotFoundError
from models.registry import ModelNotFoundError
from training.cli import build_parser, check_out_folder, finished_run_config, parse_split_config
from training.finetune import MODES, FinetuneConfig, parse_labels_per_class, pretrained_record


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The grid's own options; everything else is a :class:`FinetuneConfig` option."""

    labels: tuple[str, ...] = field(default=("10", "100", "all"), metadata={
        "flag": "labels", "help": "labels-per-class values (K or 'all')"})
    modes: tuple[str, ...] = field(default=("scratch", "linear", "finetune"), metadata={
        "flag": "mode", "help": f"modes, from {MODES}"})
    out: str = field(default="runs/finetune-grid", metadata={"help": "folder of the grid's runs"})
    report_only: bool = field(default=False, metadata={
        "help": "only rewrite results.md/json and robustness.png from finished runs"})

    def __post_init__(self):
        for k in self.labels:
            parse_labels_per_class(k)
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise ValueError(f"unknown modes {unknown}; expected some of {list(MODES)}")


GRID_FIELDS = {"mode": "--mode", "labels_per_class": "--labels", "out": "--out"}
"""FinetuneConfig fields the grid sets per cell, and the grid's own flag (before ``--``) for each."""


def check_cell_options(base: FinetuneConfig, given=()) -> None:
    """Refuses a field the grid sets per cell (``GRID_FIELDS``) that ``base`` sets: to a value
    other than its default, or at all on the command line (``given``: the fields named after
    ``--``, see :func:`options_given`), since the grid would silently override it.

    Raises:
        ValueError: naming the option after ``--`` and the grid's own flag to use instead.
    """
    defaults = FinetuneConfig()
    for name, flag in GRID_FIELDS.items():
        if name in given or getattr(base, name) != getattr(defaults, name):
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option} {getattr(base, name)} after -- is set by the grid for each "
                             f"cell; give the grid's own {flag} before -- instead")


def options_given(cls, argv, names) -> set[str]:
    """The fields among ``names`` that the command line ``argv`` of ``cls`` sets, whatever the
    value: argparse itself reads ``argv`` (so ``--opt=value`` and the abbreviations it accepts
    count), with defaults that no value can equal."""
    parser = build_parser(cls, "")
    unset = object()
    parser.set_defaults(**dict.fromkeys(names, unset))
    args = vars(parser.parse_args(argv))
    return {name for name in names if args[name] is not unset}


def cell_configs(grid: GridConfig, base: FinetuneConfig) -> list[FinetuneConfig]:
    """One fine-tuning config per (labels per class, mode), each with its own run folder.

    Raises:
        ValueError: ``base`` sets a field the grid sets per cell (see ``GRID_FIELDS``).
    """
    check_cell_options(base)
    return [dataclasses.replace(base, labels_per_class=k, mode=mode, out=str(Path(grid.out) / f"{mode}-k{k}"))
            for k in grid.labels for mode in grid.modes]


def _finished(config: FinetuneConfig) -> dict | None:
    if finished_run_config(config.out, config) is None:
        return None
    return json.loads((Path(config.out) / "metrics.json").read_text())


def _pct(score: dict) -> str:
    return f"{100 * score['mean']:.2f} ± {100 * score['std']:.2f}"


def markdown_report(grid: GridConfig, base: FinetuneConfig, results: dict) -> str:
    """The results as Markdown: accuracy table, then robustness tables per K."""
    modes = list(grid.modes)
    lines = [
        f"# Fine-tuning the DAE encoder: {base.dataset}, model `{base.model}`", "",
        f"Test accuracy (%), mean ± std over {base.seeds} seed(s); pooling `{base.pooling}`, "
        f"at most {base.epochs} epochs (early stopping on validation accuracy).", "",
        "| labels per class | " + " | ".join(modes) + " | pretrained − scratch |",
        "|---" * (len(modes) + 2) + "|",
    ]
    for k in grid.labels:
        cells = [results.get((k, m)) for m in modes]
        row = [_pct(c["test_accuracy"]) if c else "not run" for c in cells]
        gain = ""
        scratch = results.get((k, "scratch"))
        pretrained = [results.get((k, m)) for m in ("finetune", "linear") if results.get((k, m))]
        if scratch and pretrained:
            best = max(c["test_accuracy"]["mean"] for c in pretrained)
            gain = f"{100 * (best - scratch['test_accuracy']['mean']):+.2f}"
        lines.append(f"| {k} | " + " | ".join(row) + f" | {gain} |")
    for k in grid.labels:
        cells = {m: results[(k, m)] for m in modes if (k, m) in results and "robustness" in results[(k, m)]}
        if not cells:
            continue
        settings = list(next(iter(cells.values()))["robustness"])
        lines += ["", f"### Robustness, {k} labels per class: test accuracy (%) on corrupted images", "",
                  "| corruption | " + " | ".join(cells) + " |", "|---" * (len(cells) + 1) + "|"]
        for s in settings:
            lines.append(f"| {s} | " + " | ".join(_pct(c["robustness"][s]) for c in cells.values()) + " |")
    return "\n".join(lines) + "\n"


def robustness_plot(path: Path, grid: GridConfig, results: dict) -> None:
    """Accuracy against corruption level: a row per K, a column per corruption, a line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data.corruption import BENCHMARK_SETTINGS

    names = list(dict.fromkeys(name for name, _ in BENCHMARK_SETTINGS))
    fig, axes = plt.subplots(len(grid.labels), len(names), squeeze=False, sharey=True,
                             figsize=(3.6 * len(names), 2.8 * len(grid.labels)))
    for r, k in enumerate(grid.labels):
        for c, name in enumerate(names):
            ax = axes[r, c]
            levels = [0.0] + [lvl for n, lvl in BENCHMARK_SETTINGS if n == name]
            keys = ["clean"] + [f"{name}:{lvl:g}" for lvl in levels[1:]]
            for mode in grid.modes:
                cell = results.get((k, mode))
                if not cell or "robustness" not in cell:
                    continue
                means = [100 * cell["robustness"][key]["mean"] for key in keys]
                stds = [100 * cell["robustness"][key]["std"] for key in keys]
                ax.errorbar(levels, means, yerr=stds, marker="o", capsize=2, label=mode)
            ax.set_title(f"{name}, K={k}", fontsize=9)
            ax.set_xlabel("level")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel("test accuracy (%)")
    if axes[0, 0].get_legend_handles_labels()[0]:  # no cell with robustness scores: no legend
        axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_grid(grid: GridConfig, base: FinetuneConfig) -> dict:
    """Runs the missing cells, then writes the report. Returns ``{(K, mode): metrics}``."""
    from training.finetune import run

    results = {}
    cells = cell_configs(grid, base)
    check_out_folder(grid.out, [config.out for config in cells], what="the grid")
    # A cell begun from another version of the model is refused, --report-only or not (its numbers
    # are not this model's): before any cell runs or any report is written. A report of a grid
    # whose --model file has moved away since is still written, with a note.
    try:
        for config in cells:
            pretrained_record(config)
    except ModelNotFoundError as err:
        if not grid.report_only:
            raise
        print(f"note: {err}; the cells are reported without checking which version of it they "
              "began from", file=sys.stderr)
    for config in cells:
        metrics = _finished(config)
        if metrics is None and not grid.report_only:
            print(f"== {config.mode}, {config.labels_per_class} labels per class -> {config.out}", flush=True)
            metrics = run(config)
        if metrics is not None:
            results[(config.labels_per_class, config.mode)] = metrics
    out = Path(grid.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown_report(grid, base, results))
    (out / "results.json").write_text(json.dumps(
        {"grid": dataclasses.asdict(grid), "base": dataclasses.asdict(base),
         "cells": [{"labels_per_class": k, "mode": m, **v} for (k, m), v in results.items()]},
        indent=2) + "\n")
    robustness_plot(out / "robustness.png", grid, results)
    return results


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.finetune_grid --help``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    grid, base = parse_split_config(GridConfig, FinetuneConfig, __doc__.split("\n\n")[0], argv)
    after = argv[argv.index("--") + 1:] if "--" in argv else []
    try:
        check_cell_options(base, options_given(FinetuneConfig, after, GRID_FIELDS))
        run_grid(grid, base)
    except (DatasetNotFoundError, ModelNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(grid.out) / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
