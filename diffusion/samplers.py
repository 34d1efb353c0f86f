"""Sampling, k-diffusion style: one loop per sampler over the timesteps of fix #3, each calling a
denoiser (x_t, t) ↦ (x̂0, ε̂); classifier-free guidance with the paper's rescale (fix #4) wrapped into
that denoiser, so the samplers never see w or φ; and the batched helper the scripts share.

    sample_in_batches → initial_noise, guided_denoiser, sample → sample_ddim | sample_dpmpp_2m → denoise → apply_cfg
"""
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .parameterization import check_defined, convert_prediction, predict_x0_eps
from .schedules import Schedule


# The label of "no class": training drops labels to it (--label-dropout), so the same network also
# learns the unconditional prediction that guidance pushes away from.
NULL_CLASS = -1
SAMPLERS = ("ddim", "dpmpp-2m")
# What every sampler calls: the clean image and the noise predicted from x_t at training timestep t.
Denoiser = Callable[[Tensor, int], tuple[Tensor, Tensor]]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The network's forward under autocast to `dtype`, or as it is for None (which the meta device needs)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def apply_cfg(cond: Tensor, uncond: Tensor, weight: float, rescale: float = 0.0) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022), rescaled toward the conditional prediction's
    standard deviation (fix #4: paper §3.4, Algorithm 2):

        x_cfg = x_uncond + w · (x_cond − x_uncond)
        x_rescaled = x_cfg · σ_cond / σ_cfg                 σ = std over all dims but the batch
        x_final = φ · x_rescaled + (1 − φ) · x_cfg           (φ = `rescale`; the paper uses 0.7)

    With zero SNR and v-prediction a large w inflates σ and over-exposes the image; the per-sample
    rescale undoes that. φ = 0 is plain CFG, w = 1 the conditional prediction itself.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    cfg = uncond + weight * (cond - uncond)
    if rescale == 0:
        return cfg
    dims = tuple(range(1, cond.ndim))
    factor = cond.std(dim=dims, keepdim=True) / cfg.std(dim=dims, keepdim=True)
    return cfg * (rescale * factor + (1 - rescale))


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance: weight w (1: the conditional prediction itself, no guidance), rescale φ
    (fix #4; 0: plain CFG, the paper uses 0.7), and `interval` = (low, high), the timesteps low ≤ t ≤ high
    where it acts (None: every step, as the paper)."""

    weight: float = 1.0
    rescale: float = 0.0
    interval: tuple[int, int] | None = None


def guided_denoiser(
    model: nn.Module, schedule: Schedule, prediction_type: str, labels: Tensor | None = None,
    guidance: Guidance = Guidance(), amp_dtype: torch.dtype | None = None,
) -> Denoiser:
    """The network as the denoiser every sampler calls: (x_t, t) ↦ (x̂0, ε̂) (`predict_x0_eps`),
    classifier-free guided as `guidance` says when labels are given and w ≠ 1.

    A guidance interval guides only at its timesteps and uses the conditional prediction elsewhere
    (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval"): guidance at the noisiest
    steps, where each image's overall brightness and colour are decided, narrows their spread.

    The conditional and unconditional (NULL_CLASS) branches run as one batch of 2B. Fix #4 guides and
    rescales v, as the paper's Algorithm 2, whatever the network predicts: each branch is converted to
    v = √ᾱ·ε̂ − √(1−ᾱ)·x̂0, `apply_cfg` combines the two, and the guided v gives (x̂0, ε̂).
    Only the network runs under autocast (`amp_dtype`); its output is cast to float32 before any
    arithmetic of the sampler, where ε-prediction near t = T amplifies errors by 1/√ᾱ_t. A timestep where
    the parameterisation cannot give both x̂0 and ε̂ (`check_defined`) is refused before the network runs.
    """
    alpha_bars = schedule.alpha_bar.tolist()  # read once: the loop then never waits on the device
    low, high = guidance.interval or (0, len(alpha_bars) - 1)

    def denoise(x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        check_defined(prediction_type, [alpha_bars[t]])
        t_batch = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        alpha_bar = torch.tensor(alpha_bars[t], dtype=x.dtype, device=x.device)
        if labels is None or guidance.weight == 1 or not low <= t <= high:
            with autocast(x.device, amp_dtype):
                output = model(x, t_batch, labels).float()
            return predict_x0_eps(x, output, alpha_bar, prediction_type)
        with autocast(x.device, amp_dtype):
            both = model(torch.cat([x, x]), torch.cat([t_batch, t_batch]),
                         torch.cat([labels, torch.full_like(labels, NULL_CLASS)])).float()
        # Fix #4: guide and rescale in v space, whatever the network predicts
        cond, uncond = (convert_prediction(x, out, alpha_bar, prediction_type, "v") for out in both.chunk(2))
        return predict_x0_eps(x, apply_cfg(cond, uncond, guidance.weight, guidance.rescale), alpha_bar, "v")

    return denoise


def ddim_update(
    x0: Tensor, eps: Tensor, alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float, eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """One DDIM step from t to the previous listed timestep (Song et al. 2021, eq. 12):

        x_prev = √ᾱ_prev · x̂0 + √(1 − ᾱ_prev − σ²) · ε̂ + σ · z,
        σ = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev).

    η = 0 is the deterministic sampler the paper uses. The last step of a run goes to
    ᾱ_prev = 1, which returns x̂0 itself.
    """
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=x0.dtype, device=x0.device)
    alpha_bar_prev = torch.as_tensor(alpha_bar_prev, dtype=x0.dtype, device=x0.device)
    x_prev = alpha_bar_prev.sqrt() * x0
    if eta == 0:
        return x_prev + (1 - alpha_bar_prev).sqrt() * eps
    if noise is None:
        raise ValueError("a DDIM step with eta > 0 needs a noise tensor")
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    return x_prev + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise


def dpmpp_2m_step(
    x_t: Tensor,
    x0_t: Tensor,
    x0_before: Tensor | None,
    alpha_bar_before: float | None,
    alpha_bar_t: float,
    alpha_bar_next: float,
) -> Tensor:
    """One DPM-Solver++(2M) step from t to the next listed timestep (Lu et al. 2022, data prediction,
    multistep), written in u = α/σ = e^λ with α = √ᾱ, σ = √(1 − ᾱ), where the ODE reads dy/du = x̂0
    for y = x/σ:

        y_next = y_t + (u_next − u_t) · D,     D = (1 + 1/(2r)) · x̂0_t − 1/(2r) · x̂0_before,
        r = (λ_t − λ_before) / (λ_next − λ_t),

    computed as x_next = (σ_next/σ_t) · x_t + (α_next − σ_next · u_t) · D, which is finite at zero
    SNR (ᾱ_t = 0: σ_t = 1, u_t = 0) without any clamp of ᾱ or clip of λ. D = x̂0_t (first order,
    exactly the DDIM step) on the first step, after a step that started at zero SNR (λ_before = −∞,
    so r = ∞), and on the last step to ᾱ = 1 (λ_next = ∞, so r = 0).
    """
    sigma_t, sigma_next = math.sqrt(1 - alpha_bar_t), math.sqrt(1 - alpha_bar_next)
    u_t = math.sqrt(alpha_bar_t) / sigma_t
    d = x0_t
    if x0_before is not None and alpha_bar_before > 0 and alpha_bar_next < 1:
        lam = lambda ab: 0.5 * (math.log(ab) - math.log1p(-ab))  # noqa: E731  λ = log(α/σ)
        r = (lam(alpha_bar_t) - lam(alpha_bar_before)) / (lam(alpha_bar_next) - lam(alpha_bar_t))
        d = (1 + 1 / (2 * r)) * x0_t - 1 / (2 * r) * x0_before
    return (sigma_next / sigma_t) * x_t + (math.sqrt(alpha_bar_next) - sigma_next * u_t) * d


def visited_alpha_bars(schedule: Schedule, timesteps: Tensor) -> list[float]:
    """ᾱ at each listed timestep, then 1 (the clean image, where every run ends).

    Fix #3 lives in using this list: each step goes from timesteps[i] to timesteps[i+1], never to
    t − T/S, which is wrong for trailing and linspace spacing."""
    return schedule.alpha_bar[timesteps].tolist() + [1.0]


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser, x: Tensor, schedule: Schedule, timesteps: Tensor, *, progress: bool = True,
    eta: float = 0.0, generator: torch.Generator | None = None,
) -> Tensor:
    """DDIM from x = x_T through `timesteps` (descending) to the clean image. The signature every sampler
    shares, (denoise, x, schedule, timesteps, *, progress), then DDIM's own: with η > 0 it adds fresh
    noise z at each step, drawn on the CPU from `generator` so that a seed means the same on every device."""
    alpha_bars = visited_alpha_bars(schedule, timesteps)
    for i, t in enumerate(tqdm(timesteps.tolist(), desc="ddim", disable=not progress, leave=False)):
        x0, eps = denoise(x, t)
        z = torch.randn(x.shape, generator=generator).to(x.device) if eta > 0 else None
        # DDIM step to the next listed timestep (fix #3), the last one to ᾱ = 1
        x = ddim_update(x0, eps, alpha_bars[i], alpha_bars[i + 1], eta, z)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser, x: Tensor, schedule: Schedule, timesteps: Tensor, *, progress: bool = True,
) -> Tensor:
    """DPM-Solver++(2M) from x = x_T through `timesteps` (descending) to the clean image: a second-order
    multistep solver of the same ODE as DDIM (η = 0), reusing the previous step's x̂0."""
    alpha_bars = visited_alpha_bars(schedule, timesteps)
    x0_before = None
    for i, t in enumerate(tqdm(timesteps.tolist(), desc="dpmpp-2m", disable=not progress, leave=False)):
        x0, _ = denoise(x, t)
        # 2nd-order step to the next listed timestep (fix #3) with x̂0 of this step and the one before;
        # first order on the first step, and on the last one to ᾱ = 1
        x = dpmpp_2m_step(x, x0, x0_before, alpha_bars[i - 1] if i else None, alpha_bars[i], alpha_bars[i + 1])
        x0_before = x0
    return x


def initial_noise(shape: tuple[int, ...], generator: torch.Generator | None = None, offset_noise: float = 0.0,
                  noise: Tensor | None = None) -> Tensor:
    """x_T ~ N(0, I) of `shape`, drawn on the CPU from `generator` so that a seed gives the same images on
    every device; `noise` replaces that draw (to measure what the noise's own content does to the sample).

    `offset_noise` = s adds s·N(0, 1) per image and channel, x_T = ε + s·m: the noise an offset-noise model
    was trained on. From plain N(0, I) such a model sees a narrower spread of per-image means than it
    learned, and its brightness stays squeezed.
    """
    x = torch.randn(shape, generator=generator) if noise is None else noise.float()
    if offset_noise:
        x = x + offset_noise * torch.randn(*shape[:2], *[1] * (len(shape) - 2), generator=generator)
    return x


@torch.no_grad()
def sample(
    denoise: Denoiser, x: Tensor, schedule: Schedule, timesteps: Tensor, *, sampler: str = "ddim", eta: float = 0.0,
    generator: torch.Generator | None = None, progress: bool = True,
) -> Tensor:
    """Images in [−1, 1] from x = x_T with `sampler` (one of SAMPLERS) visiting `timesteps` (descending, fix #3);
    `eta` and `generator` are DDIM's (its fresh noise, drawn on the CPU)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler != "ddim" and eta != 0:
        raise ValueError(f"eta > 0 is a DDIM option; {sampler} is deterministic")
    if sampler == "ddim":
        x = sample_ddim(denoise, x, schedule, timesteps, progress=progress, eta=eta, generator=generator)
    else:
        x = sample_dpmpp_2m(denoise, x, schedule, timesteps, progress=progress)
    return x.clamp(-1, 1)


@dataclass(frozen=True)
class SamplingSettings:
    """How `sample_in_batches` draws: the timesteps to visit (fix #3), the sampler and its η, the guidance
    (fix #4), the offset of x_T (`initial_noise`), the seed and the batch size that fix every draw of noise,
    and the dtype the network runs in under autocast (e.g. torch.bfloat16; the sampler's own arithmetic
    stays float32)."""

    timesteps: Tensor
    sampler: str = "ddim"
    eta: float = 0.0
    guidance: Guidance = Guidance()
    offset_noise: float = 0.0
    seed: int = 0
    batch_size: int = 256
    amp_dtype: torch.dtype | None = None


def sample_in_batches(
    model: nn.Module, shape: tuple[int, ...], schedule: Schedule, prediction_type: str, settings: SamplingSettings, *,
    labels: Tensor | None = None, x_T: Tensor | None = None, device: torch.device | str = "cpu",
) -> Tensor:
    """`shape[0]` images of `shape[1:]` (C, H, W) in [−1, 1], `settings.batch_size` at a time, on the CPU.

    One generator seeded with `settings.seed` draws all the noise, batch after batch: the batch's x_T,
    its offset, then the sampler's η noise, so a seed and a batch size give the same images on every
    device. `labels` and `x_T` (one per sample; x_T replaces the drawn ε) are cut to match the batches.
    """
    generator, chunks = torch.Generator().manual_seed(settings.seed), []
    for start in range(0, shape[0], settings.batch_size):
        n = min(settings.batch_size, shape[0] - start)
        x = initial_noise((n, *shape[1:]), generator, settings.offset_noise, None if x_T is None else x_T[start:start + n])
        chunk_labels = None if labels is None else labels[start:start + n].to(device)
        denoise = guided_denoiser(model, schedule, prediction_type, chunk_labels, settings.guidance, settings.amp_dtype)
        chunks.append(sample(denoise, x.to(device), schedule, settings.timesteps, sampler=settings.sampler,
                             eta=settings.eta, generator=generator, progress=False).cpu())
    return torch.cat(chunks)
