"""The DAE as a score estimator: a learned vector field on 2-D data against the true score.

    python -m training.score --dataset mixture --sigma 0.1 --out runs/score-mixture
    python -m training.score --dataset mixture --sweep --out runs/score-sweep

A small MLP DAE (:class:`models.mlp_dae.MLPDAE`) is trained on Gaussian corruption of std σ
with squared error, so r(x̃) estimates E[x | x̃] = x̃ + σ²∇ log p_σ(x̃) (Tweedie's formula) and
r(x) − x estimates σ²∇ log p_σ(x), the score of the data blurred by the noise (Vincent 2011;
Alain & Bengio 2013 give the small-σ limit r(x) − x = σ²∇ log p(x) + o(σ²)).
A run writes its folder: ``config.json``, ``model.keras``, ``metrics.json``, ``quiver.png``
(the learned field over the density, beside the true one) and ``chain.png`` (the DAE Markov
chain settling onto the data).

``--sweep`` trains one DAE per (σ, training-set size) in ``--sweep-sigma`` x ``--sweep-sizes``,
each in its own sub-folder, and prints how well r(x) − x matches three targets: the smoothed
score of its own training set (what a DAE can be consistent for), the true blurred score
σ²∇ log p_σ, and the unblurred σ²∇ log p (mixture only). It writes ``sweep.json`` and
``sweep.png``.

Measures (all over held-out points x drawn from p_σ unless said otherwise):

- ``cosine``: mean over points of cos(r(x) − x, target(x)).
- ``norm_error``: mean |‖r(x) − x‖ − ‖target‖| / mean ‖target‖ (relative error of the norms).
- ``relative_l2``: √(Σ‖r(x) − x − target‖² / Σ‖target‖²).
- structure (for the learned and the true field alike): mean ‖field‖/σ on the manifold (curve
  points; the mixture's means), at distance σ from it along the normal, and at the medial
  points midway between arms (density minima); the fraction of points from p_σ farther than
  σ/2 from the manifold whose field is within 45° of the direction to the nearest manifold
  point.
- chain: x₀ ~ N(0, I) (noise of the data's spread), x ← r(x + σε) for ``--chain-steps``;
  the mean distance of the samples to the manifold (curve; nearest mixture mean) next to that
  of real data, and the total-variation distance between how samples and data spread over
  the manifold's regions (mixture components; ten stretches of arc length).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import field
from pathlib import Path

import numpy as np

from data.images import atomic_write_bytes, atomic_write_json
from data.toy2d import DATASETS, check_sigma, corrupt_points, make_dataset, smoothed_score
from models.registry import save_model
from training.cli import finished_run_config, parse_config

_COS45 = math.cos(math.pi / 4)


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """Everything a score run depends on; saved as the run's ``config.json``."""

    dataset: str = field(default="mixture", metadata={
        "choices": tuple(DATASETS), "help": "2-D dataset, all scaled to unit spread"})
    sigma: float = field(default=0.1, metadata={
        "help": "std of the Gaussian corruption, from 0.01 to 1 (data at unit spread)"})
    train_size: int = field(default=20000, metadata={
        "help": "training points; 20000 makes the training set's smoothed score close to p_σ's"})
    steps: int = field(default=1500, metadata={
        "help": "training steps (rounded up to whole epochs of 100); 1500 takes ~10 s on 2 cores"})
    batch_size: int = field(default=512, metadata={
        "help": "large batches average the target's noise, whose variance is near the signal's"})
    learning_rate: float = field(default=3e-3, metadata={
        "help": "peak Adam learning rate, cosine-decayed to zero over the run"})
    widths: tuple[int, ...] = field(default=(128,), metadata={
        "help": "hidden widths of the encoder (the decoder mirrors them)"})
    code: int = field(default=128, metadata={"help": "size of the code h = f(x̃)"})
    activation: str = field(default="relu", metadata={
        "help": "hidden activation; silu and tanh stalled at the identity in short runs"})
    eval_points: int = field(default=2000, metadata={
        "help": "held-out points from p_σ the metrics average over (cosine s.e. < 0.01)"})
    chain_steps: int = field(default=100, metadata={"help": "steps of the DAE Markov chain"})
    chain_points: int = field(default=1000, metadata={"help": "parallel chains"})
    seed: int = field(default=0, metadata={"help": "seeds data, noise, initialisation and chain"})
    sweep: bool = field(default=False, metadata={
        "help": "train one DAE per --sweep-sigma x --sweep-sizes and print the tables"})
    sweep_sigmas: tuple[str, ...] = field(default=("0.5", "0.2", "0.1", "0.05"), metadata={
        "flag": "sweep_sigma", "help": "a σ of the sweep"})
    sweep_sizes: tuple[int, ...] = field(default=(300, 3000, 30000), metadata={
        "help": "training-set sizes of the sweep"})
    out: str = field(default="runs/score", metadata={"help": "run folder"})

    def __post_init__(self):
        # Everything is checked here, before a run folder is made: a bad flag leaves nothing
        # behind that the corrected command would then refuse as a different config.
        from models.mlp_dae import check_architecture

        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {sorted(DATASETS)}")
        check_sigma(self.sigma)
        for name in ("train_size", "steps", "batch_size", "learning_rate", "eval_points",
                     "chain_points"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.chain_steps < 0:
            raise ValueError(f"chain_steps must be >= 0, got {self.chain_steps}")
        check_architecture(2, self.widths, self.code, self.activation)
        for text in self.sweep_sigmas:
            check_sigma(text, "each sweep sigma")
        if not self.sweep_sizes or min(self.sweep_sizes) < 1:
            raise ValueError(f"sweep sizes must be >= 1, got {self.sweep_sizes}")

    @property
    def sigmas(self) -> list[float]:
        """The sweep's σ values as floats."""
        return [float(text) for text in self.sweep_sigmas]


# --- measures ---------------------------------------------------------------------------------

def _row_cosine(a, b):
    """cos between matching rows of ``a`` and ``b``; 0 where either vector is zero."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(1)
    return np.where((na > 0) & (nb > 0), dot / np.maximum(na * nb, 1e-300), 0.0)


def field_agreement(field, target) -> dict:
    """How well a vector field matches a target field at the same points.

    Args:
        field: ``(N, 2)`` vectors, e.g. r(x) − x.
        target: ``(N, 2)`` vectors, e.g. σ²∇ log p_σ(x).

    Returns:
        ``cosine`` (mean cos per point), ``norm_error`` (mean |‖field‖ − ‖target‖| over
        mean ‖target‖) and ``relative_l2`` (√(Σ‖field − target‖² / Σ‖target‖²)).
    """
    field, target = np.asarray(field, np.float64), np.asarray(target, np.float64)
    if field.shape != target.shape or field.ndim != 2:
        raise ValueError(f"field and target must be matching (N, D) arrays, got {field.shape}, "
                         f"{target.shape}")
    nf, nt = np.linalg.norm(field, axis=1), np.linalg.norm(target, axis=1)
    return {
        "cosine": float(_row_cosine(field, target).mean()),
        "norm_error": float(np.abs(nf - nt).mean() / nt.mean()),
        "relative_l2": float(np.sqrt(((field - target) ** 2).sum() / (nt ** 2).sum())),
    }


def structure_measures(field_fn, data, sigma: float, points, seed: int) -> dict:
    """Where a field vanishes and where it points: see the module docstring.

    Args:
        field_fn: maps points ``(N, 2)`` to field vectors ``(N, 2)``.
        data: a dataset of :data:`data.toy2d.DATASETS`.
        sigma: the noise std (the unit of distances and norms here).
        points: points drawn from p_σ.
        seed: seeds the on- and off-manifold points.
    """
    on = data.manifold_points(1000, [seed, 3])
    off = data.offset_points(1000, sigma, [seed, 4])
    norm = lambda x: float(np.linalg.norm(field_fn(x), axis=1).mean() / sigma)  # noqa: E731
    medial = data.medial_points(sigma)
    on_norm, off_norm = norm(on), norm(off)
    medial_norm = norm(medial) if len(medial) else None  # None: no minima, the arms merged
    distance, _, nearest = data.nearest(points)
    away = distance > sigma / 2
    # None where no point lies that far out (a handful of --eval-points can leave none).
    toward = _row_cosine(field_fn(points[away]), nearest[away] - points[away]) if away.any() else None
    return {
        "on_manifold_norm": on_norm,
        "off_manifold_norm": off_norm,
        "vanish_ratio": on_norm / off_norm,
        "medial_norm": medial_norm,
        "medial_ratio": None if medial_norm is None else medial_norm / off_norm,
        "medial_points": int(len(medial)),
        "toward_nearest": None if toward is None else float((toward > _COS45).mean()),
        "toward_cosine": None if toward is None else float(toward.mean()),
        "away_points": int(away.sum()),
    }


def manifold_stats(data, points, reference) -> dict:
    """Distance of ``points`` to the manifold and how they spread over its regions.

    Returns:
        ``distance`` (mean), ``distance_median`` and ``coverage_tv``: the total-variation
        distance between the region histograms of ``points`` and of ``reference`` (data).
    """
    distance, position, _ = data.nearest(points)
    hist = lambda pos: np.bincount(np.minimum((pos * data.regions).astype(int), data.regions - 1),  # noqa: E731
                                   minlength=data.regions) / len(pos)
    tv = 0.5 * np.abs(hist(position) - hist(data.nearest(reference)[1])).sum()
    return {"distance": float(distance.mean()), "distance_median": float(np.median(distance)),
            "coverage_tv": float(tv)}


def run_chain(denoise, data, sigma: float, steps: int, n: int, seed: int):
    """The DAE Markov chain from noise: x₀ ~ N(0, I), x ← r(x + σε).

    Returns:
        ``(metrics, snapshots)``; snapshots maps a step to the chain's points then.
    """
    rng = np.random.default_rng([seed, 5])
    x = rng.standard_normal((n, 2))
    keep = sorted({0, 1, min(5, steps), steps})
    snapshots = {0: x}
    for t in range(1, steps + 1):
        x = denoise(x + sigma * rng.standard_normal(x.shape))
        if t in keep:
            snapshots[t] = x
    reference = data.sample(n, [seed, 6])
    start, samples = manifold_stats(data, snapshots[0], reference), manifold_stats(data, x, reference)
    real = manifold_stats(data, data.sample(n, [seed, 7]), reference)
    metrics = {
        "steps": steps, "points": n,
        "start_distance": start["distance"],
        "sample_distance": samples["distance"],
        "sample_distance_median": samples["distance_median"],
        "data_distance": real["distance"],
        "sample_within_sigma": float((data.nearest(x)[0] < sigma).mean()),
        "coverage_tv": samples["coverage_tv"],
        "data_coverage_tv": real["coverage_tv"],
    }
    return metrics, snapshots


# --- training ---------------------------------------------------------------------------------

def points_dataset(points, sigma: float, batch_size: int, seed: int):
    """Endless ``(x̃, x)`` batches: reshuffled points, fresh corruption drawn for every batch."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(points.astype(np.float32))
    ds = ds.shuffle(len(points), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(lambda x, s: (corrupt_points(x, sigma, s), x))
    return ds.prefetch(tf.data.AUTOTUNE)


def train_dae(config: ScoreConfig, points):
    """Trains an :class:`MLPDAE` on ``points``. Returns ``(model, loss history, seconds)``."""
    import keras

    from models.mlp_dae import MLPDAE

    keras.utils.set_random_seed(config.seed)
    per_epoch = min(config.steps, 100)
    epochs = math.ceil(config.steps / per_epoch)
    model = MLPDAE(widths=config.widths, code=config.code, activation=config.activation,
                   name="mlp_dae")
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, epochs * per_epoch)
    # Several steps per call: the model is tiny and Python overhead would dominate.
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=model.loss_function(),
                  steps_per_execution=math.gcd(per_epoch, 50))
    started = time.time()
    history = model.fit(points_dataset(points, config.sigma, config.batch_size, config.seed),
                        steps_per_epoch=per_epoch, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"], time.time() - started


def reconstruct(model, x) -> np.ndarray:
    """r(x) for points ``(N, 2)``, as float64."""
    return np.asarray(model(np.asarray(x, np.float32), training=False), np.float64)


def evaluate(model, data, config: ScoreConfig, train_points, full: bool = True) -> dict:
    """Scores r(x) − x against the targets; ``full`` adds the structure and chain measures."""
    sigma = config.sigma
    rng = np.random.default_rng([config.seed, 2])
    x = data.sample(config.eval_points, [config.seed, 1]) + sigma * rng.standard_normal(
        (config.eval_points, 2))
    learned = reconstruct(model, x) - x
    blurred = sigma ** 2 * data.score(x, sigma)
    score = {
        "vs_training_set": field_agreement(learned, sigma ** 2 * smoothed_score(x, train_points, sigma)),
        "vs_blurred": field_agreement(learned, blurred),
    }
    if isinstance(data, DATASETS["mixture"]):  # only the mixture has a finite unblurred score
        unblurred = sigma ** 2 * data.score(x, 0.0)
        score["vs_unblurred"] = field_agreement(learned, unblurred)
        score["blurred_vs_unblurred"] = field_agreement(blurred, unblurred)
    metrics = {"score": score}
    if full:
        field_fns = {"dae": lambda p: reconstruct(model, p) - p,
                     "true": lambda p: sigma ** 2 * data.score(p, sigma)}
        metrics["structure"] = {name: structure_measures(fn, data, sigma, x, config.seed)
                                for name, fn in field_fns.items()}
    return metrics


# --- pictures ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Saves a figure as a 256-colour PNG (a third of the size; the plots are flat colours)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    _pyplot().close(fig)
    png = io.BytesIO()
    Image.open(buffer).convert("RGB").quantize(256).save(png, format="png", optimize=True)
    atomic_write_bytes(path, png.getvalue())


def _box(data, sigma):
    pts = data.sample(4000, [0, 9])
    pad = max(3 * sigma, 0.3)
    lo, hi = pts.min(0) - pad, pts.max(0) + pad
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    return centre - half, centre + half


def save_quiver(path: Path, model, data, sigma: float, arrows: int = 29) -> None:
    """The learned field r(x) − x and the true σ²∇ log p_σ over p_σ, side by side."""
    plt = _pyplot()
    lo, hi = _box(data, sigma)
    fine = np.stack(np.meshgrid(*[np.linspace(lo[i], hi[i], 160) for i in (0, 1)]), -1).reshape(-1, 2)
    density = np.exp(data.log_density(fine, sigma)).reshape(160, 160)
    grid = np.stack(np.meshgrid(*[np.linspace(lo[i], hi[i], arrows) for i in (0, 1)]), -1).reshape(-1, 2)
    fields = {"DAE  r(x) − x": reconstruct(model, grid) - grid,
              "true  σ²∇log p_σ(x)": sigma ** 2 * data.score(grid, sigma)}
    spacing = (hi[0] - lo[0]) / (arrows - 1)
    # One scale for both panels: a field of size σ (its size at distance σ from a curve) is drawn
    # half a grid spacing long; longer arrows, far from the data, are capped at 1.2 spacings.
    unit = sigma / (0.5 * spacing)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, (title, vec) in zip(axes, fields.items(), strict=True):
        ax.imshow(density, origin="lower", cmap="Blues", extent=(lo[0], hi[0], lo[1], hi[1]))
        drawn = np.linalg.norm(vec, axis=1, keepdims=True) / unit
        shown = vec / unit * np.minimum(1.0, 1.2 * spacing / np.maximum(drawn, 1e-12))
        ax.quiver(grid[:, 0], grid[:, 1], shown[:, 0], shown[:, 1], angles="xy", scale_units="xy",
                  scale=1.0, width=0.003, color="crimson")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{data.name}, σ = {sigma:g}: arrows ∝ field (capped far from the data), "
                 "shading p_σ", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def save_chain(path: Path, snapshots: dict, data, sigma: float) -> None:
    """The DAE Markov chain's points at a few steps, over the true manifold."""
    plt = _pyplot()
    lo, hi = _box(data, sigma)
    truth = data.sample(3000, [0, 8])
    fig, axes = plt.subplots(1, len(snapshots), figsize=(2.6 * len(snapshots), 2.8))
    for ax, (step, pts) in zip(np.atleast_1d(axes), sorted(snapshots.items()), strict=True):
        ax.scatter(truth[:, 0], truth[:, 1], s=1, c="0.75")
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="crimson")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("noise" if step == 0 else f"step {step}", fontsize=9)
    fig.suptitle(f"DAE Markov chain x ← r(x + σε), {data.name}, σ = {sigma:g} (grey: data)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


# --- runs ---------------------------------------------------------------------------------

def _prepare(config: ScoreConfig) -> Path:
    from training.pretrain import prepare_run_dir

    out = Path(config.out)
    prepare_run_dir(config, out)
    return out


def run(config: ScoreConfig, full: bool = True) -> dict:
    """Trains, measures and writes one run folder. Returns the metrics written.

    Args:
        config: the run's settings.
        full: also write the structure and chain measures and the pictures.
    """
    out = _prepare(config)
    # A re-run that is stopped must not leave the old metrics.json (the mark of a finished run,
    # see cached_run) beside a half-rewritten folder.
    (out / "metrics.json").unlink(missing_ok=True)
    data = make_dataset(config.dataset)
    train_points = data.sample(config.train_size, [config.seed, 0])
    model, losses, seconds = train_dae(config, train_points)
    save_model(model, out / "model.keras")
    metrics = {"dataset": config.dataset, "sigma": config.sigma, "train_size": config.train_size,
               "train_seconds": round(seconds, 1), "loss": [round(float(v), 7) for v in losses],
               "eval_points": config.eval_points, **evaluate(model, data, config, train_points, full)}
    if full:
        denoise = lambda p: reconstruct(model, p)  # noqa: E731
        metrics["chain"], snapshots = run_chain(denoise, data, config.sigma, config.chain_steps,
                                                config.chain_points, config.seed)
        save_quiver(out / "quiver.png", model, data, config.sigma)
        save_chain(out / "chain.png", snapshots, data, config.sigma)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def cached_run(config: ScoreConfig) -> dict:
    """The metrics of ``config.out`` if it holds a finished full run of this config, else runs it.

    The saved ``out`` may differ (:func:`training.cli.config_differences` ignores it): a folder
    that moved with its checkout still holds the run.
    """
    out = Path(config.out)
    try:
        if finished_run_config(out, config) is not None:
            metrics = json.loads((out / "metrics.json").read_text())
            if "chain" in metrics and (out / "quiver.png").is_file() and (out / "chain.png").is_file():
                return metrics
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # no finished run with this config there (or unreadable files): train one
    return run(config)


def sweep(config: ScoreConfig) -> list[dict]:
    """One run per (σ, training-set size); writes ``sweep.json`` and ``sweep.png``."""
    out = _prepare(config)
    rows = []
    for sigma in config.sigmas:
        for size in config.sweep_sizes:
            sub = dataclasses.replace(config, sigma=sigma, train_size=size, sweep=False,
                                      out=str(out / f"sigma{sigma:g}-n{size}"))
            metrics = run(sub, full=False)
            rows.append({"sigma": sigma, "train_size": size, "train_seconds": metrics["train_seconds"],
                         **metrics["score"]})
            print(f"  σ={sigma:g} n={size}: trained in {metrics['train_seconds']} s", flush=True)
    atomic_write_json(out / "sweep.json", rows)
    save_sweep_plot(out / "sweep.png", rows, config.dataset)
    return rows


TARGETS = (("vs_training_set", "own training set p̂_σ"), ("vs_blurred", "blurred p_σ"),
           ("vs_unblurred", "unblurred p"), ("blurred_vs_unblurred", "exact p_σ vs p"))


def sweep_table(rows: list[dict]) -> str:
    """The sweep as a text table: cosine / norm error of r(x) − x against each target."""
    present = [(key, label) for key, label in TARGETS if key in rows[0]]
    head = f"{'σ':>6} {'n':>7} " + " ".join(f"{label:>22}" for _, label in present)
    lines = [head, f"{'':>6} {'':>7} " + " ".join(f"{'cos   norm err':>22}" for _ in present)]
    for row in rows:
        cells = " ".join(f"{row[k]['cosine']:>13.3f} {row[k]['norm_error']:>7.1%}" for k, _ in present)
        lines.append(f"{row['sigma']:>6g} {row['train_size']:>7d} {cells}")
    return "\n".join(lines)


def save_sweep_plot(path: Path, rows: list[dict], dataset: str) -> None:
    """Cosine and norm error against σ, one line per training-set size, one panel per target."""
    plt = _pyplot()
    present = [(k, label) for k, label in TARGETS[:3] if k in rows[0]]
    fig, axes = plt.subplots(2, len(present), figsize=(3.4 * len(present), 5.2), squeeze=False)
    sizes = sorted({r["train_size"] for r in rows})
    for col, (key, label) in enumerate(present):
        for size in sizes:
            sel = sorted((r for r in rows if r["train_size"] == size), key=lambda r: r["sigma"])
            sig = [r["sigma"] for r in sel]
            axes[0, col].plot(sig, [r[key]["cosine"] for r in sel], "o-", label=f"n = {size}")
            axes[1, col].plot(sig, [r[key]["norm_error"] for r in sel], "o-", label=f"n = {size}")
        if key == "vs_unblurred":
            sel = sorted((r for r in rows if r["train_size"] == sizes[-1]), key=lambda r: r["sigma"])
            for row, name in ((0, "cosine"), (1, "norm_error")):
                axes[row, col].plot([r["sigma"] for r in sel],
                                    [r["blurred_vs_unblurred"][name] for r in sel], "k--",
                                    label="exact p_σ")
        axes[0, col].set_title(f"against {label}", fontsize=9)
        sigmas = sorted({r["sigma"] for r in rows})
        for row in (0, 1):
            axes[row, col].set_xscale("log")
            axes[row, col].set_xticks(sigmas, [f"{v:g}" for v in sigmas], minor=False)
            axes[row, col].set_xticks([], minor=True)
        axes[1, col].set_xlabel("σ")
    axes[0, 0].set_ylabel("mean cosine")
    axes[1, 0].set_ylabel("norm error")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"DAE field r(x) − x against σ²∇log p, {dataset}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def summary(metrics: dict) -> str:
    """A few lines of text with the headline numbers of a run."""
    lines = []
    for key, label in TARGETS:
        if key in metrics["score"]:
            s = metrics["score"][key]
            lines.append(f"{'vs ' + label:>28}: cosine {s['cosine']:.3f}, norm error "
                         f"{s['norm_error']:.1%}, relative L2 {s['relative_l2']:.3f}")
    for name, s in metrics.get("structure", {}).items():
        medial = "none" if s["medial_norm"] is None else f"{s['medial_norm']:.3f}"
        toward = ("- (no point beyond σ/2)" if s["toward_nearest"] is None
                  else f"{s['toward_nearest']:.1%}")
        lines.append(f"{name + ' field':>28}: |f|/σ on manifold {s['on_manifold_norm']:.3f}, at σ "
                     f"{s['off_manifold_norm']:.3f}, midway {medial}; toward nearest {toward}")
    if "chain" in metrics:
        c = metrics["chain"]
        lines.append(f"{'chain':>28}: distance to manifold {c['start_distance']:.3f} (noise) -> "
                     f"{c['sample_distance']:.3f} after {c['steps']} steps (data {c['data_distance']:.3f}); "
                     f"coverage TV {c['coverage_tv']:.3f} (data {c['data_coverage_tv']:.3f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    """CLI entry point: ``python -m training.score --help``."""
    config = parse_config(ScoreConfig, __doc__.split("\n\n")[0], argv)
    try:
        if config.sweep:
            print(sweep_table(sweep(config)))
        else:
            print(summary(run(config)))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {config.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
