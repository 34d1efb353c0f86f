"""The leak's measures: the first step's gain with its interval, and the leak put back into x_T."""
import pytest
import torch

from evaluation.metrics import first_step_gain, leaky_x_T


def test_the_first_step_gains_interval_spans_about_four_standard_errors_of_the_slope():
    # y = 2·x + N(0, 1) over n images with x ~ N(0, 1): the slope's standard error is about 1/√n, so a 95 % interval
    # spans 2 × 1.96/√n (a 50 % one would span 2 × 0.67/√n)
    n, g = 2000, torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 1, 1, generator=g)
    gain = first_step_gain(x, 2 * x + torch.randn(n, 1, 1, 1, generator=g))
    assert gain["low"] < gain["gain"] < gain["high"]
    assert gain["high"] - gain["low"] == pytest.approx(2 * 1.96 / n**0.5, rel=0.2)


def test_the_leak_put_back_scales_the_noise_by_the_square_root_of_one_minus_alpha_bar():
    signal, noise = torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert leaky_x_T(0.36, signal, noise) == pytest.approx(torch.full_like(signal, 0.6 + 0.8))
    assert torch.equal(leaky_x_T(0.0, signal, noise), noise)
