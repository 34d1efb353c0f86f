"""DPM-Solver++(2M) against DDIM at zero terminal SNR, on data whose exact ODE solution is known."""
import math

import pytest
import torch

from diffusion import SAMPLERS, SPACINGS, SamplingSettings, Schedule, dpmpp_2m_step, get_timesteps, make_schedule, sample_in_batches
from tests.conftest import ddim_step

MEAN, STD = 0.3, 0.5


class GaussianDenoiser(torch.nn.Module):
    """The exact posterior mean of per-pixel N(MEAN, STD²) data, returned as a v prediction:

        x̂0 = MEAN + α·STD² / (α²·STD² + σ²) · (x_t − α·MEAN),   α = √ᾱ, σ = √(1 − ᾱ).

    Its probability-flow ODE has a closed-form solution: x_t = α·MEAN + √(α²STD² + σ²)·z along each
    path, so from pure noise at zero SNR (α = 0, σ = 1) the exact sample is MEAN + STD·x_T.
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x_t, t, labels=None):
        ab = self.schedule.alpha_bar[t].view(-1, *[1] * (x_t.ndim - 1)).to(x_t)
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        x0 = MEAN + alpha * STD**2 / (ab * STD**2 + 1 - ab) * (x_t - alpha * MEAN)
        return alpha * (x_t - alpha * x0) / sigma - sigma * x0  # v = α ε − σ x0


def solve(sampler, steps, spacing="trailing", schedule=None):
    schedule = schedule or make_schedule("scaled_linear", zero_snr=True)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))  # the noise sample_in_batches draws
    timesteps = get_timesteps(1000, steps, spacing, 1 if spacing == "leading" else 0)
    out = sample_in_batches(GaussianDenoiser(schedule), x_T.shape, schedule, "v", SamplingSettings(timesteps, sampler=sampler))
    return out, x_T


def error(sampler, steps, spacing="linspace"):
    out, x_T = solve(sampler, steps, spacing)
    return (out - (MEAN + STD * x_T).clamp(-1, 1)).abs().mean().item()  # the sampler clamps to [−1, 1]


def fitted_order(sampler, steps=(50, 100, 200)):
    """−slope of log(error) against log(S), least squares."""
    xs, ys = [math.log(s) for s in steps], [math.log(error(sampler, s)) for s in steps]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# Every solver's last step, from the last listed timestep to σ = 0 (λ = ∞), is first order. With
# trailing spacing that timestep is T/S − 1, so its error alone is O(1/S) for any solver; linspace
# ends at t = 0, where the jump is tiny, and shows each solver's own order.
def test_ddim_error_against_the_exact_ode_solution_falls_at_first_order():
    assert 0.7 < fitted_order("ddim") < 1.3


def test_dpmpp_2m_error_against_the_exact_ode_solution_falls_at_about_second_order():
    assert 1.5 < fitted_order("dpmpp-2m") < 2.6


def test_dpmpp_2m_is_more_accurate_than_ddim_with_trailing_steps():
    for steps in (10, 25, 50):
        assert error("dpmpp-2m", steps, "trailing") < 0.8 * error("ddim", steps, "trailing")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_one_step_from_zero_snr_returns_the_data_mean(sampler):
    out, _ = solve(sampler, 1)
    torch.testing.assert_close(out, torch.full_like(out, MEAN))


def test_first_dpmpp_2m_step_equals_the_ddim_step():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x_T, t = torch.randn(2, 3, 4, 4), torch.tensor([999, 999])
    v = GaussianDenoiser(schedule)(x_T, t)
    ab_t, ab_next = schedule.alpha_bar[999].item(), schedule.alpha_bar[899].item()
    x0 = -v  # at ᾱ = 0, x̂0 = −v
    torch.testing.assert_close(dpmpp_2m_step(x_T, x0, None, None, ab_t, ab_next), ddim_step(x_T, v, ab_t, ab_next, "v"))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_no_nan_or_inf_at_zero_terminal_snr_for_any_step_count(sampler, spacing):
    schedule = make_schedule("scaled_linear", zero_snr=True)
    for steps in range(1, 51):
        out, _ = solve(sampler, steps, spacing, schedule)
        assert torch.isfinite(out).all(), f"{sampler}, {spacing}, {steps} steps"


def test_eps_prediction_at_zero_snr_is_refused_by_every_sampler():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    for sampler in SAMPLERS:
        with pytest.raises(ValueError, match="epsilon"):
            sample_in_batches(lambda x, t, c: torch.zeros_like(x), (1, 1, 2, 2), schedule, "eps",
                              SamplingSettings(get_timesteps(1000, 5, "trailing"), sampler=sampler))


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler"):
        solve("euler", 5)


def clamped(schedule: Schedule, alpha_bar_T: float = 2.0**-24) -> Schedule:
    """The zero-SNR schedule as diffusers' Euler, DPM-Solver++ and UniPC schedulers use it: ᾱ_T = 2⁻²⁴."""
    betas = schedule.betas.clone()
    betas[-1] = 1 - alpha_bar_T / schedule.alpha_bar[-2]
    return Schedule(betas)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_other_libraries_clamp_moves_samples_by_under_a_thousandth(sampler):
    # Measured here with the exact Gaussian denoiser, largest pixel change from ᾱ_T = 2⁻²⁴ instead of 0:
    # DDIM 3.0e-5 / 3.2e-5 / 3.5e-5 and 2M 7.0e-4 / 1.5e-4 / 4.8e-5 at 5 / 10 / 25 trailing steps
    # (2M more, because the clamp makes its second step second order with a huge step ratio).
    # Small, since √ᾱ_T = 2⁻¹² (σ ≈ 4096 in diffusers' units): the clamp only serves σ-based code.
    exact = make_schedule("scaled_linear", zero_snr=True)
    (ours, _), (theirs, _) = solve(sampler, 10, schedule=exact), solve(sampler, 10, schedule=clamped(exact))
    difference = (ours - theirs).abs().max().item()
    assert 0 < difference < 1e-3


def test_dpmpp_2m_equals_diffusers_without_zero_snr():
    diffusers = pytest.importorskip("diffusers")
    schedule = make_schedule("scaled_linear", zero_snr=False)
    denoiser = GaussianDenoiser(schedule)
    for steps in (3, 10, 25):
        timesteps = get_timesteps(1000, steps, "leading", 1)
        ours = sample_in_batches(denoiser, (4, 1, 4, 4), schedule, "v", SamplingSettings(timesteps, sampler="dpmpp-2m"))
        scheduler = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="v_prediction", algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
        scheduler.set_timesteps(timesteps=timesteps.tolist())
        x = torch.randn((4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
        for t in scheduler.timesteps:
            x = scheduler.step(denoiser(x, torch.full((4,), int(t))), t, x).prev_sample
        torch.testing.assert_close(ours, x.clamp(-1, 1), atol=1e-5, rtol=0)
