"""Brightness metrics of the paper's experiment, on per-image mean brightness in [0, 1]."""
import json

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


def brightness(images: Tensor) -> Tensor:
    """Per-image mean brightness in [0, 1] of images in [−1, 1]."""
    return ((images.float() + 1) / 2).flatten(1).mean(1)


def brightness_summary(dataset: Dataset, seed: int, n: int = 1000) -> dict[str, float]:
    """The brightness summary of up to n images of a dataset, picked with `seed`: what sampling should reproduce."""
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return summarize(brightness(torch.stack([dataset[i][0] for i in pick.tolist()])))


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


def hf_residual(images: Tensor, per_image: bool = False) -> float | Tensor:
    """Mean |image − its 3×3 box blur|: high-frequency energy, large for samples that are still noisy.

    One number for the set, or with `per_image` one for each image (a tensor of shape (N,)).
    """
    x = images.float()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    residual = (x - blurred).abs().flatten(1).mean(1)
    return residual if per_image else residual.mean().item()


def clip_fraction(images: Tensor, tol: float = 1e-3) -> float:
    """Fraction of pixel values at the clip limits ±1: over-exposure from strong guidance."""
    return (images.abs() >= 1 - tol).float().mean().item()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (N, D) (Heusel et al. 2017, FID):

        d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)

    The matrix square roots come from symmetric eigendecompositions in float64, which stay
    exact for the singular covariances of small sample counts (no scipy.linalg.sqrtm).
    NaN if either set holds a non-finite value.
    """
    a, b = a.double().flatten(1), b.double().flatten(1)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")  # samples of a diverged model: no distance, and no crash in the eigensolver
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return ((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


def kernel_distance(a: Tensor, b: Tensor) -> float:
    """KID (Bińkowski et al. 2018): the unbiased MMD² between feature sets with the kernel
    k(x, y) = (xᵀy / D + 1)³. Unlike Fréchet distance it has no bias at small counts: 0 on average
    for two samples of the same distribution (so it can be slightly negative)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return (within_a + within_b - 2 * k_ab.mean()).item()
