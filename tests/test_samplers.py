import math

import pytest
import torch

from diffusion import (SPACINGS, Guidance, SamplingSettings, get_timesteps, guided_denoiser, initial_noise, make_schedule,
                       prediction_target, sample, sample_ddim, sample_dpmpp_2m, sample_in_batches)
from tests.conftest import ddim_step


class Oracle(torch.nn.Module):
    """Returns the exact target for one fixed x0, whatever x_t it is shown."""

    def __init__(self, x0, schedule, prediction_type):
        super().__init__()
        self.x0, self.schedule, self.prediction_type = x0, schedule, prediction_type
        self.calls = []

    def forward(self, x_t, t, labels):
        self.calls.append((x_t.shape[0], None if labels is None else labels.tolist()))
        ab = self.schedule.alpha_bar_at(t, x_t)
        x0 = self.x0[: x_t.shape[0]] if x_t.shape[0] <= len(self.x0) else torch.cat([self.x0, self.x0])
        noise = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return prediction_target(x0, noise, ab, self.prediction_type)


def _x0(n=4):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


CASES = [("scaled_linear", True, "v"), ("scaled_linear", True, "x0"), ("scaled_linear", False, "eps"), ("linear", False, "v")]


@pytest.mark.parametrize("steps", [1, 7, 30, 50])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name, zero_snr, prediction_type", CASES)
def test_ddim_with_an_oracle_recovers_x0_for_every_spacing(name, zero_snr, prediction_type, spacing, steps):
    schedule = make_schedule(name, zero_snr=zero_snr)
    x0 = _x0()
    model = Oracle(x0, schedule, prediction_type)
    offset = 1 if spacing == "leading" else 0
    timesteps = get_timesteps(1000, steps, spacing, offset)
    out = sample_in_batches(model, x0.shape, schedule, prediction_type, SamplingSettings(timesteps))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert len(model.calls) == steps


def test_ddim_with_eta_one_and_an_oracle_still_recovers_x0():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = _x0()
    out = sample_in_batches(Oracle(x0, schedule, "v"), x0.shape, schedule, "v",
                            SamplingSettings(get_timesteps(1000, 30, "trailing"), eta=1.0))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_ddim_step_to_alpha_bar_one_returns_the_x0_estimate():
    x_t, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ab = torch.tensor(0.25)
    torch.testing.assert_close(ddim_step(x_t, v, ab, 1.0, "v"), 0.5 * x_t - 0.75**0.5 * v)


def test_ddim_step_with_eta_needs_noise():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, 0.5, 0.7, "v", eta=1.0)


def test_sampling_eps_prediction_from_zero_snr_raises():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = _x0()
    with pytest.raises(ValueError, match="epsilon-prediction"):
        sample_in_batches(Oracle(x0, schedule, "eps"), x0.shape, schedule, "eps",
                          SamplingSettings(get_timesteps(1000, 10, "trailing")))


def test_guided_sampling_runs_both_branches_in_one_batched_forward():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = _x0(2)
    model = Oracle(x0, schedule, "v")
    sample_in_batches(model, x0.shape, schedule, "v",
                      SamplingSettings(get_timesteps(1000, 5, "trailing"), guidance=Guidance(5.0, 0.7)),
                      labels=torch.tensor([3, 1]))
    assert model.calls == [(4, [3, 1, -1, -1])] * 5


def test_unguided_sampling_runs_one_branch():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = _x0(2)
    model = Oracle(x0, schedule, "v")
    sample_in_batches(model, x0.shape, schedule, "v", SamplingSettings(get_timesteps(1000, 5, "trailing")),
                      labels=torch.tensor([3, 1]))
    assert model.calls == [(2, [3, 1])] * 5


def test_same_generator_seed_gives_the_same_samples():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    model = lambda x, t, c: 0.5 * x  # noqa: E731
    run = lambda: sample_in_batches(model, (2, 3, 4, 4), schedule, "v",  # noqa: E731
                                    SamplingSettings(get_timesteps(1000, 5, "trailing"), eta=0.5, seed=7))
    torch.testing.assert_close(run(), run(), atol=0, rtol=0)


def test_samples_are_clamped_to_minus_one_one():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    out = sample_in_batches(lambda x, t, c: -10 * torch.ones_like(x), (2, 3, 4, 4), schedule, "v",
                            SamplingSettings(get_timesteps(1000, 3, "trailing")))
    assert out.min() >= -1 and out.max() <= 1


def test_ddim_step_with_eta_zero_matches_the_equation_computed_by_hand():
    # ᾱ_t = 0.36, ᾱ_prev = 0.64, v-prediction, one pixel: x_t = 0.5, v̂ = 0.2.
    # x̂0 = √ᾱ x_t − √(1−ᾱ) v̂ = 0.6·0.5 − 0.8·0.2 = 0.14;  ε̂ = √(1−ᾱ) x_t + √ᾱ v̂ = 0.8·0.5 + 0.6·0.2 = 0.52
    # x_prev = √ᾱ_prev x̂0 + √(1−ᾱ_prev) ε̂ = 0.8·0.14 + 0.6·0.52 = 0.424
    x_prev = ddim_step(torch.tensor([0.5]), torch.tensor([0.2]), 0.36, 0.64, "v")
    assert x_prev.item() == pytest.approx(0.424, abs=1e-6)


def test_ddim_step_with_eta_matches_the_equation_computed_by_hand():
    # Same step with η = 0.5 and noise z = 1:
    # σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) = 0.5 · √(0.36/0.64) · √(1 − 0.5625) = 0.5 · 0.75 · 0.661438 = 0.248039
    # x_prev = 0.8·0.14 + √(0.36 − σ²)·0.52 + σ·1
    sigma = 0.5 * 0.75 * (1 - 0.36 / 0.64) ** 0.5
    expected = 0.8 * 0.14 + (0.36 - sigma**2) ** 0.5 * 0.52 + sigma
    x_prev = ddim_step(torch.tensor([0.5]), torch.tensor([0.2]), 0.36, 0.64, "v", eta=0.5, noise=torch.tensor([1.0]))
    assert x_prev.item() == pytest.approx(expected, abs=1e-6)


def test_ddim_step_for_epsilon_prediction_matches_the_equation_computed_by_hand():
    # ᾱ_t = 0.36, ᾱ_prev = 0.64, ε̂ = 0.2: x̂0 = (0.5 − 0.8·0.2)/0.6 = 0.566667; x_prev = 0.8·x̂0 + 0.6·0.2
    x_prev = ddim_step(torch.tensor([0.5]), torch.tensor([0.2]), 0.36, 0.64, "eps")
    assert x_prev.item() == pytest.approx(0.8 * (0.5 - 0.16) / 0.6 + 0.12, abs=1e-6)


def test_sampler_arithmetic_stays_float32_when_the_network_returns_bf16():
    schedule = make_schedule("scaled_linear", zero_snr=False)
    timesteps = get_timesteps(1000, 5, "leading", 1)
    half = lambda x, t, labels: (0.3 * x).to(torch.bfloat16)  # noqa: E731  a network under autocast
    exact = lambda x, t, labels: (0.3 * x).to(torch.bfloat16).float()  # noqa: E731
    out = sample_in_batches(half, (2, 3, 4, 4), schedule, "eps", SamplingSettings(timesteps, amp_dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, sample_in_batches(exact, (2, 3, 4, 4), schedule, "eps", SamplingSettings(timesteps)))


def test_sample_in_batches_cuts_labels_to_the_batches_and_returns_every_image():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    oracle = Oracle(_x0(5), schedule, "v")
    images = sample_in_batches(oracle, (5, 3, 8, 8), schedule, "v",
                               SamplingSettings(get_timesteps(1000, 2, "trailing"), batch_size=2), labels=torch.arange(5))
    assert images.shape == (5, 3, 8, 8)
    assert [labels for _, labels in oracle.calls[::2]] == [[0, 1], [2, 3], [4]]  # 2 steps a batch


def test_sample_in_batches_gives_the_same_images_for_the_same_seed():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    settings = SamplingSettings(get_timesteps(1000, 3, "trailing"), eta=1.0, seed=3, batch_size=2)
    run = lambda: sample_in_batches(lambda x, t, c: 0.5 * x, (3, 3, 4, 4), schedule, "v", settings)  # noqa: E731
    torch.testing.assert_close(run(), run(), atol=0, rtol=0)


def test_each_batch_draws_its_x_t_then_its_offset_then_the_samplers_noise_from_one_generator():
    # The order every committed result was drawn in: change it and the same seed gives other images.
    schedule, model = make_schedule("scaled_linear", zero_snr=True), lambda x, t, c: 0.5 * x  # noqa: E731
    settings = SamplingSettings(get_timesteps(1000, 3, "trailing"), eta=0.5, offset_noise=0.1, seed=3, batch_size=2)
    generator, expected = torch.Generator().manual_seed(3), []
    for n in (2, 1):
        x = torch.randn((n, 3, 4, 4), generator=generator)
        x = x + 0.1 * torch.randn(n, 3, 1, 1, generator=generator)
        expected.append(sample(guided_denoiser(model, schedule, "v"), x, schedule, settings.timesteps, eta=0.5,
                               generator=generator, progress=False))
    out = sample_in_batches(model, (3, 3, 4, 4), schedule, "v", settings)
    torch.testing.assert_close(out, torch.cat(expected), atol=0, rtol=0)


def test_a_given_x_t_replaces_the_drawn_noise():
    schedule, seen = make_schedule("scaled_linear", zero_snr=True), []

    def record(x, t, c):
        seen.append(x.clone())
        return torch.zeros_like(x)

    x_T = torch.randn(3, 3, 4, 4)
    sample_in_batches(record, (3, 3, 4, 4), schedule, "v", SamplingSettings(get_timesteps(1000, 1, "trailing"), batch_size=2),
                      x_T=x_T)
    torch.testing.assert_close(torch.cat(seen), x_T, atol=0, rtol=0)


@pytest.mark.parametrize("sampler, eta, match", [("euler", 0.0, "unknown sampler"), ("dpmpp-2m", 0.5, "deterministic")])
def test_an_unknown_sampler_or_eta_beside_a_deterministic_one_is_refused(sampler, eta, match):
    schedule = make_schedule("scaled_linear", zero_snr=True)
    with pytest.raises(ValueError, match=match):
        sample(lambda x, t: (x, x), torch.zeros(1, 1, 2, 2), schedule, get_timesteps(1000, 2, "trailing"),
               sampler=sampler, eta=eta)


def test_offset_noise_sampling_starts_from_noise_with_a_random_mean_per_image_and_channel():
    x_T = initial_noise((2000, 3, 8, 8), torch.Generator().manual_seed(0), offset_noise=0.5)
    channel_means = x_T.mean((2, 3))
    # Each (image, channel) mean is s·N(0, 1) plus the mean of 64 unit normals: variance s² + 1/64.
    assert channel_means.std().item() == pytest.approx((0.5**2 + 1 / 64) ** 0.5, rel=0.05)


class GaussianDenoiser(torch.nn.Module):
    """The ideal denoiser of data whose every value is independently N(μ, s²):
    E[x0 | x_t] = μ + √ᾱ·s² / (ᾱ·s² + 1 − ᾱ) · (x_t − √ᾱ·μ), returned as a v-prediction."""

    def __init__(self, schedule, mean, std):
        super().__init__()
        self.schedule, self.mean, self.var = schedule, mean, std**2

    def forward(self, x_t, t, labels):
        ab = self.schedule.alpha_bar_at(t, x_t)
        x0 = self.mean + ab.sqrt() * self.var / (ab * self.var + 1 - ab) * (x_t - ab.sqrt() * self.mean)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return prediction_target(x0, eps, ab, "v")


def ddim_std_for_gaussian_data(alpha_bars: list[float], std: float, eta: float) -> float:
    """The std that DDIM with the ideal denoiser must produce, by the recursion of its variance.

    With u = x_t − √ᾱ·μ of variance V: x̂0 − μ = √ᾱ·s²·u/v and ε̂ = √(1 − ᾱ)·u/v, v = ᾱ·s² + 1 − ᾱ, so
    a step gives u' = g·u + σ·z with g = (√(ᾱ'ᾱ)·s² + √(1 − ᾱ' − σ²)·√(1 − ᾱ))/v: V' = g²V + σ².
    Not exactly s: finitely many steps, and the last one returns the posterior mean at t = 0.
    """
    var, s2 = 1.0, std**2  # x_T is pure noise at zero SNR
    for ab, ab_prev in zip(alpha_bars, alpha_bars[1:] + [1.0]):
        v = ab * s2 + 1 - ab
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) if ab_prev < 1 else 0.0
        g = (math.sqrt(ab_prev * ab) * s2 + math.sqrt(max(1 - ab_prev - sigma**2, 0)) * math.sqrt(1 - ab)) / v
        var = g**2 * var + sigma**2
    return math.sqrt(var)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_the_exact_denoiser_of_gaussian_data_samples_its_mean_and_std(eta):
    # Unlike the oracle above, this denoiser's x̂0 depends on x_t: the samples spread only if the
    # update carries ε̂ (and, with η = 1, the fresh noise) from step to step.
    schedule = make_schedule("scaled_linear", zero_snr=True)
    timesteps = get_timesteps(1000, 100, "trailing")
    out = sample_in_batches(GaussianDenoiser(schedule, mean=0.3, std=0.2), (4096, 1, 4, 4), schedule, "v",
                            SamplingSettings(timesteps, eta=eta, batch_size=4096))
    expected = ddim_std_for_gaussian_data(schedule.alpha_bar[timesteps].tolist(), 0.2, eta)
    assert out.mean().item() == pytest.approx(0.3, abs=0.005)
    assert out.std().item() == pytest.approx(expected, rel=0.01)
    assert expected == pytest.approx(0.2, rel=0.2)  # and the recursion itself lands near the data's std



@pytest.mark.parametrize("sampler", [sample_ddim, sample_dpmpp_2m])
def test_each_sampler_takes_only_a_denoiser_and_lands_on_the_x0_it_predicts(sampler):
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    alpha_bar = schedule.alpha_bar

    def oracle(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:  # the exact x̂0, and the ε it implies
        return x0, (x - alpha_bar[t].sqrt() * x0) / (1 - alpha_bar[t]).sqrt()

    out = sampler(oracle, torch.randn(2, 3, 4, 4), schedule, get_timesteps(1000, 7, "trailing"), progress=False)
    torch.testing.assert_close(out, x0)
