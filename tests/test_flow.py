"""Rectified flow (SD3) as this library writes it: a VP path in other coordinates (Gao et al. 2024)."""
import math

import pytest
import torch

from diffusion import (FlowAsV, SamplingSettings, flow_loss, flow_schedule, flow_time, get_timesteps, sample_in_batches,
                       v_target)
from diffusion.flow import FLOW_TIME_SCALE


def test_the_flow_path_is_a_vp_path_scaled_by_c_of_t():
    schedule, x0, eps = flow_schedule(1000), torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    for k in (0, 249, 500, 998, 999):
        t, ab = (k + 1) / 1000, schedule.alpha_bar[k]
        c = math.sqrt((1 - t) ** 2 + t**2)
        torch.testing.assert_close(c * (ab.sqrt() * x0 + (1 - ab).sqrt() * eps).float(), (1 - t) * x0 + t * eps)
        assert flow_time(schedule.alpha_bar[k]).item() == pytest.approx(t)


def test_the_flow_path_has_zero_terminal_snr_by_construction():
    schedule = flow_schedule(1000)
    assert schedule.alpha_bar[-1] == 0 and (schedule.alpha_bar.diff() < 0).all()


class GaussianFlow(torch.nn.Module):
    """The exact velocity of data whose every value is N(μ, s²): with x_t = (1 − t)·x0 + t·ε,
    E[x0 | x_t] = μ + (1 − t)·s² / ((1 − t)²·s² + t²) · (x_t − (1 − t)·μ) and û = (x_t − x̂0)/t."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.var = mean, std**2

    def forward(self, x, time, labels=None):
        t = (time / 1000).view(-1, 1, 1, 1).double()
        x0 = self.mean + (1 - t) * self.var / ((1 - t) ** 2 * self.var + t**2) * (x - (1 - t) * self.mean)
        return ((x - x0) / t).float()


def sample_flow_euler(model, shape: tuple[int, ...], times: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rectified flow's Euler sampler (SD3): from x_1 ~ N(0, I), visit the flow times `times` (descending,
    the first 1) and end at t = 0, each step x ← x + (t_next − t)·û(x, t)."""
    x = torch.randn(shape, generator=generator)
    times = torch.cat([times.double(), times.new_zeros(1, dtype=torch.float64)]).tolist()
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * model(x, torch.full((shape[0],), FLOW_TIME_SCALE * t)).float()
    return x.clamp(-1, 1)


@pytest.mark.parametrize("steps", [5, 50])
def test_euler_on_the_flow_gives_the_samples_of_ddim_on_its_vp_path(steps):
    # DDIM's step x' = √ᾱ'·x̂0 + √(1 − ᾱ')·ε̂ on the VP path is Euler's, x̂0 = x − t·û and ε̂ = x + (1 − t)·û,
    # scaled by c(t'): the flow needs no sampler of its own.
    schedule, model, shape = flow_schedule(1000), GaussianFlow(0.3, 0.2), (512, 1, 4, 4)
    timesteps = get_timesteps(1000, steps, "trailing")
    euler = sample_flow_euler(model, shape, (timesteps + 1) / 1000, generator=torch.Generator().manual_seed(0))
    ddim = sample_in_batches(FlowAsV(model, schedule), shape, schedule, "v", SamplingSettings(timesteps, batch_size=512))
    torch.testing.assert_close(euler, ddim, atol=1e-5, rtol=0)
    if steps == 50:
        assert euler.mean().item() == pytest.approx(0.3, abs=0.01)
        assert euler.std().item() == pytest.approx(0.2, rel=0.05)


def test_flow_as_v_returns_the_v_of_the_vp_path_for_the_exact_velocity():
    schedule, x0, eps = flow_schedule(1000), torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    k = torch.tensor([0, 400, 999])
    t = ((k + 1) / 1000).view(-1, 1, 1, 1)
    x_flow = (1 - t) * x0 + t * eps
    exact = lambda x, time, labels: torch.where((x - x_flow).abs().max() < 1e-4, eps - x0, torch.nan)  # noqa: E731
    ab = schedule.alpha_bar_at(k, x0)
    x_vp = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    torch.testing.assert_close(FlowAsV(exact, schedule)(x_vp, k), v_target(x0, eps, ab), atol=1e-5, rtol=1e-5)


class Recorder(torch.nn.Module):
    def forward(self, x, time, labels=None):
        self.x_t, self.t = x, time / 1000
        return torch.zeros_like(x)


def test_flow_loss_regresses_the_velocity_of_the_straight_path():
    # A network that answers 0: the loss is the mean of (ε − x0)², with ε read back from its input x_t.
    torch.manual_seed(0)
    x0, net = torch.full((4, 3, 2, 2), 0.5), Recorder()
    loss = flow_loss(net, x0)
    t = net.t.view(-1, 1, 1, 1)
    eps = (net.x_t - (1 - t) * x0) / t
    assert loss.item() == pytest.approx((eps - x0).square().mean().item(), rel=1e-5)


class ExactFlow(torch.nn.Module):
    """Knows x0, so reads ε back from its input x_t = (1 − t)·x0 + t·ε, and answers the velocity
    `sign`·(ε − x0): +1 is the straight path's dx_t/dt, −1 the same written with the wrong sign."""

    def __init__(self, x0, sign):
        super().__init__()
        self.x0, self.sign = x0, sign

    def forward(self, x, time, labels=None):
        t = (time.double() / 1000).view(-1, 1, 1, 1)
        self.eps = (x.double() - (1 - t) * self.x0) / t
        return (self.sign * (self.eps - self.x0)).float()


@pytest.mark.parametrize("time_sampling", ["logit-normal", "uniform"])
def test_flow_loss_is_zero_for_the_velocity_eps_minus_x0(time_sampling):
    torch.manual_seed(0)
    x0 = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert flow_loss(ExactFlow(x0, +1), x0, time_sampling=time_sampling).item() < 1e-8


def test_flow_loss_of_the_reversed_velocity_x0_minus_eps_is_four_times_the_velocity_squared():
    # û = x0 − ε misses u = ε − x0 by 2u: the loss is the mean of 4·(ε − x0)², far from 0.
    torch.manual_seed(0)
    x0 = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    net = ExactFlow(x0, -1)
    loss = flow_loss(net, x0)
    assert loss.item() == pytest.approx(4 * (net.eps - x0).square().mean().item(), rel=1e-4)
    assert loss.item() > 1


@pytest.mark.parametrize("time_sampling, logit_mean, logit_std", [("logit-normal", 0.0, 1.0), ("uniform", 0.0, math.pi / 3**0.5)])
def test_flow_training_draws_t_logit_normal_as_sd3_or_uniform(time_sampling, logit_mean, logit_std):
    torch.manual_seed(0)
    net = Recorder()
    flow_loss(net, torch.zeros(20_000, 1, 1, 1), time_sampling=time_sampling)
    logit = torch.logit(net.t.double())
    assert logit.mean().item() == pytest.approx(logit_mean, abs=0.05)
    assert logit.std().item() == pytest.approx(logit_std, rel=0.03)  # the logistic distribution's std is π/√3
