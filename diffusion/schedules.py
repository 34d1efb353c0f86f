"""Noise schedules: betas, ᾱ_t, and the paper's fix #1 (zero terminal SNR).

Timesteps are 0-indexed, t = 0 … T-1, and ᾱ_t = ∏_{s<=t} (1 − β_s).
"""
import math
from dataclasses import dataclass

import torch
from torch import Tensor

SCHEDULES = ("linear", "scaled_linear", "cosine")


def make_betas(name: str, num_train_steps: int = 1000) -> Tensor:
    """β_t for t = 0 … T−1 of a named variance-preserving schedule, float64.

    linear:        DDPM (Ho et al. 2020), β linear from 1e-4 to 0.02 at T = 1000.
    scaled_linear: Stable Diffusion, β = linspace(√0.00085, √0.012, T)² at T = 1000.
    cosine:        Nichol & Dhariwal 2021, ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008,
                   β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999).
    For T ≠ 1000 the linear endpoints are scaled by 1000/T (as improved-diffusion does), so the
    total noise Σβ, and with it ᾱ_T, stays that of the 1000-step schedule; cosine is defined
    in continuous time and needs no scaling. None of them reaches ᾱ_T = 0: that is the flaw.
    """
    if num_train_steps < 2:
        raise ValueError(f"num_train_steps must be at least 2, got {num_train_steps}")
    T, scale = num_train_steps, 1000 / num_train_steps
    if name == "linear":
        betas = torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    elif name == "scaled_linear":
        betas = torch.linspace((scale * 0.00085) ** 0.5, (scale * 0.012) ** 0.5, T, dtype=torch.float64) ** 2
    elif name == "cosine":
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if betas[-1] >= 1:
        raise ValueError(f"the {name} schedule scaled to {T} timesteps would need β ≥ 1; use more timesteps")
    return betas


def check_betas(betas: Tensor) -> None:
    """Refuse anything that is not a 1-D schedule with β in (0, 1], i.e. strictly decreasing ᾱ."""
    if betas.ndim != 1 or len(betas) < 2:
        raise ValueError(f"betas must be a 1-D tensor of at least 2 values, got shape {tuple(betas.shape)}")
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
        raise ValueError("betas must lie in (0, 1] so that alpha_bar strictly decreases")


def enforce_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Rescale a schedule so that SNR(T) = 0 (paper §3.1, Algorithm 1).

    In the paper's 1-indexed notation, with s_t = √ᾱ_t:  s'_t = (s_t − s_T) · s_1 / (s_1 − s_T),
    then ᾱ' = s'², α'_t = ᾱ'_t / ᾱ'_{t−1} (a ratio, with α'_1 = ᾱ'_1) and β' = 1 − α'. Here
    t = 1 … T are the indices 0 … T−1. The first ᾱ is kept, the last becomes exactly 0 (β = 1),
    so training sees pure noise at the last timestep, just as sampling starts from pure noise.

    Why the leak needs this: x_T = √ᾱ_T·x0 + √(1 − ᾱ_T)·ε, and the mean of x_T over its n = 3HW
    values is √ᾱ_T·mean(x0) plus noise of std about 1/√n. Stable Diffusion's √ᾱ_T = 0.068 against
    1/√3072 = 0.018 at 32×32: the image's mean brightness is readable from "pure noise", the network
    learns to use it, and at sampling time, when x_T carries none, it makes medium brightness. The
    more pixels, the more precisely the mean is read, so the leak grows with resolution.
    """
    check_betas(betas)
    betas = betas.to(torch.float64)
    sqrt_alpha_bar = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * first / (first - last)
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class Schedule:
    """ᾱ_t and the quantities derived from it, for integer timesteps t ∈ [0, T)."""

    betas: Tensor

    def __post_init__(self) -> None:
        check_betas(self.betas)
        object.__setattr__(self, "betas", self.betas.to(torch.float64))
        object.__setattr__(self, "alpha_bar", torch.cumprod(1 - self.betas, 0))
        object.__setattr__(self, "_tables", {})  # ᾱ per (device, dtype), so a lookup never leaves the device

    @property
    def num_train_steps(self) -> int:
        return len(self.betas)

    @property
    def sqrt_alpha_bar(self) -> Tensor:
        return self.alpha_bar.sqrt()

    @property
    def snr(self) -> Tensor:
        """SNR(t) = ᾱ_t / (1 − ᾱ_t)."""
        return self.alpha_bar / (1 - self.alpha_bar)

    def alpha_bar_at(self, t: Tensor, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """ᾱ_t gathered for a batch of timesteps, shaped (B, 1, …, 1) to broadcast against `like`, on its device
        and in its dtype (or in `dtype`).

        Timesteps on the CPU are range-checked (on an accelerator a check would wait for the device).
        """
        if t.device.type == "cpu" and ((t < 0).any() or (t >= self.num_train_steps).any()):
            raise ValueError(f"timesteps must lie in [0, {self.num_train_steps}), got {t.tolist()}")
        key = (like.device, dtype or like.dtype)
        if key not in self._tables:
            self._tables[key] = self.alpha_bar.to(key[1]).to(like.device)
        return self._tables[key][t.to(like.device)].view(-1, *[1] * (like.ndim - 1))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Forward process q(x_t | x0): x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε."""
        alpha_bar = self.alpha_bar_at(t, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def make_schedule(name: str, num_train_steps: int = 1000, zero_snr: bool = False) -> Schedule:
    """A named schedule, optionally rescaled to zero terminal SNR (fix #1)."""
    betas = make_betas(name, num_train_steps)
    if zero_snr:
        betas = enforce_zero_terminal_snr(betas)
    return Schedule(betas)
