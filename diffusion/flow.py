"""Rectified flow (Stable Diffusion 3): another way to reach zero terminal SNR, beside the paper's.

The straight path x_t = (1 − t)·x0 + t·ε is pure noise at t = 1 by construction, and the network
predicts the velocity ε − x0. Written here as a VP path in other coordinates (Gao et al. 2024), the
flow runs on the paper's samplers, guidance and ideal denoiser unchanged: `flow_schedule` is its
path as a VP schedule, `FlowAsV` its network seen as a v-predicting one. Its Euler sampler is DDIM
on that path (tests/test_flow.py shows the two give the same samples).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .schedules import Schedule

FLOW_TIMES = ("logit-normal", "uniform")
# A flow network sees 1000·t as its timestep, so that its sinusoidal embedding spans the range it
# spans for the integer timesteps of a 1000-step diffusion schedule.
FLOW_TIME_SCALE = 1000.0


def flow_schedule(num_train_steps: int = 1000) -> Schedule:
    """Rectified flow's path (Stable Diffusion 3), x_t = (1 − t)·x0 + t·ε, as a VP schedule at the
    times t_k = (k + 1)/T, k = 0 … T−1 (Gao et al. 2024, "Diffusion Meets Flow Matching"):

        x_t / c(t) = √ᾱ·x0 + √(1 − ᾱ)·ε,    c(t) = √((1 − t)² + t²),    ᾱ(t) = (1 − t)² / c(t)²

    ᾱ(1) = 0: the flow has zero terminal SNR by construction (fix #1 is built in). Every sampler and
    the ideal denoiser then run on it unchanged, with the flow network seen through `FlowAsV`.
    """
    t = torch.arange(1, num_train_steps + 1, dtype=torch.float64) / num_train_steps
    alpha_bar = (1 - t) ** 2 / ((1 - t) ** 2 + t**2)
    return Schedule(1 - torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]]))


def flow_time(alpha_bar: Tensor) -> Tensor:
    """The flow time of a VP noise level, the inverse of `flow_schedule`'s ᾱ(t): with α = √ᾱ and
    σ = √(1 − ᾱ), (1 − t)/c = α and t/c = σ, so t = σ / (α + σ)."""
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return sigma / (alpha + sigma)


def flow_velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """Rectified flow's target (Liu et al. 2023; SD3): the velocity u = dx_t/dt = ε − x0 of the
    straight path x_t = (1 − t)·x0 + t·ε. At t = 1, x̂0 = x_t − û: the image from pure noise, as v_T = −x0."""
    return noise - x0


def flow_loss(model: nn.Module, x0: Tensor, labels: Tensor | None = None, time_sampling: str = "logit-normal") -> Tensor:
    """Flow-matching loss (SD3, Esser et al. 2024): L = E_{t, x0, ε} ‖(ε − x0) − û(x_t, t, c)‖².

    t ~ sigmoid(N(0, 1)) ("logit-normal", SD3's best setting, rf/lognorm(0, 1): it spends the training
    on the middle of the path, where the velocity is hardest to guess) or U(0, 1). Both leave t = 1
    at density 0 in the limit, yet the path there is pure noise and the target −x0 + ε is learnt from
    the neighbouring t. Random numbers come from torch's global RNG, as in `diffusion_loss`.
    """
    if time_sampling not in FLOW_TIMES:
        raise ValueError(f"unknown flow time sampling {time_sampling!r}; choose one of {', '.join(FLOW_TIMES)}")
    n = x0.shape[0]
    u = torch.randn(n, device=x0.device) if time_sampling == "logit-normal" else torch.rand(n, device=x0.device)
    t = u.sigmoid() if time_sampling == "logit-normal" else u
    noise = torch.randn_like(x0)
    t_ = t.view(-1, *[1] * (x0.ndim - 1))
    x_t = (1 - t_) * x0 + t_ * noise
    output = model(x_t, FLOW_TIME_SCALE * t, labels).float()
    return F.mse_loss(output, flow_velocity_target(x0, noise))


class FlowAsV(nn.Module):
    """A flow network (x_t, t) ↦ û, seen as a v-predicting network of the VP path of `flow_schedule`,
    so that every sampler, guidance and the experiment's tools run on it unchanged.

    At the VP point (x, ᾱ): t = `flow_time`(ᾱ), the flow sample is c·x with c = √((1 − t)² + t²), and
    with x0 = x_f − t·u, ε = x_f + (1 − t)·u and v = ((1 − t)·ε − t·x0)/c:

        v = (1 − 2t)·x + c·û(c·x, t)

    Timesteps are read through `schedule` (any VP schedule works; `flow_schedule` is the flow's own).
    """

    def __init__(self, model: nn.Module, schedule: Schedule):
        super().__init__()
        self.model, self.schedule = model, schedule
        self.config = getattr(model, "config", None)  # the UNet's size and classes, for the scripts

    def forward(self, x: Tensor, timesteps: Tensor, labels: Tensor | None = None) -> Tensor:
        # ᾱ in float64: in float32, flow_time would lose digits near t = 1
        t = flow_time(self.schedule.alpha_bar_at(timesteps, x, dtype=torch.float64))
        c = ((1 - t) ** 2 + t**2).sqrt()
        t, c = t.to(x.dtype), c.to(x.dtype)
        u = self.model(c * x, FLOW_TIME_SCALE * t.flatten(), labels).float()
        return (1 - 2 * t) * x + c * u
