"""The detail skip: the one addition to the paper's model, a fixed pass-through of x_t's finest scale
for a v-predicting network that folds 2×2 patches into channels."""
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def detail(x: Tensor) -> Tensor:
    """D(x) = x − upsample₂(avgpool₂(x)): what each 2×2 patch holds beyond its mean, the finest scale."""
    return x - F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")


class DetailSkip(nn.Module):
    """c_skip of the finest scale for a v-predicting network (EDM's preconditioning, for one band):

        v̂ = F(x_t) + (√ᾱ_t/σ_t)·D(x_t),      σ_t = √(1 − ᾱ_t),  D(x) = x − upsample₂(avgpool₂(x)).

    Why: v = (√ᾱ_t·x_t − x0)/σ_t, and where the data has no power at the finest scale (flat shapes), D(x0) ≈ 0,
    so D(v) = (√ᾱ_t/σ_t)·D(x_t): the target there is x_t's own noise amplified. A network that folds 2×2 patches into
    channels sees that scale only as within-patch detail, where a learned per-channel gain on x_t cannot single it
    out. Given as a fixed term, the network F learns only the residual; the loss and the parameterisation stay the
    paper's. The gain is 0 at zero terminal SNR (ᾱ_T = 0), so the first step is the network's alone.

    `alpha_bar` is the run's own schedule: the gain is not saved with the weights but rebuilt from
    the schedule a checkpoint records (fine-tuning may change it).
    """

    def __init__(self, alpha_bar: Tensor):
        super().__init__()
        self.register_buffer("gain", (alpha_bar / (1 - alpha_bar)).sqrt().float(), persistent=False)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return rearrange(self.gain[t], "b -> b 1 1 1") * detail(x_t.float())
