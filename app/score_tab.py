"""The "Score field" tab: the DAE as a score estimator, on 2-D data (see ``docs/score.md``).

Pick a dataset and a noise level σ; the tab shows the vector field r(x) − x that a small MLP
DAE learned, beside the true σ²∇ log p_σ, the DAE Markov chain settling onto the data, and the
measured agreement. Each (dataset, σ) trains once, briefly (about 10-20 s on 2 CPU cores), in a
run folder under ``runs/score-ui/``; later requests read that folder.

The main UI calls :func:`build_score_tab` inside its ``gr.Blocks`` / ``gr.Tab``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from pathlib import Path

import gradio as gr

from data.toy2d import DATASETS
from training.score import ScoreConfig, cached_run

CACHE_DIR = Path(__file__).resolve().parent.parent / "runs" / "score-ui"
SIGMAS = (0.05, 0.1, 0.2, 0.5)
UI_CONFIG = ScoreConfig(steps=1000, eval_points=1000, chain_steps=50)
"""Shorter than the CLI's default run: 1000 steps reach cosine > 0.99 on the mixture at σ = 0.1,
and 1000 evaluation points keep the cosine's standard error under 0.01."""

_PROGRESS = gr.Progress()  # Gradio injects a live tracker in place of this default
_TRAINING = threading.Lock()  # one training at a time: the CPU is small, and runs share folders


def score_config(dataset: str, sigma) -> ScoreConfig:
    """The config (and cache folder) the tab uses for ``dataset`` at noise ``sigma``."""
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    given = sigma
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        sigma = None
    if sigma not in SIGMAS:
        raise ValueError(f"σ must be one of {', '.join(map(str, SIGMAS))}, got {given!r}")
    config = dataclasses.replace(UI_CONFIG, dataset=dataset, sigma=sigma, out="")
    # The folder name carries a digest of the settings, so a change of UI_CONFIG never meets
    # a stale folder (which the run would refuse to overwrite).
    digest = hashlib.sha1(json.dumps(dataclasses.asdict(config), sort_keys=True).encode()).hexdigest()
    return dataclasses.replace(config, out=str(CACHE_DIR / f"{dataset}-sigma{sigma:g}-{digest[:8]}"))


def metrics_markdown(metrics: dict) -> str:
    """The run's headline numbers as a Markdown table and two lines of prose."""
    labels = {"vs_training_set": "its training set's smoothed score",
              "vs_blurred": "true blurred score σ²∇log p_σ",
              "vs_unblurred": "unblurred score σ²∇log p"}
    rows = ["| r(x) − x against | mean cosine | norm error |", "|---|---|---|"]
    for key, label in labels.items():
        if key in metrics["score"]:
            s = metrics["score"][key]
            rows.append(f"| {label} | {s['cosine']:.3f} | {s['norm_error']:.1%} |")
    dae, true = metrics["structure"]["dae"], metrics["structure"]["true"]
    medial = ("" if dae["medial_norm"] is None else
              f", {dae['medial_norm']:.2f} midway between arms or modes (true {true['medial_norm']:.2f})")
    chain = metrics["chain"]
    return "\n".join(rows) + (
        f"\n\n**Field size / σ**: {dae['on_manifold_norm']:.2f} on the data (true "
        f"{true['on_manifold_norm']:.2f}), {dae['off_manifold_norm']:.2f} at distance σ (true "
        f"{true['off_manifold_norm']:.2f}){medial}. Off the data, the field points within 45° "
        f"of the nearest data point at {dae['toward_nearest']:.1%} of the points."
        f"\n\n**Markov chain** ({chain['steps']} steps from noise): mean distance to the data "
        f"{chain['start_distance']:.3f} → {chain['sample_distance']:.3f} (real data "
        f"{chain['data_distance']:.3f}). Trained on {metrics['train_size']} points in "
        f"{metrics['train_seconds']} s.")


def show_score(dataset, sigma, progress=_PROGRESS):
    """Event handler: trains (or reads) the run for ``dataset``/``sigma`` and shows it.

    Returns:
        ``(quiver PNG path, chain PNG path, Markdown metrics)``.
    """
    try:
        config = score_config(dataset, sigma)
    except ValueError as err:
        raise gr.Error(str(err)) from None
    progress(0, desc=f"training a DAE on {dataset} at σ = {config.sigma:g} (cached afterwards)")
    with _TRAINING:
        try:
            metrics = cached_run(config)
        except (ValueError, OSError) as err:
            raise gr.Error(f"could not train the {dataset} DAE: {err}") from None
    out = Path(config.out)
    return str(out / "quiver.png"), str(out / "chain.png"), metrics_markdown(metrics)


def build_score_tab(concurrency: int = 1):
    """Creates the tab's components and events in the current ``gr.Blocks`` context.

    ``concurrency``: the main UI's engine slots (Gradio gives a shared ``concurrency_id`` the
    smallest limit of its events, so this event must carry the same one).

    Returns:
        The components, by name (for tests and for the main UI to wire further).
    """
    gr.Markdown(
        "A denoising autoencoder trained with Gaussian noise of std σ and squared error learns "
        "r(x) ≈ E[x | x + noise], so **r(x) − x ≈ σ²∇ log p_σ(x)** (Tweedie's formula; Vincent, "
        "2011): it points toward the data. While σ is small next to the gaps between arms or "
        "modes, it also vanishes on the data and midway between them; at σ = 0.5 they blur "
        "together and the zeros move (the *true* sizes below show by how much).")
    with gr.Row():
        dataset = gr.Dropdown(choices=list(DATASETS), value="spiral", label="2-D dataset")
        sigma = gr.Radio(choices=list(SIGMAS), value=0.1, label="noise σ (data at unit spread)")
        button = gr.Button("Train and show", variant="primary")
    quiver = gr.Image(type="filepath", label="learned field r(x) − x and true σ²∇log p_σ",
                      interactive=False)
    chain = gr.Image(type="filepath", label="DAE Markov chain x ← r(x + σε)", interactive=False)
    metrics = gr.Markdown()
    # Training shares the UI's one engine slot, so it never competes with denoising for the CPU.
    button.click(show_score, [dataset, sigma], [quiver, chain, metrics], api_name="score_field",
                 concurrency_id="engine", concurrency_limit=concurrency)
    return {"dataset": dataset, "sigma": sigma, "button": button, "quiver": quiver,
            "chain": chain, "metrics": metrics}
