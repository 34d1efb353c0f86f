"""Brightness metrics of the paper's experiment, on per-image mean brightness in [0, 1], and the leak's inputs."""
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
    return {"mean": b.mean().item(), "std": b.std().item(), "p5": b.quantile(0.05).item(),
            "p95": b.quantile(0.95).item(), "frac_dark": (b < 0.1).double().mean().item(),
            "frac_bright": (b > 0.9).double().mean().item()}


def summary_line(label: str, summary: dict[str, float | list[float] | str]) -> str:
    """`label {"mean": …, …}` rounded to 4 places (lists value by value, text as it is): a line scripts print and
    tests parse."""
    rounded = {k: v if isinstance(v, str) else [round(x, 4) for x in v] if isinstance(v, list) else round(v, 4)
               for k, v in summary.items()}
    return f"{label} " + json.dumps(rounded)


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
    """Mean |image − its 3×3 box blur|: high-frequency energy, large for samples that are still noisy. One number
    for the set, or with `per_image` one for each image (a tensor of shape (N,))."""
    x = images.float()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    residual = (x - blurred).abs().flatten(1).mean(1)
    return residual if per_image else residual.mean().item()


def power_spectrum(images: Tensor, bands: int = 8) -> Tensor:
    """Radially averaged power spectrum of images (N, C, H, W): the mean of |FFT|² over images and
    channels in `bands` equal bands of radial frequency r = √(f_x² + f_y²) ∈ (0, 0.5] cycles/pixel.

    Each image is centred (per channel) and multiplied by a 2-D Hann window first: without it the FFT sees the
    image as periodic, the jump between opposite borders becomes an edge whose power spreads over every band, and a
    blurred image would still read as sharp. The DC term (r = 0) and the corners beyond r = 0.5 are left out.
    """
    x = images.float()
    x = x - x.mean((-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    window = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))
    power = torch.fft.fft2(x * window).abs().square().mean((0, 1))
    radius = torch.hypot(torch.fft.fftfreq(h)[:, None], torch.fft.fftfreq(w)[None, :])
    band = (radius / 0.5 * bands).ceil().long() - 1  # r in ((k/bands)·0.5, ((k+1)/bands)·0.5] -> band k
    return torch.stack([power[band == k].mean() for k in range(bands)])


def spectrum_ratio(samples: Tensor, data: Tensor | None = None, data_spectrum: Tensor | None = None) -> list[float]:
    """Power of the samples over the data's in each band of `power_spectrum`, lowest frequencies first. Below 1 in
    the upper bands is blur, above 1 is grain: the two failures `hf_residual` adds into one number."""
    reference = power_spectrum(data) if data_spectrum is None else data_spectrum
    return (power_spectrum(samples, len(reference)) / reference).tolist()


def clip_fraction(images: Tensor, tol: float = 1e-3) -> float:
    """Fraction of pixel values at the clip limits ±1: over-exposure from strong guidance."""
    return (images.abs() >= 1 - tol).float().mean().item()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (N, D) (Heusel et al. 2017, FID):

        d² = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)

    The matrix square roots come from symmetric eigendecompositions in float64, which stay exact for the singular
    covariances of small sample counts (no scipy.linalg.sqrtm). NaN if either set holds a non-finite value.
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


def chroma(images: Tensor, background: bool = False) -> float:
    """Mean colourfulness: each pixel's standard deviation over its RGB values, averaged over pixels and
    images (0 for grey). With `background`, only the four corner squares of side H/8, where the shapes'
    backgrounds are: washed-out colour shows there even when the shapes keep theirs."""
    x = images.float()
    if background:
        k = max(1, x.shape[-1] // 8)
        x = torch.cat([x[..., :k, :k], x[..., :k, -k:], x[..., -k:, :k], x[..., -k:, -k:]], dim=-1)
    return x.std(dim=1).mean().item()


def first_step_gain(x_T: Tensor, x0_hat: Tensor, resamples: int = 1000) -> dict[str, float]:
    """The leak where it acts: the least-squares slope of x̂0's mean on x_T's mean (each image's mean over all its
    values, in [−1, 1] units: a brightness) at t = T, with a 95% interval from resampling images. The ideal
    denoiser's slope is `leak_prediction`'s `exact_gain`; a network that reads nothing off x_T's mean has slope 0."""
    a, b = x_T.double().flatten(1).mean(1), x0_hat.double().flatten(1).mean(1)

    def gain(pick: Tensor) -> float:
        x = a[pick] - a[pick].mean()
        return ((x * (b[pick] - b[pick].mean())).sum() / x.square().sum()).item()

    picks = torch.randint(len(a), (resamples, len(a)), generator=torch.Generator().manual_seed(0))
    spread = sorted(gain(p) for p in picks)
    return {"gain": gain(torch.arange(len(a))), "low": spread[int(0.025 * resamples)],
            "high": spread[int(0.975 * resamples) - 1]}


def leak_prediction(data: Tensor, alpha_bar: float) -> dict[str, float]:
    """What the data alone predicts of the leak at a first timestep with ᾱ = `alpha_bar` (Gaussian
    approximation, on each image's mean over its n = C·H·W values, a brightness in [−1, 1] units).

    In training, x_t's mean is m = a·μ + √(1 − a²)·e, a = √ᾱ, μ the image's mean (variance V over the
    data) and e ~ N(0, 1/n). The best guess of μ from m is E[μ | m] = a·V·m / Var(m) with
    Var(m) = a²·V + (1 − a²)/n. Sampling starts from pure noise, m ~ N(0, 1/n), so:
    - `signal_share` = a²·V / Var(m): how much of m is the image's brightness;
    - `exact_gain` = a·V / Var(m): the slope of the ideal denoiser's first x̂0 on m;
    - `x_T_std_ratio` = √((1/n) / Var(m)): the std of m when sampling against in training, below 1 where
      the leak is: what the model reads off x_T is squeezed by this much;
    - `leak_only_spread` = exact_gain·√(1/n)/√V = a·√(V·n) / (a²·V·n + 1 − a²): the spread of E[μ | m] from
      pure noise against the data's, the brightness the first step alone allows (the later steps add
      some back, most where the leak is weak).
    All but the std ratio are 0 at zero SNR (a = 0: no leak, the later steps set the brightness freely).
    """
    mu = data.double().flatten(1).mean(1)
    var_mu, noise = mu.var().item(), 1 / mu.new_tensor(data[0].numel()).item()
    var_m = alpha_bar * var_mu + (1 - alpha_bar) * noise
    gain = alpha_bar**0.5 * var_mu / var_m
    return {"signal_share": alpha_bar * var_mu / var_m, "exact_gain": gain, "x_T_std_ratio": (noise / var_m) ** 0.5,
            "leak_only_spread": gain * (noise / var_mu) ** 0.5}


def row_metrics(images: Tensor, data: Tensor) -> dict:
    """The samples' brightness against the data's, their grain, contrast and clipping."""
    b, b_data = brightness(images), brightness(data)
    contrast = images.float().flatten(1).std(1).mean() / data.float().flatten(1).std(1).mean()
    return {**summarize(b), "spread_ratio": spread_ratio(b, b_data), "w1": wasserstein1(b, b_data),
            "hf_ratio": hf_residual(images) / hf_residual(data), "contrast_ratio": contrast.item(),
            "clip_fraction": clip_fraction(images), "brightness": [round(v, 4) for v in b.tolist()]}


def leaky_x_T(alpha_bar_T: float, signal: Tensor, noise: Tensor) -> Tensor:
    """x_T = √ᾱ_T·signal + √(1 − ᾱ_T)·ε: the last timestep's input as training saw it, the leak included."""
    return alpha_bar_T**0.5 * signal + (1 - alpha_bar_T) ** 0.5 * noise


def leak_from_statistics(images: Tensor, n: int) -> Tensor:
    """Everaert et al. (WACV 2024), at its coarsest: n flat images whose channel means m ~ N(μ, Σ) are drawn from the
    mean and covariance of the channel means of `images`: the data's statistics of brightness and colour, no image."""
    means = images.double().mean((2, 3))
    cholesky = torch.linalg.cholesky(torch.cov(means.T) + 1e-9 * torch.eye(means.shape[1], dtype=torch.float64))
    m = means.mean(0) + torch.randn(n, means.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64) @ cholesky.T
    return m.float()[:, :, None, None].expand(n, *images.shape[1:]).clone()
