import math
import re

import numpy as np
import pytest
from scipy.special import i0e, i1e

from data.toy2d import (
    DATASETS,
    SIGMA_RANGE,
    GaussianMixture,
    check_sigma,
    circle,
    corrupt_points,
    make_dataset,
    smoothed_log_density,
    smoothed_score,
    spiral,
)


def finite_difference_grad(f, x, h=1e-5):
    """Central differences of a scalar-per-row function f: (N, 2) -> (N,)."""
    grad = np.zeros_like(x)
    for i in range(2):
        step = np.zeros(2)
        step[i] = h
        grad[:, i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_samplers_are_seeded_and_unit_spread(name):
    data = make_dataset(name)
    a, b = data.sample(20000, [3, 0]), data.sample(20000, [3, 0])
    assert a.shape == (20000, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[:100], data.sample(100, [4, 0]))
    np.testing.assert_allclose(a.mean(0), 0.0, atol=0.05)
    assert abs(a.var(0).mean() - 1.0) < 0.03


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.1, 0.5])
def test_mixture_closed_form_score_matches_finite_differences(sigma):
    mix = GaussianMixture()
    x = mix.sample(300, 1).astype(np.float64) + 0.3 * np.random.default_rng(2).standard_normal((300, 2))
    expected = finite_difference_grad(lambda p: mix.log_density(p, sigma), x)
    got = mix.score(x, sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_mixture_blurred_density_is_the_convolution_with_the_noise():
    # p_σ = p * N(0, σ²I), computed by quadrature on a grid, equals the closed form.
    mix, sigma, h = GaussianMixture(), 0.1, 0.01
    axis = np.arange(-2.2, 2.2, h)
    y = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    p = np.exp(mix.log_density(y, 0.0))
    assert abs(p.sum() * h * h - 1.0) < 1e-3
    x = np.array([[0.0, 0.0], [1.4, 0.1], [0.7, 0.7], [1.0, -1.0], [-1.2, 0.3]])
    kernel = np.exp(-((x[:, None, :] - y[None]) ** 2).sum(-1) / (2 * sigma ** 2)) / (2 * np.pi * sigma ** 2)
    numeric = (kernel * p[None]).sum(1) * h * h
    np.testing.assert_allclose(np.exp(mix.log_density(x, sigma)), numeric, rtol=1e-3, atol=1e-12)


def test_smoothed_score_is_the_gradient_of_the_smoothed_log_density():
    rng = np.random.default_rng(0)
    centres, x = rng.standard_normal((50, 2)), rng.standard_normal((40, 2))
    weights = rng.random(50)
    weights /= weights.sum()
    for w in (None, weights):
        expected = finite_difference_grad(lambda p, w=w: smoothed_log_density(p, centres, 0.3, w), x)
        np.testing.assert_allclose(smoothed_score(x, centres, 0.3, w), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.5])
def test_curve_score_matches_the_circle_closed_form(sigma):
    # The smoothed uniform circle of radius R: d/dr log p_σ = -r/σ² + (R/σ²) I1(rR/σ²) / I0(rR/σ²).
    c, radius = circle(), math.sqrt(2)
    x = c.sample(500, 1) + sigma * np.random.default_rng(2).standard_normal((500, 2))
    r = np.linalg.norm(x, axis=1)
    z = r * radius / sigma ** 2
    radial = -r / sigma ** 2 + radius / sigma ** 2 * i1e(z) / i0e(z)
    np.testing.assert_allclose(c.score(x, sigma), radial[:, None] * x / r[:, None], rtol=1e-6,
                               atol=1e-6 / sigma)


def test_curve_samples_lie_on_the_curve_uniformly_in_arc_length():
    s = spiral()
    distance, position, _ = s.nearest(s.sample(20000, 0))
    assert distance.max() < 1e-3
    counts = np.bincount((position * 10).astype(int).clip(0, 9), minlength=10)
    assert counts.min() > 1800 and counts.max() < 2200
    assert abs(s.length - 15.146) < 0.01  # two turns of r = θ at unit spread


def test_spiral_medial_points_are_field_zeros_between_arms():
    s = spiral()
    for sigma in (0.05, 0.1, 0.2):
        medial = s.medial_points(sigma)
        assert len(medial) == 49
        field = sigma ** 2 * s.score(medial, sigma)
        assert np.linalg.norm(field, axis=1).max() < 0.02 * sigma
        distance = s.nearest(medial)[0]
        assert distance.min() > 0.35 and distance.max() < 0.41  # arms are 0.80 apart
    # σ = 0.5 blurs the arms together: the density has no minimum between them.
    assert s.medial_points(0.5).shape == (0, 2)
    np.testing.assert_allclose(circle().medial_points(0.1), [[0.0, 0.0]], atol=1e-9)


def test_mixture_structure():
    mix = GaussianMixture(components=8, std=0.1)
    assert mix.means.shape == (8, 2)
    medial = mix.medial_points(0.1)
    np.testing.assert_allclose(mix.score(medial, 0.1), 0.0, atol=1e-8)
    distance, position, nearest = mix.nearest(mix.means + 0.01)
    np.testing.assert_allclose(nearest, mix.means)
    np.testing.assert_allclose(position, np.arange(8) / 8)


def test_mixture_field_vanishes_midway_only_while_the_modes_are_apart():
    mix = GaussianMixture()
    mids, centre = mix.medial_points(0.1)[:8], np.zeros((1, 2))
    size = lambda x, sigma: np.linalg.norm(sigma * mix.score(x, sigma), axis=1)  # ‖field‖/σ
    for sigma in (0.05, 0.1, 0.2, 0.5):
        assert size(centre, sigma)[0] < 1e-12  # the centre: zero for every σ, by symmetry
        # At a midpoint the component along the ring is zero for every σ, by symmetry ...
        tangent = mids[:, ::-1] * [-1.0, 1.0]
        along = (sigma * mix.score(mids, sigma) * tangent).sum(1) / np.linalg.norm(tangent, axis=1)
        np.testing.assert_allclose(along, 0.0, atol=1e-12)
    # ... the radial one only while the modes stay apart: the UI's σ = 0.5 merges them.
    assert size(mids, 0.2).max() < 1e-8
    np.testing.assert_allclose(size(mids, 0.5), 0.032, atol=0.001)
    radial = (mix.score(mids, 0.5) * mids).sum(1)
    assert (radial < 0).all()  # toward the merged ring's crest, inside the midpoints


def test_check_sigma_takes_the_studied_range_only():
    assert SIGMA_RANGE == (0.01, 1.0)
    assert check_sigma(0.01) == 0.01 and check_sigma("1") == 1.0
    expected = r"noise must be a number from 0.01 to 1 \(noise std, data at unit spread\), got "
    for bad in (0.0, 0.009, 1.01, float("inf"), float("nan"), "big", None):
        with pytest.raises(ValueError, match=expected + re.escape(repr(bad))):
            check_sigma(bad, "noise")
    # The lower end keeps a curve's reference set small: spacing σ/5 along its arc.
    assert len(spiral().reference_points(SIGMA_RANGE[0])) < 8000


def test_corrupt_points_is_seeded_unclipped_gaussian_noise():
    import tensorflow as tf

    x = tf.constant(np.full((20000, 2), 0.9, np.float32))
    seed = tf.constant([1, 2], tf.int64)
    noisy = corrupt_points(x, 0.5, seed).numpy()
    np.testing.assert_array_equal(noisy, corrupt_points(x, 0.5, seed).numpy())
    noise = noisy - 0.9
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    assert noisy.max() > 2.0 and noisy.min() < -1.0  # not clipped to [0, 1] like image noise


def test_bad_input_says_what_was_received():
    with pytest.raises(ValueError, match=r"unknown 2-D dataset 'moons'; expected one of"):
        make_dataset("moons")
    with pytest.raises(ValueError, match="sigma must be > 0, got 0"):
        spiral().score(np.zeros((1, 2)), 0.0)
    with pytest.raises(ValueError, match=r"expected points of shape \(N, 2\)"):
        smoothed_score(np.zeros((3, 3)), np.zeros((2, 2)), 0.1)
    with pytest.raises(ValueError, match="weights must be 2 non-negative numbers summing to 1"):
        smoothed_score(np.zeros((3, 2)), np.zeros((2, 2)), 0.1, weights=[0.7, 0.7])
    with pytest.raises(ValueError, match="sigma must be >= 0, got -0.1"):
        GaussianMixture().score(np.zeros((1, 2)), -0.1)
