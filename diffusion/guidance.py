"""Classifier-free guidance and the paper's fix #4: rescaled guidance (§3.4, Algorithm 2)."""
from torch import Tensor


def apply_cfg(pos: Tensor, neg: Tensor, weight: float, rescale: float = 0.0) -> Tensor:
    """Guided prediction, rescaled toward the conditional prediction's standard deviation.

        x_cfg = x_neg + w · (x_pos − x_neg)
        x_rescaled = x_cfg · σ_pos / σ_cfg                  σ = std over all dims but the batch
        x_final = φ · x_rescaled + (1 − φ) · x_cfg           (φ = `rescale`; the paper uses 0.7)

    With zero SNR and v-prediction a large w inflates σ and over-exposes the image;
    the per-sample rescale undoes that. φ = 0 is plain CFG.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale must be in [0, 1], got {rescale}")
    cfg = neg + weight * (pos - neg)
    if rescale == 0:
        return cfg
    dims = tuple(range(1, pos.ndim))
    factor = pos.std(dim=dims, keepdim=True) / cfg.std(dim=dims, keepdim=True)
    return cfg * (rescale * factor + (1 - rescale))
