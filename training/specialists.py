"""The blind model against single-setting specialists, on the benchmark's protocol.

    python -m training.specialists --blind fashion-mnist --out runs/specialists -- \\
        --dataset fashion_mnist --epochs 20

For every setting (default: the benchmark's 8), trains a *specialist*: the pretraining run of
the options after ``--`` (see ``python -m training.pretrain --help``) with that one corruption
at that one level, in ``OUT/NAME-LEVEL``. Then it scores the blind model and every finished
specialist on the same corrupted test images, with the benchmark's protocol and code
(:mod:`training.benchmark`: the dataset's test split, seeded noise, PSNR with data range 1 and
SSIM averaged per image), and writes ``OUT/results.md`` and ``OUT/results.json`` (with
``--limit N``, ``OUT/results-firstN.*``, beside the full split's report): both scores
and blind − specialist per setting. How far the blind model falls short of each specialist is
the price of one model for every noise.

A finished specialist (``metrics.json`` and the same config, up to how it computed: the run
folder's old name, precision, XLA, distribution) is not trained again, and its row shows the
command it ran; a killed one resumes from its last finished epoch when the same command runs
again; ``--report-only`` trains nothing and scores the finished ones (refused where no specialist
finished with the options given and some folder holds a run of another config: the options
after ``--`` are not the ones they were trained with). A specialist folder that holds a run of
another config shows it in its row. ``--time-limit`` after ``--`` bounds the whole command: each
specialist gets what is left of it, and none starts after one stopped at it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import field
from pathlib import Path

from data.corruption import BENCHMARK_SETTINGS
from data.datasets import DatasetNotFoundError
from models.registry import ModelNotFoundError, resolve_model_path
from training.benchmark import (
    BenchmarkConfig,
    Setting,
    corrupt_images,
    dataset_data,
    evaluate,
    markdown_table,
    model_contender,
    parse_setting,
    write_atomic,
)
from training.bundle import pretrain_command
from training.cli import (
    check_out_folder,
    config_differences,
    config_from_dict,
    finished_run_config,
    parse_split_config,
)
from training.pretrain import PretrainConfig


@dataclasses.dataclass(frozen=True)
class SpecialistsConfig:
    """The comparison's own options; everything else is a :class:`PretrainConfig` option."""

    blind: str = field(default="fashion-mnist", metadata={
        "help": "the blind model: bundled name, run folder or .keras file"})
    setting: tuple[str, ...] = field(
        default=tuple(f"{name}:{level:g}" for name, level in BENCHMARK_SETTINGS),
        metadata={"flag": "setting", "help": "NAME:LEVEL settings, one specialist each"})
    out: str = field(default="runs/specialists", metadata={"help": "folder of the specialists' runs"})
    limit: int = field(default=0, metadata={"help": "score only the first N test images (0: all)"})
    seed: int = field(default=0, metadata={"help": "seed of the test noise (the benchmark's default)"})
    margin: float = field(default=0.5, metadata={
        "help": "the blind model should come within this many dB of each specialist"})
    report_only: bool = field(default=False, metadata={
        "help": "train nothing: score the finished specialists and rewrite the report"})

    def __post_init__(self):
        if not self.setting:
            raise ValueError("at least one --setting is needed")
        for text in self.setting:
            parse_setting(text)
        if self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")


def run_folder(out, setting: Setting) -> Path:
    """``OUT/NAME-LEVEL``, e.g. ``runs/specialists/gaussian-0.1``."""
    return Path(out) / f"{setting.name}-{setting.level:g}"


def specialist_config(base: PretrainConfig, setting: Setting, out) -> PretrainConfig:
    """The pretraining run of ``base`` with this one corruption at this one level."""
    return dataclasses.replace(base, corruptions=(f"{setting.name}:{setting.level!r}",),
                               out=str(run_folder(out, setting)))


# How a run computed, not what it learned from: a finished run that differs only in these (moved
# folder, another precision, XLA, distribution, the time limit it paused at) is the same
# specialist. Its row shows its command.
HOW_FIELDS = ("out", "mixed_precision", "jit", "distribute", "cpu_devices", "time_limit")


def finished(config: PretrainConfig) -> PretrainConfig | None:
    """The saved config of a finished run of this specialist in ``config.out``, else None."""
    saved = finished_run_config(config.out, config, ignore=HOW_FIELDS)
    return None if saved is None else config_from_dict(PretrainConfig, {**saved, "out": config.out})


def other_config(config: PretrainConfig) -> list[str]:
    """The fields (less ``HOW_FIELDS``) in which the run in ``config.out`` differs from this
    specialist, finished or not; empty where the folder holds no run or a run of this config."""
    path = Path(config.out) / "config.json"
    if not path.is_file():
        return []
    return config_differences(json.loads(path.read_text()), config, ignore=HOW_FIELDS)


def train_missing(config: SpecialistsConfig, base: PretrainConfig, started: float | None = None) -> None:
    """Trains (or resumes) every specialist that has not finished, one after the other.

    ``base.time_limit`` (minutes, 0 for none) bounds them all together, counted from
    ``started`` (``time.monotonic()``; now by default): each gets what is left of it, and once
    one stops at its limit, or nothing is left, the others are not started (the same command
    goes on from there, with its whole limit again).
    """
    from training.pretrain import train

    started = time.monotonic() if started is None else started
    todo = [(text, run) for text in config.setting
            if finished(run := specialist_config(base, parse_setting(text), config.out)) is None]
    for i, (text, run) in enumerate(todo):
        if base.time_limit:
            left = base.time_limit - (time.monotonic() - started) / 60
            if left <= 0:
                print(f"time limit: {base.time_limit:g} min spent; not starting the specialists "
                      f"{', '.join(t for t, _ in todo[i:])}; the same command goes on from there",
                      flush=True)
                return
            # 3 significant digits, for the printed command; never 0, which would be no limit.
            run = dataclasses.replace(run, time_limit=float(f"{left:.3g}"))
        print(f"== specialist {text}: {pretrain_command(run)}", flush=True)
        train(run)
        if base.time_limit and finished(run) is None and todo[i + 1:]:  # stopped at its time limit
            print(f"time limit: specialist {text} stopped at the {base.time_limit:g} min of this command; "
                  f"not starting the specialists {', '.join(t for t, _ in todo[i + 1:])}; "
                  "the same command goes on from there", flush=True)
            return


def check_report_matches(config: SpecialistsConfig, base: PretrainConfig) -> None:
    """For ``--report-only``: refuses options after ``--`` that no specialist was trained with,
    where some folder holds a run of another config (its report would show none of them).

    Raises:
        ValueError: naming each folder's differing fields.
    """
    others, found = [], False
    for text in config.setting:
        run = specialist_config(base, parse_setting(text), config.out)
        found = found or finished(run) is not None
        if diff := other_config(run):
            others.append(f"{run.out} (differs in: {', '.join(diff)})")
    if others and not found:
        raise ValueError("--report-only: no specialist finished with the options given after --, and "
                         f"these folders hold runs of another config: {'; '.join(others)}; give the "
                         "options they were trained with (see their config.json), or another --out")


def score(config: SpecialistsConfig, base: PretrainConfig) -> dict:
    """Scores the blind model and each finished specialist on the same corrupted test images."""
    data = dataset_data(BenchmarkConfig(dataset=base.dataset, data_dir=base.data_dir,
                                        limit=config.limit, seed=config.seed))
    blind = model_contender(config.blind)
    settings = {}
    for text in config.setting:
        setting = parse_setting(text)
        run = specialist_config(base, setting, config.out)
        saved = finished(run)
        row = {"run": run.out, "command": pretrain_command(saved or run), "trained": saved is not None}
        if saved is None and (diff := other_config(run)):
            row["other_config"] = diff
        noisy = corrupt_images(data.test, setting, config.seed)
        # Scores only (the report gives no seconds): no untimed warm-up pass over the test split.
        row["blind"] = evaluate(blind, {}, data.test, noisy, warm_up=False)
        if saved is not None:
            metrics = json.loads((Path(run.out) / "metrics.json").read_text())
            row["specialist"] = evaluate(model_contender(run.out), {}, data.test, noisy, warm_up=False)
            row["epochs_run"], row["train_seconds"] = metrics["epochs_run"], metrics["train_seconds"]
            row["gap_db"] = round(row["blind"]["psnr"] - row["specialist"]["psnr"], 3)
        settings[setting.label] = row
        specialist = (f"{row['specialist']['psnr']:6.2f} dB ({row['gap_db']:+.2f})" if saved
                      else not_trained(row))
        print(f"{setting.label:>16}: blind {row['blind']['psnr']:6.2f} dB, specialist {specialist}",
              file=sys.stderr, flush=True)
    return {"config": dataclasses.asdict(config), "base": dataclasses.asdict(base),
            "test": data.description["test"], "blind": blind.about | {"name": blind.name},
            "settings": settings}


def not_trained(row: dict) -> str:
    """What a row without a finished specialist says: "not trained", or that its folder holds a
    run of another config (and in which fields)."""
    if row.get("other_config"):
        return f"other config (differs in: {', '.join(row['other_config'])})"
    return "not trained"


def markdown_report(report: dict) -> str:
    """The comparison as Markdown: one row per setting, then the commands."""
    margin = report["config"]["margin"]
    rows = []
    for label, row in report["settings"].items():
        blind = row["blind"]
        if row["trained"]:
            spec, gap = row["specialist"], row["gap_db"]
            rows.append([label, f"{blind['psnr']:.2f}", f"{spec['psnr']:.2f}", f"{gap:+.2f}",
                         "yes" if gap >= -margin else "**no**", f"{blind['ssim']:.3f}",
                         f"{spec['ssim']:.3f}", f"{row['epochs_run']}, {row['train_seconds'] / 60:.0f} min"])
        else:
            rows.append([label, f"{blind['psnr']:.2f}", not_trained(row), "", "",
                         f"{blind['ssim']:.3f}", "", ""])
    header = ["setting", "blind PSNR", "specialist PSNR", "blind − specialist",
              f"within {margin:g} dB", "blind SSIM", "specialist SSIM", "specialist epochs, time"]
    commands = [f"- {label}: `{row['command']}`" for label, row in report["settings"].items()]
    return "\n".join([
        f"Blind model `{report['blind']['name']}` against single-setting specialists, "
        f"{report['test']}, noise seed {report['config']['seed']} (PSNR in dB, SSIM).", "",
        markdown_table(header, rows), "",
        "Each specialist is the pretraining command below, run folder included:", "", *commands,
    ]) + "\n"


def run(config: SpecialistsConfig, base: PretrainConfig) -> dict:
    """Trains the missing specialists (unless ``report_only``), scores, writes the report."""
    started = time.monotonic()
    check_out_folder(config.out, [specialist_config(base, parse_setting(text), config.out).out
                                  for text in config.setting])
    if base.dataset.startswith("folder:"):
        raise ValueError("specialists are scored on a named dataset's test split; for photo "
                         "models pass each run to python -m training.benchmark --images DIR")
    resolve_model_path(config.blind)  # a wrong --blind fails now, not after hours of training
    if config.report_only:
        check_report_matches(config, base)  # before the scoring: a refusal leaves the report as it was
    else:
        train_missing(config, base, started)
    report = score(config, base)
    write_atomic(str(results_path(config, ".json")), json.dumps(report, indent=2) + "\n")
    write_atomic(str(results_path(config, ".md")), markdown_report(report))
    return report


def results_path(config: SpecialistsConfig, suffix: str) -> Path:
    """Where the report goes: ``results`` for the full test split, ``results-firstN`` for
    ``--limit N`` (so a quick check never replaces the full split's report)."""
    stem = f"results-first{config.limit}" if config.limit else "results"
    return Path(config.out) / f"{stem}{suffix}"


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.specialists --help``."""
    config, base = parse_split_config(SpecialistsConfig, PretrainConfig, __doc__.split("\n\n")[0], argv)
    try:
        run(config, base)
    except (DatasetNotFoundError, ModelNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(results_path(config, ".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
