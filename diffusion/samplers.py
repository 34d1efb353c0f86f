"""DDIM sampling: one pure step function and the loop that chains it."""
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .guidance import apply_cfg
from .parameterization import predict_x0_eps
from .schedules import Schedule


def ddim_step(
    x_t: Tensor,
    model_output: Tensor,
    alpha_bar_t: Tensor | float,
    alpha_bar_prev: Tensor | float,
    prediction_type: str,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """One DDIM step from t to the previous listed timestep (Song et al. 2021, eq. 12):

        x_prev = √ᾱ_prev · x̂0 + √(1 − ᾱ_prev − σ²) · ε̂ + σ · z,
        σ = η · √((1 − ᾱ_prev)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_prev).

    η = 0 is the deterministic sampler the paper uses. The last step of a run goes to
    ᾱ_prev = 1, which returns x̂0 itself.
    """
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    alpha_bar_prev = torch.as_tensor(alpha_bar_prev, dtype=x_t.dtype, device=x_t.device)
    x0, eps = predict_x0_eps(x_t, model_output, alpha_bar_t, prediction_type)
    x_prev = alpha_bar_prev.sqrt() * x0
    if eta == 0:
        return x_prev + (1 - alpha_bar_prev).sqrt() * eps
    if noise is None:
        raise ValueError("ddim_step with eta > 0 needs a noise tensor")
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    return x_prev + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise


def guided_output(
    model: nn.Module, x: Tensor, t: Tensor, labels: Tensor | None, guidance: float, rescale: float,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """The model's prediction at (x, t), classifier-free guided when labels are given and w ≠ 1.

    The conditional and unconditional branches run as one batch of 2B; label −1 is the null class.
    Only the network runs under autocast (`amp_dtype`); its output is cast to float32 before any
    arithmetic of the sampler, where ε-prediction near t = T amplifies errors by 1/√ᾱ_t.
    """
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if labels is None or guidance == 1:
            return model(x, t, labels).float()
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, -1)])).float()
    pos, neg = both.chunk(2)
    return apply_cfg(pos, neg, guidance, rescale)


@torch.no_grad()
def sample(
    model: nn.Module,
    shape: tuple[int, ...],
    schedule: Schedule,
    timesteps: Tensor,
    prediction_type: str,
    labels: Tensor | None = None,
    guidance: float = 1.0,
    rescale: float = 0.0,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Generate images in [−1, 1] with DDIM from x_T ~ N(0, I), visiting `timesteps` in order.

    Each step goes from timesteps[i] to timesteps[i+1] (never t − T/S, which is wrong for
    trailing and linspace spacing), and the last one to ᾱ = 1. Noise is drawn on the CPU
    from `generator`, so a seed gives the same images on every device. `amp_dtype` (e.g.
    torch.bfloat16) runs the network under autocast; the sampler's own arithmetic stays float32.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    x = torch.randn(shape, generator=generator).to(device)
    if labels is not None:
        labels = labels.to(device)
    alpha_bars = schedule.alpha_bar[timesteps].tolist() + [1.0]
    for i, t in enumerate(tqdm(timesteps.tolist(), desc="sampling", disable=not progress, leave=False)):
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        output = guided_output(model, x, t_batch, labels, guidance, rescale, amp_dtype)
        noise = torch.randn(shape, generator=generator).to(device) if eta > 0 else None
        x = ddim_step(x, output, alpha_bars[i], alpha_bars[i + 1], prediction_type, eta, noise)
    return x.clamp(-1, 1)
