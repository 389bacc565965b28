"""Ships a finished run as a bundled model: ``models/bundled/NAME.keras`` and its card.

    python -m training.bundle runs/fmnist-blind --name fashion-mnist \\
        --description "Blind Fashion-MNIST denoiser"
    python -m training.bundle --table          # the README's table, from every card

Shipping a run under the name of a bundled model replaces it only with ``--replace`` (the card's
description is kept unless a new one is given).

The card records the exact command that trained the model, its config, the machine and Keras
backend that trained it and for how long, the input convention the engine must follow, and the
model's PSNR on the dataset's test split (or on ``--eval-images DIR`` for photo models) at the
fixed benchmark grid.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from data.corruption import BENCHMARK_SETTINGS
from data.datasets import DatasetNotFoundError
from data.images import atomic_write_json
from models.registry import BUNDLED_DIR, bundled_models, load_model, save_model
from training.cli import load_config
from training.evaluation import evaluate_denoiser
from training.pretrain import PretrainConfig


def pretrain_command(config: PretrainConfig, backend: str = "tensorflow") -> str:
    """The ``python -m training.pretrain`` command line that reproduces ``config``.

    The dataset, corruptions, epochs and run folder are always spelled out (defaults can
    change); other options only where they differ from their default. A run trained on
    another Keras backend gets its ``KERAS_BACKEND=...`` prefix.
    """
    always = {"dataset", "corruptions", "epochs", "out"}
    parts = ["python", "-m", "training.pretrain"]
    for name, value in vars(config).items():
        default = PretrainConfig.__dataclass_fields__[name].default
        if value is None or (value == default and name not in always):
            continue
        flag = "--" + PretrainConfig.__dataclass_fields__[name].metadata.get("flag", name).replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple) and name == "corruptions":
            for item in value:
                parts += [flag, item]
        elif isinstance(value, tuple):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    prefix = "" if backend == "tensorflow" else f"KERAS_BACKEND={backend} "
    return prefix + shlex.join(parts)


def _data_source(config: PretrainConfig) -> str:
    """Which files the run read, as far as the config tells."""
    if config.dataset.startswith("folder:"):
        return f"the images under {config.dataset[len('folder:'):]}"
    where = config.data_dir or "the default places (README: Where the datasets come from)"
    return f"the {config.dataset} files in {where}"


def test_scores(model, config: PretrainConfig, eval_images: str | None, limit: int) -> dict:
    """PSNR on the test split (named datasets) or on a separate folder of clean photos."""
    from data.datasets import load_folder_images, load_named
    from data.images import to_model

    if eval_images:  # the photo benchmark's settings, noise and scoring (training.benchmark)
        from app.engine import denoise_many
        from training.benchmark import corrupt_images, default_settings, score

        images, _ = load_folder_images(eval_images, channels=model.channels)
        clean = [to_model(im) for im in images[: limit or None]]
        scores = {}
        for setting in default_settings(photos=True):
            noisy = corrupt_images(clean, setting, seed=0)
            denoised = [r.output for r in denoise_many(noisy, model)]
            scores[setting.label] = {key: round(float(np.mean(score(clean, est)[0])), 3)
                                     for key, est in (("noisy_psnr", noisy), ("denoised_psnr", denoised))}
        return {"split": f"photos in {eval_images}", "images": len(clean), "psnr": scores}
    if config.dataset.startswith("folder:"):
        raise ValueError(f"the run trained on {config.dataset}, which has no test split: "
                         "--eval-images DIR names a folder of clean test photos to score it on")
    data = load_named(config.dataset, config.data_dir)
    clean = to_model(data.x_test[: limit or None])
    denoise_batch = lambda batch: model.predict(batch, batch_size=256, verbose=0)  # noqa: E731
    psnr = evaluate_denoiser(denoise_batch, clean, BENCHMARK_SETTINGS, seed=0)
    return {"split": f"{config.dataset} test", "images": int(len(clean)), "psnr": psnr}


CPU_MACHINE = f"{platform.machine()} CPU, 2 cores (no GPU)"
"""What trained runs whose ``metrics.json`` predates its ``machine`` field: this machine."""


def bundle(run_dir: Path, name: str, description: str, eval_images: str | None = None,
           limit: int = 0, data_note: str = "", machine: str = "", backend: str = "") -> dict:
    """Copies ``run_dir/model.keras`` into the bundle and writes its card. Returns the card.

    ``machine`` and ``backend`` name what trained the run where its ``metrics.json`` does not
    (runs older than that field, or trained elsewhere).
    """
    config, metrics = finished_pretraining(run_dir)
    machine = machine or metrics.get("machine", CPU_MACHINE)
    backend = backend or metrics.get("backend", "tensorflow")
    model = load_model(run_dir)
    card = {
        "name": name,
        "description": description,
        "channels": model.channels,
        "stride": model.stride,
        "input": {"dtype": "float32", "range": [0.0, 1.0], "layout": "HWC",
                  "colour": "grey" if model.channels == 1 else "RGB"},
        "training": {
            "command": pretrain_command(config, backend),
            "dataset": config.dataset,
            "data": data_note or _data_source(config),
            "corruptions": list(config.corruptions),
            "epochs_run": metrics["epochs_run"],
            "train_seconds": metrics["train_seconds"],
            "machine": machine,
        },
        "config": json.loads((run_dir / "config.json").read_text()),
        "parameters": int(model.count_params()),
        "scores": test_scores(model, config, eval_images, limit),
    }
    BUNDLED_DIR.mkdir(parents=True, exist_ok=True)
    # Both files are written whole, then renamed over the old ones: never half a bundle.
    save_model(model, BUNDLED_DIR / f"{name}.keras")  # loaded without compiling: no optimizer state
    atomic_write_json(BUNDLED_DIR / f"{name}.json", card, ensure_ascii=False)
    return card


def finished_pretraining(run_dir: Path) -> tuple[PretrainConfig, dict]:
    """``(config, metrics)`` of a finished pretraining run; ``ValueError`` saying why not."""
    for name in ("config.json", "model.keras", "metrics.json"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir} is not a finished pretraining run: it has no {name}")
    if (run_dir / "backup").is_dir():
        raise ValueError(f"{run_dir} is not a finished pretraining run: it stopped at its --time-limit "
                         "(backup/ is kept to go on); run the same command again with more time")
    try:
        config = load_config(PretrainConfig, run_dir / "config.json")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{run_dir} is not a pretraining run ({err})") from err
    return config, json.loads((run_dir / "metrics.json").read_text())


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def cards_table(folder: Path = BUNDLED_DIR) -> str:
    """Markdown tables of the bundled models, made from their cards alone.

    One table describes every model; then, per model, its test scores (mean PSNR of the
    corrupted input and of the model's output, noise seed 0) at each setting of its card.
    """
    files = bundled_models(folder)
    cards = [json.loads(path.with_suffix(".json").read_text()) for path in files.values()]
    lines = ["| model | what it denoises | input | parameters | file | trained on | epochs | training time |",
             "|---|---|---|---|---|---|---|---|"]
    for card in cards:
        size = files[card["name"]].stat().st_size / 1e6
        train = card["training"]
        lines.append(
            f"| `{card['name']}` | {card['description']} | {card['input']['colour']}, "
            f"stride {card['stride']} | {card['parameters']:,} | {size:.1f} MB | "
            f"`{train['dataset']}` | {train['epochs_run']} | {_duration(train['train_seconds'])} "
            f"({train['machine']}) |")
    for card in cards:
        scores = card["scores"]
        settings = list(scores["psnr"])
        lines += ["", f"`{card['name']}` on {scores['split']} ({scores['images']} images), "
                      "PSNR in dB, corrupted input → denoised:", "",
                  "| " + " | ".join(settings) + " |", "|" + "---|" * len(settings),
                  "| " + " | ".join(f"{scores['psnr'][k]['noisy_psnr']:.2f} → "
                                    f"**{scores['psnr'][k]['denoised_psnr']:.2f}**" for k in settings) + " |"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown table of every bundled model's card, and exit")
    parser.add_argument("--name")
    parser.add_argument("--description", default="",
                        help="the card's one-line description (kept from the old card on --replace)")
    parser.add_argument("--replace", action="store_true",
                        help="ship the run in place of the bundled model of that name")
    parser.add_argument("--eval-images", help="folder of clean test photos (for folder-trained models)")
    parser.add_argument("--limit", type=int, default=0, help="score only this many test images")
    parser.add_argument("--data-note", default="", help="where the training data came from, for the card")
    parser.add_argument("--machine", default="",
                        help="what trained the run, where its metrics.json does not say")
    parser.add_argument("--backend", default="", choices=("", "tensorflow", "jax"),
                        help="the Keras backend that trained it, where its metrics.json does not say")
    args = parser.parse_args(argv)
    if args.table:
        print(cards_table())
        return 0
    if args.run_dir is None or not args.name:
        parser.error("a run folder and --name are needed (or --table)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        parser.error(f"--name must be letters, digits, '.', '_' or '-' (a file name in "
                     f"{BUNDLED_DIR}), got {args.name!r}")
    old = BUNDLED_DIR / f"{args.name}.json"
    description = args.description or (json.loads(old.read_text()).get("description", "")
                                       if old.is_file() else "")
    try:
        if (BUNDLED_DIR / f"{args.name}.keras").exists() and not args.replace:
            raise ValueError(f"{BUNDLED_DIR / args.name}.keras exists: --replace to ship this run in "
                             "its place, or choose another --name")
        # bundle() checks the run folder first, before the scoring, which takes minutes; it
        # writes nothing until the scores are in, so a missing dataset or --eval-images folder
        # (DatasetNotFoundError) leaves the bundle as it was.
        card = bundle(args.run_dir, args.name, description, args.eval_images, args.limit,
                      args.data_note, args.machine, args.backend)
    except (ValueError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(card["scores"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
