"""The ideal denoiser of a finite dataset: the exact posterior mean E[x0 | x_t], in closed form.

It is what a network trained to convergence on N images would compute, so plugging it
into the sampler shows what the schedule and the step spacing do with no training error.
"""
import torch
from torch import Tensor, nn

from .parameterization import prediction_target
from .schedules import Schedule


class IdealDenoiser(nn.Module):
    """Posterior mean E[x0 | x_t] over the data {x0_i}, returned as an ε / v / x0 prediction.

        x̂0(x_t, t) = Σ_i w_i x0_i,    w = softmax_i( −‖x_t − √ᾱ_t x0_i‖² / (2(1 − ᾱ_t)) )

    This minimises the x0-loss exactly; the ε and v versions follow from x̂0 and x_t.
    At zero SNR all weights are equal and x̂0 is the data mean whatever x_t is. At a
    schedule whose ᾱ_T > 0 the weights still favour images whose brightness matches the
    noise's (near-zero) mean: the leak the paper describes. Labels are ignored.

    With `offset_noise` = s the noise is ε + s·m, m ~ N(0, 1) per image and channel (the old
    workaround, paper §5.4): its covariance is Σ = I + s²·J, J all ones within a channel, and the
    squared distance above becomes the Mahalanobis one, rᵀΣ⁻¹r = ‖r‖² − s²/(1 + s²·HW) · Σ_c (Σ_pixels r_c)²
    (Sherman–Morrison, channel by channel): a per-channel offset of the image costs less.
    """

    def __init__(self, data: Tensor, schedule: Schedule, prediction_type: str, chunk: int = 256,
                 offset_noise: float = 0.0):
        super().__init__()
        self.channels = data.shape[1]
        self.register_buffer("data", data.flatten(1).double())
        self.register_buffer("sq_norms", (self.data**2).sum(1))
        self.register_buffer("channel_sums", self.data.view(len(data), self.channels, -1).sum(2))
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.chunk = chunk
        pixels = self.data.shape[1] // self.channels
        self.offset_weight = offset_noise**2 / (1 + offset_noise**2 * pixels)

    def posterior_mean(self, x_t: Tensor, t: Tensor) -> Tensor:
        return torch.cat([self._posterior_mean(x, s) for x, s in zip(x_t.split(self.chunk), t.split(self.chunk))])

    def _posterior_mean(self, x_t: Tensor, t: Tensor) -> Tensor:
        x = x_t.flatten(1).double()
        alpha_bar = self.schedule.alpha_bar[t.cpu()].to(x).unsqueeze(1)
        # ‖x − a·y‖² = ‖x‖² − 2a·x·y + a²‖y‖²; ‖x‖² is the same for every i and drops out of the softmax.
        a = alpha_bar.sqrt()
        distance = -2 * a * x @ self.data.T + alpha_bar * self.sq_norms
        if self.offset_weight:  # − w·Σ_c (S_c(x) − a·S_c(y))², again without the terms in x alone
            sums = x.view(len(x), self.channels, -1).sum(2)
            distance -= self.offset_weight * (-2 * a * sums @ self.channel_sums.T + alpha_bar * (self.channel_sums**2).sum(1))
        logits = -distance / (2 * (1 - alpha_bar))
        return (logits.softmax(1) @ self.data).view_as(x_t).to(x_t.dtype)

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        x0 = self.posterior_mean(x_t, t)
        alpha_bar = self.schedule.alpha_bar_at(t, x_t)
        noise = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return prediction_target(x0, noise, alpha_bar, self.prediction_type)

