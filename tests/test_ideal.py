import math

import pytest
import torch

from data import make_shapes
from diffusion import IdealDenoiser, SamplingSettings, get_timesteps, make_schedule, sample_in_batches
from evaluation.metrics import brightness, spread_ratio


def test_ideal_denoiser_of_one_image_returns_it_exactly():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = torch.rand(1, 3, 8, 8) * 2 - 1
    model = IdealDenoiser(x0, schedule, "x0")
    x_t = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(model(x_t, torch.tensor([0, 300, 900, 999])), x0.expand(4, -1, -1, -1))


def test_ideal_denoiser_at_t_0_reproduces_the_nearest_data_point():
    schedule = make_schedule("scaled_linear")
    data = torch.rand(16, 3, 8, 8) * 2 - 1
    x_t = schedule.add_noise(data[5:6], 0.01 * torch.randn(1, 3, 8, 8), torch.tensor([0]))
    torch.testing.assert_close(IdealDenoiser(data, schedule, "x0")(x_t, torch.tensor([0])), data[5:6])


def test_ideal_denoiser_at_zero_snr_returns_the_data_mean():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    data = torch.rand(16, 3, 8, 8) * 2 - 1
    out = IdealDenoiser(data, schedule, "x0")(torch.randn(2, 3, 8, 8), torch.tensor([999, 999]))
    torch.testing.assert_close(out, data.mean(0, keepdim=True).expand(2, -1, -1, -1))


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_ideal_denoiser_predictions_all_mean_the_same_x0(prediction_type):
    schedule = make_schedule("scaled_linear")
    data = torch.rand(8, 3, 8, 8) * 2 - 1
    x_t, t = torch.randn(3, 3, 8, 8), torch.tensor([10, 500, 990])
    from diffusion import predict_x0_eps

    ab = schedule.alpha_bar_at(t, x_t)
    x0, _ = predict_x0_eps(x_t, IdealDenoiser(data, schedule, prediction_type)(x_t, t), ab, prediction_type)
    torch.testing.assert_close(x0, IdealDenoiser(data, schedule, "x0")(x_t, t), atol=1e-4, rtol=1e-4)


def _spread(zero_snr: bool, spacing: str, offset: int) -> float:
    data, _, _ = make_shapes(256, image_size=16, seed=0)
    reference, _, _ = make_shapes(256, image_size=16, seed=1)
    schedule = make_schedule("scaled_linear", zero_snr=zero_snr)
    prediction = "v" if zero_snr else "eps"
    out = sample_in_batches(IdealDenoiser(data, schedule, prediction), (256, 3, 16, 16), schedule, prediction,
                            SamplingSettings(get_timesteps(1000, 25, spacing, offset)))
    return spread_ratio(brightness(out), brightness(reference))


def test_baseline_schedule_with_leading_steps_squeezes_brightness_even_for_the_ideal_model():
    assert _spread(zero_snr=False, spacing="leading", offset=1) < 0.7


def test_zero_snr_with_trailing_steps_keeps_the_brightness_range_for_the_ideal_model():
    assert _spread(zero_snr=True, spacing="trailing", offset=0) > 0.85


def test_ideal_denoiser_equals_a_brute_force_gaussian_posterior():
    # Three two-pixel images, equally likely a priori; p(x_t | x0_i) = N(√ᾱ x0_i, (1 − ᾱ) I).
    data = [[0.9, -0.2], [-0.5, 0.4], [0.1, 0.8]]
    x_t, t = [0.3, -0.1], 400
    schedule = make_schedule("scaled_linear", zero_snr=True)
    ab = schedule.alpha_bar[t].item()
    likelihood = [math.exp(-sum((x - ab**0.5 * y) ** 2 for x, y in zip(x_t, image)) / (2 * (1 - ab))) for image in data]
    expected = [sum(w * image[k] for w, image in zip(likelihood, data)) / sum(likelihood) for k in range(2)]
    model = IdealDenoiser(torch.tensor(data).view(3, 1, 1, 2), schedule, "x0")
    out = model(torch.tensor(x_t).view(1, 1, 1, 2), torch.tensor([t]))
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_offset_noise_ideal_denoiser_weighs_by_the_mahalanobis_distance_of_its_noise():
    schedule, s = make_schedule("scaled_linear"), 0.3
    data = torch.rand(5, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x_t, t = torch.randn(1, 2, 3, 3), torch.tensor([700])
    a, n = schedule.alpha_bar[700].item(), 9
    cov = torch.eye(18, dtype=torch.float64) + s**2 * torch.block_diag(torch.ones(n, n), torch.ones(n, n)).double()
    r = (x_t.flatten().double() - a**0.5 * data.flatten(1).double())
    logits = -(r @ torch.linalg.inv(cov) * r).sum(1) / (2 * (1 - a))
    expected = (logits.softmax(0) @ data.flatten(1).double()).view(1, 2, 3, 3).float()
    torch.testing.assert_close(IdealDenoiser(data, schedule, "x0", offset_noise=s)(x_t, t), expected)
