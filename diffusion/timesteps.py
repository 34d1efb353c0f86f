"""Which training timesteps a sampler visits (fix #3: trailing spacing, paper §3.3, Table 2)."""
import torch
from torch import Tensor

SPACINGS = ("leading", "linspace", "trailing")


def spacing_offset(spacing: str) -> int:
    """The offset a spacing is used with: 1 for leading, as Stable Diffusion's `steps_offset`
    (981, …, 1 for S = 50), and none for the others, which already end where they should."""
    return int(spacing == "leading")


def get_timesteps(num_train_steps: int, num_inference_steps: int, spacing: str, offset: int = 0) -> Tensor:
    """S distinct timesteps in [0, T), descending, int64 (paper Table 2, 0-indexed).

    leading:  arange(0, S) · ⌊T/S⌋ + offset, reversed      (SD, offset 1: 981, 961, …, 1 for S = 50)
    linspace: round(linspace(0, T − 1, S)), reversed
    trailing: round(T − i · T/S) − 1 for i = 0 … S−1       (999, 979, …, 19 for S = 50)

    Only trailing and linspace start at t = T − 1, the one timestep where a zero-SNR schedule
    matches the pure noise sampling starts from. Trailing uses the float stride T/S: an integer
    stride misses T − 1 whenever S does not divide T.
    """
    T, S = num_train_steps, num_inference_steps
    if not 1 <= S <= T:
        raise ValueError(f"num_inference_steps must be between 1 and {T} (the training steps), got {S}")
    if spacing == "leading":
        if offset < 0 or (S - 1) * (T // S) + offset >= T:
            raise ValueError(f"leading spacing with offset {offset} and {S} steps would go past t = {T - 1}; lower the offset")
        timesteps = torch.arange(S, dtype=torch.float64) * (T // S) + offset
    elif spacing == "linspace":
        timesteps = torch.linspace(0, T - 1, S, dtype=torch.float64).round()
    elif spacing == "trailing":
        timesteps = (T - torch.arange(S, dtype=torch.float64) * (T / S)).round() - 1
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    return timesteps.long().sort(descending=True).values
