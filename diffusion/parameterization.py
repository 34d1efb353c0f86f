"""What the network predicts (ε, v or x0), and the training loss (fix #2: v-prediction).

Every conversion here takes ᾱ_t as a tensor that broadcasts against x (see
`Schedule.alpha_bar_at`), and is exact at the end points where it is defined.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .schedules import Schedule

PREDICTION_TYPES = ("eps", "v", "x0")


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose one of {', '.join(PREDICTION_TYPES)}")


def check_defined(prediction_type: str, alpha_bars) -> None:
    """Refuse a parameterisation at noise levels where it cannot give both x̂0 and ε̂ (see `predict_x0_eps`):
    ε-prediction where ᾱ = 0, as at zero terminal SNR, where x_t is pure noise and
    x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ divides by zero (paper §3.2); x0-prediction where ᾱ = 1 (no noise to name)."""
    check_prediction_type(prediction_type)
    if prediction_type == "eps" and 0.0 in alpha_bars:
        raise ValueError("epsilon-prediction cannot give x0 where alpha_bar = 0 (a zero-SNR schedule's last timestep): "
                         "use v- or x0-prediction (--prediction v), or --no-zero-snr")
    if prediction_type == "x0" and 1.0 in alpha_bars:
        raise ValueError("x0-prediction cannot give the noise where alpha_bar = 1 (no noise at all)")


def check_pairing(prediction_type: str, zero_snr: bool) -> None:
    """Refuse a training recipe whose network could not sample: ε-prediction on a zero-SNR schedule."""
    check_defined(prediction_type, [0.0] if zero_snr else [])


def v_target(x0: Tensor, noise: Tensor, alpha_bar: Tensor) -> Tensor:
    """Velocity target (paper §3.2): v_t = √ᾱ_t · ε − √(1 − ᾱ_t) · x0.

    At zero terminal SNR (ᾱ_T = 0) this is v_T = −x0: the network must predict
    the clean image from pure noise, which is what makes the last step learnable.
    """
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def prediction_target(x0: Tensor, noise: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """The regression target for a parameterisation: ε, v_t (above) or x0."""
    check_prediction_type(prediction_type)
    if prediction_type == "eps":
        return noise
    if prediction_type == "v":
        return v_target(x0, noise, alpha_bar)
    return x0


def predict_x0_eps(x_t: Tensor, model_output: Tensor, alpha_bar: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """Turn a network's output of any parameterisation at (x_t, t) into the pair every sampler
    needs, (x̂0, ε̂), using x_t = √ᾱ·x0 + √(1−ᾱ)·ε.

    v:   x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂,      ε̂ = √(1−ᾱ)·x_t + √ᾱ·v̂       (exact for all ᾱ ∈ [0, 1])
    eps: x̂0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ                                (undefined at ᾱ = 0)
    x0:  ε̂  = (x_t − √ᾱ·x̂0) / √(1−ᾱ)                               (undefined at ᾱ = 1)

    Where ᾱ is on the CPU the end points are refused here (`check_defined`); the guided denoiser checks
    each step's before the network runs.
    """
    check_prediction_type(prediction_type)
    sqrt_ab, sqrt_one_minus_ab = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "v":
        return sqrt_ab * x_t - sqrt_one_minus_ab * model_output, sqrt_one_minus_ab * x_t + sqrt_ab * model_output
    if alpha_bar.device.type == "cpu":
        check_defined(prediction_type, alpha_bar.unique().tolist())
    if prediction_type == "eps":
        return (x_t - sqrt_one_minus_ab * model_output) / sqrt_ab, model_output
    return model_output, (x_t - sqrt_ab * model_output) / sqrt_one_minus_ab


def convert_prediction(x_t: Tensor, model_output: Tensor, alpha_bar: Tensor, source: str, target: str) -> Tensor:
    """Re-express an output of parameterisation `source` at (x_t, ᾱ) as one of `target`: through
    (x̂0, ε̂) of `predict_x0_eps`, then `prediction_target`. The same tensor when the two agree.

    Every conversion is affine in the output for a fixed x_t, so a difference of two outputs (as in
    guidance) converts by its linear part alone; a ratio of standard deviations does not.
    """
    if source == target:
        return model_output
    x0, eps = predict_x0_eps(x_t, model_output, alpha_bar, source)
    return prediction_target(x0, eps, alpha_bar, target)


def diffusion_loss(
    model: nn.Module,
    x0: Tensor,
    schedule: Schedule,
    prediction_type: str,
    labels: Tensor | None = None,
    offset_noise: float = 0.0,
    loss_space: str | None = None,
) -> Tensor:
    """Denoising loss (paper §3.2): L = E_{t, x0, ε} ‖target_t − f(x_t, t, c)‖², every t weighted alike.

    Why the space matters at zero SNR: the three losses are one loss with different weights on
    the image error, ‖ε − ε̂‖² = SNR·‖x0 − x̂0‖² and ‖v − v̂‖² = (1 + SNR)·‖x0 − x̂0‖². At t = T
    the SNR is 0, so the ε-loss puts no weight at all on the one step where the network must
    produce the image from nothing; the v-loss and the x0-loss weight it by 1. `loss_space`
    regresses in another space than the network predicts (e.g. the paper's v-loss for an
    x0-predicting network), through the conversions of `predict_x0_eps`.

    t ~ U{0, …, T−1} (the paper's) and ε ~ N(0, I) come from torch's global RNG, in that order, so a
    checkpoint that saves that RNG state resumes bit-exactly. `offset_noise` = s adds s·N(0, I) per
    (sample, channel) to ε: the earlier workaround for the brightness problem, kept as a baseline.
    """
    check_prediction_type(prediction_type)
    t = torch.randint(0, schedule.num_train_steps, (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    if offset_noise:
        noise = noise + offset_noise * torch.randn(x0.shape[0], x0.shape[1], *[1] * (x0.ndim - 2), device=x0.device)
    x_t = schedule.add_noise(x0, noise, t)
    alpha_bar = schedule.alpha_bar_at(t, x0)
    output = model(x_t, t, labels).float()
    if loss_space is not None:
        output = convert_prediction(x_t, output, alpha_bar, prediction_type, loss_space)
    target = prediction_target(x0, noise, alpha_bar, loss_space or prediction_type)
    return F.mse_loss(output, target)
