import math

import pytest
import torch
import torch.nn.functional as F

from data import make_shapes
from evaluation.metrics import (
    brightness,
    chroma,
    clip_fraction,
    first_step_gain,
    frechet_distance,
    hf_residual,
    kernel_distance,
    leak_prediction,
    power_spectrum,
    spectrum_ratio,
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


def _noise_and_images(n=2000):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.rand(n, 3, 8, 8, generator=g) * 2 - 1


def test_spectrum_ratio_of_data_against_itself_is_one_in_every_band():
    images, _, _ = make_shapes(64, 32, 0)
    assert spectrum_ratio(images, images) == pytest.approx([1.0] * 8)


def test_spectrum_ratio_reads_a_box_blur_as_missing_power_in_the_top_bands():
    images, _, _ = make_shapes(256, 32, 0)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    bands = spectrum_ratio(blurred, images)
    assert bands[0] > 0.9 and max(bands[-3:]) < 0.2  # without the window the border jump would read ~0.8 up there


def test_spectrum_ratio_reads_added_noise_as_extra_power_in_the_top_bands():
    images, _, _ = make_shapes(256, 32, 0)
    noisy = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    bands = spectrum_ratio(noisy, images)
    assert bands[0] == pytest.approx(1, abs=0.05) and min(bands[-3:]) > 5


def test_power_spectrum_of_a_single_frequency_lands_in_its_band():
    n = torch.arange(32.0)
    wave = torch.cos(2 * math.pi * 0.25 * n).view(1, 1, 1, 32).expand(1, 1, 32, 32)  # 0.25 cycles/pixel: band 3 of 8
    assert power_spectrum(wave).argmax().item() == 3


def test_chroma_is_zero_for_grey_and_the_rgb_std_for_a_pure_colour():
    assert chroma(torch.rand(2, 1, 8, 8).expand(2, 3, 8, 8) * 2 - 1) == 0
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    assert chroma(red) == pytest.approx((4 / 3) ** 0.5)


def test_background_chroma_reads_only_the_corners():
    image = torch.zeros(1, 3, 16, 16)
    image[:, 0, 4:12, 4:12] = 1  # a red square in the middle of a grey background
    assert chroma(image, background=True) == 0 < chroma(image)


def test_first_step_gain_of_an_x0_that_ignores_x_t_is_about_zero_with_an_interval_around_it():
    g = torch.Generator().manual_seed(1)
    gain = first_step_gain(torch.randn(500, 3, 8, 8, generator=g), 0.002 * torch.randn(500, 3, 1, 1, generator=g))
    assert gain["low"] < 0 < gain["high"] and abs(gain["gain"]) < 0.02


def test_leak_prediction_is_the_gaussian_closed_form():
    # image means ±1 in equal numbers: Var(μ) = 1 (unbiased over 4 images: 4/3); 3×4×4 values: noise 1/48
    data = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1).expand(4, 3, 4, 4)
    var_mu, noise, ab = 4 / 3, 1 / 48, 0.01
    var_m = ab * var_mu + (1 - ab) * noise
    p = leak_prediction(data, ab)
    assert p["signal_share"] == pytest.approx(ab * var_mu / var_m)
    assert p["exact_gain"] == pytest.approx(ab**0.5 * var_mu / var_m)
    assert p["x_T_std_ratio"] == pytest.approx((noise / var_m) ** 0.5)
    assert p["leak_only_spread"] == pytest.approx(ab**0.5 * (var_mu / noise) ** 0.5 / (ab * var_mu / noise + 1 - ab))
    assert leak_prediction(data, 0.0) == {"signal_share": 0.0, "exact_gain": 0.0, "x_T_std_ratio": 1.0,
                                          "leak_only_spread": 0.0}
