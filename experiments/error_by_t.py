"""Where in t a model's error comes from: its x̂0 on held-out shapes, noised to each of a few timesteps.

    python -m experiments.error_by_t runs/default/checkpoint.pt [OTHER.pt ...]

For each checkpoint and timestep t: x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε from held-out shapes, the EMA model's
x̂0, the RMS error ‖x̂0 − x0‖, the high-frequency ratio of x̂0 against x0 (above 1: the model leaves
noise in x̂0, grain; below 1: blur), the power ratio in each of the 8 spectrum bands, and the share of
x_t's noise that x̂0 still carries (`noise_left`: how much of the error is noise not removed, the rest
being the network's own). The timesteps
include the sampler's last two (19 and 39 for 50 trailing steps of 1,000, sample.py's default): DDIM's
last step hands x̂0 at its last timestep straight to the image, so grain there is grain in the samples;
errors at large t show as wrong shapes, classes and brightness.
"""
import torch
from torch import Tensor

from cli import Parser, UsageError, run
from data import make_shapes
from diffusion import get_timesteps, predict_x0_eps
from evaluation.metrics import hf_residual, spectrum_ratio
from evaluation.yardstick import REFERENCE_SEED
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

TIMESTEPS = (0, 10, 25, 50, 100, 200, 400, 600, 800, 999)


def noise_left(error: Tensor, noise: Tensor) -> float:
    """The share of x_t's noise n = σ_t·ε that x̂0 still carries: the least-squares c of x̂0 − x0 ≈ c·n,

        c = ⟨x̂0 − x0, n⟩ / ⟨n, n⟩.

    About 1 where x̂0 is x_t itself (nothing denoised; exactly 1 but for x_t's (√ᾱ_t − 1)·x0), 0 where the
    error is uncorrelated with the noise: then it is the network's own, not noise it failed to remove.
    """
    return ((error * noise).sum() / noise.square().sum()).item()


@torch.no_grad()
def error_by_t(path: str, num_images: int, sample_steps: int) -> list[dict]:
    """One row per timestep of TIMESTEPS and the last two of `sample_steps` trailing steps."""
    state = load_training_checkpoint(path)
    config = state["config"]
    last_two = get_timesteps(config["timesteps"], sample_steps, "trailing")[-2:].tolist()
    timesteps = sorted({t for t in TIMESTEPS if t < config["timesteps"]} | set(last_two))
    if config["dataset"] != "shapes":
        raise UsageError(f"{path}: this diagnostic uses held-out shapes; the model was trained on {config['dataset']}")
    model, schedule = load_ema_model(state, path), checkpoint_schedule(state)
    x0, labels, _ = make_shapes(num_images, model.config.image_size, REFERENCE_SEED - 1)  # a seed no training run uses
    generator, rows = torch.Generator().manual_seed(0), []
    for t in timesteps:
        t_batch = torch.full((num_images,), t)
        alpha_bar = schedule.alpha_bar_at(t_batch, x0).float()
        eps = torch.randn(x0.shape, generator=generator)
        x_t = schedule.add_noise(x0, eps, t_batch).float()
        output = model(x_t, t_batch, labels if model.config.num_classes else None).float()
        x0_hat = predict_x0_eps(x_t, output, alpha_bar, config["prediction"])[0]
        error = x0_hat - x0
        rows.append({"t": t, "alpha_bar": alpha_bar[0].item(), "rms": error.square().mean().sqrt().item(),
                     "hf_ratio": hf_residual(x0_hat) / hf_residual(x0), "bands": spectrum_ratio(x0_hat, x0),
                     "noise_left": noise_left(error, (1 - alpha_bar).sqrt() * eps)})
    return rows


def main() -> int:
    p = Parser(description="A model's x̂0 error, grain and blur at each of a few timesteps, on held-out shapes.")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--num-images", type=int, default=256, help="held-out shapes per timestep (default: 256)")
    p.add_argument("--num-steps", type=int, default=50,
                   help="trailing sampling steps whose last two timesteps to include (default: 50, sample.py's)")
    a = p.parse_args()
    if a.num_images < 2 or a.num_steps < 2:
        p.error("--num-images and --num-steps must be at least 2")
    print("| checkpoint | t | ᾱ_t | RMS of x̂0 − x0 | x_t's noise left in x̂0 | HF ratio of x̂0 | spectrum bands 1-8 of x̂0 |"
          "\n|---|---|---|---|---|---|---|")
    for path in a.checkpoints:
        for r in error_by_t(path, a.num_images, a.num_steps):
            bands = " / ".join(f"{b:.2f}" for b in r["bands"])
            print(f"| {path} | {r['t']} | {r['alpha_bar']:.4f} | {r['rms']:.4f} | {r['noise_left']:.3f} | "
                  f"{r['hf_ratio']:.2f} | {bands} |")
    return 0


if __name__ == "__main__":
    run(main)
