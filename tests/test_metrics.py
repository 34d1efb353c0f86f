import math

import pytest
import torch

from evaluation.metrics import (
    brightness,
    clip_fraction,
    frechet_distance,
    hf_residual,
    kernel_distance,
    spread_ratio,
    summarize,
    wasserstein1,
)


def test_w1_of_two_shifted_uniforms_is_the_shift():
    u = torch.linspace(0, 1, 10_001)
    assert wasserstein1(u, u + 0.3) == pytest.approx(0.3, abs=1e-4)


def test_w1_between_samples_of_different_sizes():
    assert wasserstein1(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.0)
    assert wasserstein1(torch.zeros(3), torch.ones(7)) == pytest.approx(1.0)


def test_spread_ratio_of_a_scaled_copy_is_the_scale():
    b = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    assert spread_ratio(0.5 + 0.4 * (b - 0.5), b) == pytest.approx(0.4)


def test_brightness_maps_minus_one_one_to_zero_one():
    images = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0), torch.zeros(3, 4, 4)])
    assert brightness(images).tolist() == [0.0, 1.0, 0.5]


def test_summary_counts_dark_and_bright_fractions():
    s = summarize(torch.tensor([0.05, 0.5, 0.5, 0.95]))
    assert s["frac_dark"] == 0.25 and s["frac_bright"] == 0.25 and s["mean"] == pytest.approx(0.5)


def test_hf_residual_is_zero_for_flat_images_and_large_for_noise():
    assert hf_residual(torch.full((2, 3, 8, 8), 0.3)) == pytest.approx(0.0, abs=1e-7)
    assert hf_residual(torch.randn(2, 3, 8, 8)) > 0.5


def test_clip_fraction_counts_pixels_at_plus_minus_one():
    images = torch.tensor([1.0, -1.0, 0.0, 0.5]).view(1, 1, 2, 2)
    assert clip_fraction(images) == 0.5


def gaussian_samples(mean: torch.Tensor, cov: torch.Tensor, n: int = 4096) -> torch.Tensor:
    """n points whose sample mean and (unbiased) covariance are exactly `mean` and `cov`."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # whitened: cov exactly I
    return z @ torch.linalg.cholesky(cov).T + mean


def test_frechet_distance_equals_the_closed_form_for_two_gaussians():
    # Diagonal covariances: d² = ‖μ_a − μ_b‖² + Σ_i (σ_a,i − σ_b,i)².
    var_a, var_b = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    a, b = gaussian_samples(mu_a, torch.diag(var_a)), gaussian_samples(mu_b, torch.diag(var_b))
    expected = (mu_a - mu_b).square().sum() + (var_a.sqrt() - var_b.sqrt()).square().sum()
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)


def test_frechet_distance_is_unchanged_by_a_common_rotation():
    # Rotating both sets makes the covariances non-diagonal; the distance must not move.
    var_a, var_b = torch.tensor([1.0, 4.0], dtype=torch.float64), torch.tensor([9.0, 0.5], dtype=torch.float64)
    a, b = gaussian_samples(torch.zeros(2, dtype=torch.float64), torch.diag(var_a)), gaussian_samples(
        torch.ones(2, dtype=torch.float64), torch.diag(var_b))
    angle = torch.tensor(0.7, dtype=torch.float64)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    assert frechet_distance(a @ rotation.T, b @ rotation.T) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(2 + (1 - 3) ** 2 + (2 - 0.5**0.5) ** 2, rel=1e-9)


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    assert abs(kernel_distance(a, b)) < 0.01
    assert kernel_distance(a, b + 1.0) > 0.5


def test_hf_residual_per_image_averages_to_the_set_value():
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert hf_residual(x, per_image=True).shape == (5,)
    assert hf_residual(x, per_image=True).mean().item() == pytest.approx(hf_residual(x))


def test_frechet_distance_of_non_finite_features_is_nan_not_an_error():
    a = torch.randn(16, 3)
    assert math.isnan(frechet_distance(torch.full((16, 3), float("nan")), a))
