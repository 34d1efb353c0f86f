"""FID and KID for real datasets (CIFAR-10, CelebA, image folders), with the optional `.[fid]` extra.

The features are torch-fidelity's Inception-v3, the port of the TensorFlow network the FID
paper used, so numbers compare with published ones (torchmetrics' FID uses the same network).
Its weights download on first use. The distances themselves are `evaluation.metrics`'s, so any
feature extractor can stand in for Inception (the tests use a small one).
"""
from collections.abc import Callable

import torch
from torch import Tensor

from cli import UsageError

from .metrics import brightness, frechet_distance, hf_residual, kernel_distance, spread_ratio, wasserstein1

Extractor = Callable[[Tensor], Tensor]


def inception_extractor(device: torch.device | str = "cpu") -> Extractor:
    """Images in [−1, 1] → 2048 Inception-v3 pool features (torch-fidelity, `pip install -e '.[fid]'`)."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise UsageError("FID needs the optional extra torch-fidelity: pip install -e '.[fid]'") from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval().to(device)

    @torch.no_grad()
    def extract(images: Tensor) -> Tensor:
        as_bytes = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).to(device)
        return net(as_bytes)[0].double().cpu()

    return extract


@torch.no_grad()
def features(images: Tensor, extractor: Extractor, batch_size: int = 200) -> Tensor:
    return torch.cat([extractor(chunk) for chunk in images.split(batch_size)])


def fid_quality(samples: Tensor, real: Tensor, extractor: Extractor) -> dict[str, float]:
    """FID and KID of samples against real images (both in [−1, 1]), with the pixel-level numbers. Both depend on
    the sample count (FID is biased upwards at small counts): compare runs only at equal counts, and quote the count."""
    f_samples, f_real = features(samples, extractor), features(real, extractor)
    b, b_real = brightness(samples), brightness(real)
    return {"num_samples": len(samples), "num_real": len(real), "fid": frechet_distance(f_samples, f_real),
            "kid": kernel_distance(f_samples, f_real), "hf_ratio": hf_residual(samples) / hf_residual(real),
            "spread_ratio": spread_ratio(b, b_real), "w1": wasserstein1(b, b_real)}
