import pytest
import torch

from experiments.metrics import brightness, clip_fraction, hf_residual, spread_ratio, summarize, wasserstein1


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
