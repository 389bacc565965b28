"""Toy 2-D datasets for the DAE-as-score-estimator study, with their true smoothed scores.

With Gaussian corruption x̃ = x + σε and a squared-error criterion, the best reconstruction is
r(x̃) = E[x | x̃] = x̃ + σ²∇ log p_σ(x̃) (Tweedie), where p_σ = p * N(0, σ²I) is the data
density blurred by the noise. The DAE's field r(x) − x therefore estimates σ²∇ log p_σ(x).

Three seeded samplers, all scaled to unit spread (the per-coordinate variance about the mean,
averaged over the two coordinates, is 1):

- ``mixture``: 8 isotropic Gaussians (std 0.1) on a ring. p_σ is again a mixture, with
  component std sqrt(0.1² + σ²), so ∇ log p_σ is known in closed form for every σ, σ = 0
  included (the unblurred score).
- ``spiral``: two turns of an Archimedean spiral, a 1-D curved manifold; points lie exactly
  on the curve, uniform in arc length. Arms are 0.80 apart.
- ``circle``: a circle of radius √2, uniform in angle.

For the curves, p_σ is computed numerically: the σ-smoothed empirical density
p̂_σ(x) = mean_j N(x; y_j, σ²I) of reference points y_j spaced evenly in arc length (a
stratified sample of the uniform-in-arc-length distribution, spacing σ/5, so the sum equals the
smoothed curve density to far better than Monte-Carlo accuracy). The same function
(:func:`smoothed_score`) gives the smoothed score of any finite training set.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

_MAX_PAIRS = 2_000_000  # eval-points x centres per chunk: ~16 MB of float64 at a time

SIGMA_RANGE = (0.01, 1.0)
"""The noise stds σ the studies take. Below 0.01 a curve's p_σ needs more than 7 570 reference
points (spacing σ/5 along the spiral's 15.15 of arc) and every score costs that many times more;
above 1 the noise is larger than the data's own spread and p_σ is close to one Gaussian."""


def check_sigma(sigma, name: str = "sigma") -> float:
    """``sigma`` as a float if it is a number in :data:`SIGMA_RANGE`; else a ValueError naming it."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        value = math.nan
    lo, hi = SIGMA_RANGE
    if not lo <= value <= hi:  # also refuses nan
        raise ValueError(f"{name} must be a number from {lo:g} to {hi:g} (noise std, data at unit "
                         f"spread), got {sigma!r}")
    return value


def _posterior(x, centres, scale, log_weights=None):
    """Yields ``(rows, logits)`` chunks: log N(x_i; y_j, scale²I) + log w_j (up to a constant)."""
    x = np.asarray(x, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2 or centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"expected points of shape (N, 2) and centres (M, 2), got {x.shape}, "
                         f"{centres.shape}")
    if not scale > 0:
        raise ValueError(f"smoothing scale must be > 0, got {scale}")
    chunk = max(1, _MAX_PAIRS // max(len(centres), 1))
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        logits = np.subtract.outer(x[rows, 0], centres[:, 0]) ** 2
        logits += np.subtract.outer(x[rows, 1], centres[:, 1]) ** 2
        logits *= -0.5 / scale ** 2
        if log_weights is not None:
            logits += log_weights[None, :]
        yield rows, logits


def _shifted_exp(logits):
    """``(max, exp(logits - max))`` per row. Terms below e^-60 (negligible) are clamped there:
    exp() of hugely negative numbers underflows through denormals and is ~40x slower."""
    top = logits.max(1, keepdims=True)
    return top[:, 0], np.exp(np.maximum(logits - top, -60.0))


def smoothed_log_density(x, centres, scale, weights=None) -> np.ndarray:
    """log of the density mean_j w_j N(x; y_j, scale²I): a Gaussian-smoothed point set.

    Args:
        x: query points ``(N, 2)``.
        centres: the points y_j ``(M, 2)`` (a training set, reference points, mixture means).
        scale: the smoothing std (> 0).
        weights: optional ``(M,)`` non-negative weights summing to 1 (default uniform).

    Returns:
        ``(N,)`` float64 log densities.
    """
    log_w = _log_weights(weights, len(centres))
    out = np.empty(len(x))
    for rows, logits in _posterior(x, centres, scale, log_w):
        top, e = _shifted_exp(logits)
        out[rows] = top + np.log(e.sum(1))
    return out - math.log(2.0 * math.pi * scale ** 2)


def smoothed_score(x, centres, scale, weights=None) -> np.ndarray:
    """∇ₓ log of :func:`smoothed_log_density`, exactly: (E_w[y | x] − x) / scale².

    The posterior mean E_w[y | x] under weights w_j ∝ w_j N(x; y_j, scale²I) is the ideal
    denoiser of the point set, so ``scale² * score`` is the ideal DAE field r(x) − x.

    Returns:
        ``(N, 2)`` float64 scores.
    """
    centres = np.asarray(centres, dtype=np.float64)
    log_w = _log_weights(weights, len(centres))
    out = np.empty((len(x), 2))
    for rows, logits in _posterior(x, centres, scale, log_w):
        p = _shifted_exp(logits)[1]
        p /= p.sum(1, keepdims=True)
        out[rows] = (p @ centres - np.asarray(x, np.float64)[rows]) / scale ** 2
    return out


def _log_weights(weights, m):
    if weights is None:
        return np.full(m, -math.log(m))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (m,) or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"weights must be {m} non-negative numbers summing to 1, got {weights}")
    with np.errstate(divide="ignore"):
        return np.log(weights)


def corrupt_points(x, sigma, seed):
    """Gaussian corruption x̃ = x + σε of 2-D points, seeded and stateless (TF).

    Not :func:`data.corruption.gaussian`: that one is written for NHWC image batches in
    [0, 1] and clips its output to [0, 1]. Clipping points that spread over [-2.5, 2.5] would
    fold the noise onto the square's edge and bias E[x | x̃] (the quantity the DAE must learn),
    and its per-image level reshapes to (N, 1, 1, 1), which does not broadcast against (N, 2).
    This is the same stateless draw without the clip, for points of any dimension.

    Args:
        x: float tensor ``(N, D)``.
        sigma: noise std, a scalar.
        seed: stateless seed, an int tensor of shape ``(2,)``.
    """
    import tensorflow as tf

    noise = tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
    return x + tf.cast(sigma, x.dtype) * noise


class GaussianMixture:
    """Isotropic Gaussians of one std, equal weights, means evenly spaced on a ring.

    Args:
        components: number of Gaussians.
        std: each component's std, in the unit-spread units of the result.
    """

    name = "mixture"

    def __init__(self, components: int = 8, std: float = 0.1):
        if components < 1 or not 0 < std < 1:
            raise ValueError(f"need components >= 1 and 0 < std < 1, got {components}, {std}")
        self.std = float(std)
        # Unit spread: per-coordinate variance = radius²/2 + std² = 1.
        radius = math.sqrt(2.0 * (1.0 - self.std ** 2))
        angles = 2.0 * math.pi * np.arange(components) / components
        self.means = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
        self.regions = components  # coverage is counted per component

    def sample(self, n: int, seed) -> np.ndarray:
        """``n`` points ``(n, 2)`` float32; the same ``seed`` (int or int sequence) gives the same."""
        rng = np.random.default_rng(seed)
        k = rng.integers(len(self.means), size=n)
        return (self.means[k] + self.std * rng.standard_normal((n, 2))).astype(np.float32)

    def _blurred_std(self, sigma):
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        return math.sqrt(self.std ** 2 + sigma ** 2)

    def log_density(self, x, sigma: float) -> np.ndarray:
        """log p_σ(x), closed form (σ = 0: the unblurred mixture)."""
        return smoothed_log_density(x, self.means, self._blurred_std(sigma))

    def score(self, x, sigma: float) -> np.ndarray:
        """∇ log p_σ(x), closed form: a mixture blurred by σ has component std √(s² + σ²)."""
        return smoothed_score(x, self.means, self._blurred_std(sigma))

    def nearest(self, x):
        """Distance to the nearest mean (the mixture's "manifold") and its index / K in [0, 1)."""
        d = np.linalg.norm(np.asarray(x, np.float64)[:, None, :] - self.means[None], axis=2)
        k = d.argmin(1)
        return d[np.arange(len(x)), k], k / len(self.means), self.means[k]

    def manifold_points(self, n: int, seed) -> np.ndarray:
        """The component means, cycled to ``n`` points (where p has its maxima)."""
        return self.means[np.arange(n) % len(self.means)]

    def offset_points(self, n: int, distance: float, seed) -> np.ndarray:
        """Points at ``distance`` from a mean, in a random direction."""
        angle = np.random.default_rng(seed).uniform(0, 2 * math.pi, n)
        return self.manifold_points(n, seed) + distance * np.stack([np.cos(angle), np.sin(angle)], 1)

    def medial_points(self, sigma: float) -> np.ndarray:
        """The points midway between modes: midpoints of neighbouring means, and the centre.

        By symmetry the field vanishes at the centre for every σ, and at a midpoint its
        component along the ring does. Its radial component vanishes only while the modes stay
        apart: ‖σ²∇log p_σ‖/σ at the midpoints is below 1e-8 for σ ≤ 0.2 (there they are the
        saddles of p_σ), 1e-4 at σ = 0.3 and 0.032 at σ = 0.5, where the blur has merged the
        modes into a ring whose crest lies inside the midpoints (and 0.14 on the means).
        """
        mids = (self.means + np.roll(self.means, -1, axis=0)) / 2
        return np.concatenate([mids, np.zeros((1, 2))]) if len(self.means) > 2 else mids


class Curve:
    """A 1-D manifold in 2-D: a parametric curve, sampled uniformly in arc length.

    Args:
        name: dataset name.
        fn: maps a parameter array ``t`` to points ``(len(t), 2)``.
        t_range: the parameter interval.
        gaps: returns segments ``(G, 2, 2)`` (in ``fn``'s units) from one arm to the next,
            across the gaps where p_σ has its minima.
    """

    _TABLE = 100_001  # dense arc-length table: spacing ~1e-4 in unit-spread units

    def __init__(self, name, fn, t_range, gaps):
        self.name = name
        self.regions = 10  # coverage is counted over 10 equal stretches of arc length
        t = np.linspace(*t_range, self._TABLE)
        pts = fn(t)
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        # Unit spread with arc-length weights (trapezoid rule on the dense table).
        w = np.concatenate([seg, [0.0]]) + np.concatenate([[0.0], seg])
        w /= w.sum()
        centre = (w[:, None] * pts).sum(0)
        scale = 1.0 / math.sqrt((w * ((pts - centre) ** 2).sum(1)).sum() / 2.0)
        self._transform = lambda p: (np.asarray(p) - centre) * scale
        self.points = self._transform(pts)
        self.arc = s * scale
        self.length = float(self.arc[-1])
        tangent = np.gradient(self.points, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        self.normals = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        self._tree = cKDTree(self.points)
        self._gaps = self._transform(gaps())
        self._reference = {}

    def _at(self, s):
        """Points (and table indices) at arc lengths ``s``."""
        i = np.clip(np.searchsorted(self.arc, s), 1, len(self.arc) - 1)
        f = ((s - self.arc[i - 1]) / (self.arc[i] - self.arc[i - 1]))[:, None]
        return self.points[i - 1] * (1 - f) + self.points[i] * f, i

    def sample(self, n: int, seed) -> np.ndarray:
        """``n`` points on the curve ``(n, 2)`` float32, uniform in arc length, seeded."""
        s = np.random.default_rng(seed).uniform(0.0, self.length, n)
        return self._at(s)[0].astype(np.float32)

    def reference_points(self, sigma: float) -> np.ndarray:
        """Points evenly spaced in arc length (spacing ≤ σ/5) whose σ-smoothing is p_σ."""
        if not sigma > 0:
            raise ValueError(f"the unblurred density of a curve is singular; sigma must be > 0, "
                             f"got {sigma}")
        m = int(math.ceil(self.length / (sigma / 5.0)))
        if m not in self._reference:
            self._reference[m] = self._at((np.arange(m) + 0.5) * self.length / m)[0]
        return self._reference[m]

    def log_density(self, x, sigma: float) -> np.ndarray:
        """log p_σ(x), numerically from :meth:`reference_points`."""
        return smoothed_log_density(x, self.reference_points(sigma), sigma)

    def score(self, x, sigma: float) -> np.ndarray:
        """∇ log p_σ(x), numerically: the exact score of the smoothed reference points."""
        return smoothed_score(x, self.reference_points(sigma), sigma)

    def nearest(self, x):
        """Distance to the curve, arc-length position in [0, 1], and the nearest curve point."""
        d, i = self._tree.query(np.asarray(x, np.float64))
        return d, self.arc[i] / self.length, self.points[i]

    def manifold_points(self, n: int, seed) -> np.ndarray:
        """``n`` points on the curve (float64)."""
        return self.sample(n, seed).astype(np.float64)

    def offset_points(self, n: int, distance: float, seed) -> np.ndarray:
        """Points at ``distance`` from the curve along its normal, on either side."""
        rng = np.random.default_rng(seed)
        pts, i = self._at(rng.uniform(0.0, self.length, n))
        side = rng.choice([-1.0, 1.0], size=(n, 1))
        return pts + side * distance * self.normals[i]

    def medial_points(self, sigma: float) -> np.ndarray:
        """The minima of p_σ along each gap segment between arms, where the field vanishes.

        Found by bisection on the score's component along the segment: near one arm the field
        points back to it, near the other arm toward that one. A segment without that sign
        change has no minimum (σ so large that the arms have merged) and gives no point, so
        the result may be empty ``(0, 2)``.
        """
        a, u = self._gaps[:, 0], self._gaps[:, 1] - self._gaps[:, 0]
        along = lambda t: (self.score(a + t[:, None] * u, sigma) * u).sum(1)  # noqa: E731
        ends = np.full(len(a), 0.05)
        gap = (along(ends) < 0) & (along(1 - ends) > 0)
        a, u = a[gap], u[gap]
        lo, hi = np.full(len(a), 0.05), np.full(len(a), 0.95)
        for _ in range(40):
            mid = (lo + hi) / 2
            before = along(mid) < 0
            lo, hi = np.where(before, mid, lo), np.where(before, hi, mid)
        return a + ((lo + hi) / 2)[:, None] * u


SPIRAL_TURNS = (1.0, 5.0)
"""The spiral r = θ for θ in [π, 5π] (in units of π): two turns, arms 0.80 apart at unit spread."""


def _spiral_gaps():
    """Segments between consecutive arms along rays from the spiral's origin (base units).

    Rays within 60° of either end of the spiral are left out: near an arm's tip the density
    also falls along the arm, so the gap holds no point where the whole field vanishes.
    """
    lo, hi = (math.pi * t for t in SPIRAL_TURNS)
    lo, hi = lo + math.pi / 3, hi - math.pi / 3
    out = []
    for psi in np.linspace(0, 2 * math.pi, 72, endpoint=False):
        ray = np.array([math.cos(psi), math.sin(psi)])
        k = math.ceil((lo - psi) / (2 * math.pi))
        while psi + 2 * math.pi * (k + 1) <= hi:
            inner = psi + 2 * math.pi * k
            out.append((inner * ray, (inner + 2 * math.pi) * ray))
            k += 1
    return np.array(out)


def spiral() -> Curve:
    """Two turns of the Archimedean spiral r = θ, unit spread."""
    fn = lambda t: np.stack([t * np.cos(t), t * np.sin(t)], 1)
    return Curve("spiral", fn, tuple(math.pi * t for t in SPIRAL_TURNS), _spiral_gaps)


def circle() -> Curve:
    """The circle of radius √2 about the origin (unit spread); its gap is the centre."""
    fn = lambda t: np.stack([np.cos(t), np.sin(t)], 1)
    return Curve("circle", fn, (0.0, 2 * math.pi), lambda: np.array([[[-1.0, 0.0], [1.0, 0.0]]]))


DATASETS = {"mixture": GaussianMixture, "spiral": spiral, "circle": circle}
"""Registry of the 2-D datasets by name; the CLI's and the UI's choices come from it."""


def make_dataset(name: str):
    """Builds a dataset of :data:`DATASETS` by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown 2-D dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]()
