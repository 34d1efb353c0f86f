"""Brightness metrics of the paper's experiment, on per-image mean brightness in [0, 1]."""
import json

import torch
import torch.nn.functional as F
from torch import Tensor


def brightness(images: Tensor) -> Tensor:
    """Per-image mean brightness in [0, 1] of images in [−1, 1]."""
    return ((images.float() + 1) / 2).flatten(1).mean(1)


def summarize(b: Tensor) -> dict[str, float]:
    """Mean, std, 5th/95th percentile, and the fractions of very dark (< 0.1) and very bright (> 0.9) images."""
    b = b.double()
    return {
        "mean": b.mean().item(),
        "std": b.std().item(),
        "p5": b.quantile(0.05).item(),
        "p95": b.quantile(0.95).item(),
        "frac_dark": (b < 0.1).double().mean().item(),
        "frac_bright": (b > 0.9).double().mean().item(),
    }


def summary_line(label: str, summary: dict[str, float]) -> str:
    """`label {"mean": …, …}` rounded to 4 places: one line a script prints and a test can parse."""
    return f"{label} " + json.dumps({k: round(v, 4) for k, v in summary.items()})


def spread_ratio(samples: Tensor, data: Tensor) -> float:
    """std(samples) / std(data): below 1 means generated brightness is squeezed toward the middle."""
    return (samples.double().std() / data.double().std()).item()


def wasserstein1(a: Tensor, b: Tensor) -> float:
    """1-Wasserstein distance of two empirical 1-D distributions: ∫ |F_a(x) − F_b(x)| dx."""
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    points = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a, points[:-1], right=True) / len(a)
    cdf_b = torch.searchsorted(b, points[:-1], right=True) / len(b)
    return ((cdf_a - cdf_b).abs() * points.diff()).sum().item()


def hf_residual(images: Tensor) -> float:
    """Mean |image − its 3×3 box blur|: high-frequency energy, large for samples that are still noisy."""
    x = images.float()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (x - blurred).abs().mean().item()


def clip_fraction(images: Tensor, tol: float = 1e-3) -> float:
    """Fraction of pixel values at the clip limits ±1: over-exposure from strong guidance."""
    return (images.abs() >= 1 - tol).float().mean().item()
