"""What the parts of the brightness experiment share: presets, the models it trains (each a
`python train.py` run), and drawing, scoring and caching one row of samples."""
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from cli import amp_dtype
from diffusion import get_timesteps, sample_in_batches, spacing_offset
from evaluation.metrics import brightness, clip_fraction, hf_residual, spread_ratio, summarize, wasserstein1
from evaluation.yardstick import shapes_quality
from models import UNet
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# A trained row counts as evidence only if its samples are about as smooth as the data: at twice
# the data's high-frequency residual or more it is still noise, and marked "not converged". Not
# tighter, because mid-brightness images have more contrast than near-solid ones: a row squeezed
# toward the middle has more of them, and even the exact ideal model reaches 1.3 there.
HF_CONVERGED = 2.0


@dataclass(frozen=True)
class Preset:
    """The size of one run of the experiment: data, UNet (a `models.PRESETS` name) and budget."""

    dataset: str
    image_size: int
    model: str
    num_samples: int  # per row, and the number of data images they are compared with
    ideal_data: int  # images the ideal denoiser knows
    train_steps: int
    batch_size: int
    lr: float
    guidance: float  # a CFG weight high enough to over-expose
    step_counts: tuple[int, ...] = (25, 100)
    data_dir: str = "datasets"
    seeds: int = 3  # training seeds of every trained model; seeds beyond the first sample the table at step_counts[0] only
    sweep_steps: tuple[int, ...] = (1, 2, 3, 5, 10, 25, 50)  # the paper's Table 2 / Fig. 4 sweep
    guidance_weights: tuple[float, ...] = (1, 2, 4, 7.5)
    guidance_rescales: tuple[float, ...] = (0, 0.25, 0.5, 0.7, 0.75, 1)  # the paper's Fig. 6, and its 0.7
    finetune_steps: tuple[int, ...] = (100, 300, 1000)
    first_step_draws: int = 256  # noise draws per class at t = T
    quality_steps: tuple[int, ...] = (25, 50)  # the paper's Table 3 uses S = 50


# Named by the experiment's size; each names the UNet preset it trains (tiny for `cpu`, cpu for `cpu32`).
EXPERIMENT_PRESETS = {
    "tiny": Preset("shapes", 16, "tiny", num_samples=64, ideal_data=64, train_steps=4, batch_size=8, lr=1e-3,
                   guidance=6.0, step_counts=(5,), seeds=1, sweep_steps=(1, 3), guidance_weights=(1, 4),
                   guidance_rescales=(0, 0.7), finetune_steps=(2,), first_step_draws=8, quality_steps=(5,)),
    "cpu": Preset("shapes", 16, "tiny", num_samples=1000, ideal_data=1000, train_steps=2000, batch_size=64, lr=2e-3,
                  guidance=6.0),
    # The main job's size: the ideal rows in about 3 min, everything in well over an hour on 2 cores.
    "cpu32": Preset("shapes", 32, "cpu", num_samples=1000, ideal_data=2048, train_steps=2700, batch_size=64, lr=2e-3,
                    guidance=6.0, seeds=1),
    "cifar10": Preset("cifar10", 32, "cifar10", num_samples=10_000, ideal_data=10_000, train_steps=200_000,
                      batch_size=128, lr=2e-4, guidance=6.0, seeds=1, finetune_steps=(1000, 5000, 20_000)),
}

# The trained rows, each a set of train.py settings (TrainConfig fields) on top of its defaults, which
# are the paper's recipe: Stable Diffusion's recipe, then one change at a time, and rectified flow.
MODELS = {
    "baseline": dict(zero_snr=False, prediction="eps"),
    "v_only": dict(zero_snr=False, prediction="v"),  # fix #2 alone: the flawed schedule, v-prediction
    "fixed": dict(zero_snr=True, prediction="v"),  # train.py's default
    "fixed_x0": dict(zero_snr=True, prediction="x0"),  # zero SNR with an x0-predicting network
    "offset_noise": dict(zero_snr=False, prediction="eps", offset_noise=0.1),
    "flow": dict(objective="flow"),  # SD3's rectified flow: zero terminal SNR by construction
}
OFFSET_NOISE = MODELS["offset_noise"]["offset_noise"]


@dataclass
class Setup:
    """One invocation's data and places: the held-out reference every row is measured against."""

    out: Path
    p: Preset
    data: Tensor  # the reference images, never trained on
    labels: Tensor | None  # classes asked for in class-conditional rows, one per sample (None: no classes)
    known: Tensor  # the images the ideal denoiser knows
    device: torch.device
    models: dict = field(default_factory=dict)  # (name, seed) -> (EMA model, checkpoint), trained or loaded once


def row_metrics(images: Tensor, data: Tensor) -> dict:
    """The row's brightness summary against the data's, plus smoothness, contrast and clipping."""
    b, b_data = brightness(images), brightness(data)
    contrast = images.float().flatten(1).std(1).mean() / data.float().flatten(1).std(1).mean()
    return {**summarize(b), "spread_ratio": spread_ratio(b, b_data), "w1": wasserstein1(b, b_data),
            "hf_ratio": hf_residual(images) / hf_residual(data), "contrast_ratio": contrast.item(),
            "clip_fraction": clip_fraction(images), "brightness": b.tolist()}


def cached(s: Setup, name: str, make: Callable[[], dict]) -> dict:
    """`make()`, computed once and then read from rows/NAME.json."""
    path = s.out / "rows" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    row = make()
    path.write_text(json.dumps(row))
    return row


def run_row(s: Setup, name: str, make_images: Callable[[], Tensor], info: dict, labels: Tensor | None = None,
            extra: Callable[[Tensor], dict] | None = None) -> dict:
    """Compute a row once: its metrics are cached in rows/NAME.json, its first 64 samples in
    rows/NAME.pt and grids/NAME.png. On the shapes it carries the quality yardstick too, and
    `extra(images)` adds numbers of the row's own."""
    def make() -> dict:
        tic = time.perf_counter()
        images = make_images()
        row = {"name": name, **info, **row_metrics(images, s.data), **(extra(images) if extra else {}),
               "seconds": time.perf_counter() - tic}
        if s.p.dataset == "shapes":
            row["quality"] = shapes_quality(images, labels)
        torch.save(images[:64].clone(), s.out / "rows" / f"{name}.pt")
        save_image((images[:64] + 1) / 2, s.out / "grids" / f"{name}.png", nrow=8)
        print(f"{name}: spread {row['spread_ratio']:.2f}, W1 {row['w1']:.3f}, HF x{row['hf_ratio']:.2f} ({row['seconds']:.0f}s)")
        return row

    return cached(s, name, make)


def sampler(model, schedule, prediction: str, spacing: str, steps: int, s: Setup, seed: int,
            labels: Tensor | None = None, **options) -> Callable[[], Tensor]:
    """A function that draws as many samples as the reference holds, with a fixed seed: the same noise for
    every row. `options` go to `sample` (guidance, rescale, offset_noise)."""
    timesteps = get_timesteps(schedule.num_train_steps, steps, spacing, spacing_offset(spacing))
    model = model.to(s.device)
    return lambda: sample_in_batches(model, len(s.data), s.data.shape[1:], schedule, timesteps, prediction,
                                     labels=labels, batch_size=500, seed=seed, device=s.device,
                                     amp_dtype=amp_dtype(s.device), **options)


def train_flags(p: Preset, settings: dict, seed: int, num_reference: int, steps: int) -> list[str]:
    """The train.py command line of a trained row: the preset's data and budget, the row's `settings`
    (TrainConfig fields), the reference images held out. A checkpoint (and its preview grid) every
    quarter of the run, so a killed run loses little; short runs only at the end."""
    flags = {"dataset": p.dataset, "image_size": p.image_size, "model": p.model, "batch_size": p.batch_size,
             "steps": steps, "lr": p.lr, "seed": seed, "hold_out": num_reference,
             "ckpt_every": max(steps // 4, min(steps, 100)), **settings}
    if p.dataset != "shapes":
        flags["data_dir"] = p.data_dir
    args = []
    for key, value in flags.items():
        name = "--" + key.replace("_", "-")
        args += ([name] if value else ["--no-" + name[2:]]) if isinstance(value, bool) else [name, str(value)]
    return args


def train_run(run_dir: Path, flags: list[str], steps: int) -> tuple[UNet, dict]:
    """Run (or resume, or reuse) `python train.py FLAGS --out RUN_DIR` up to `steps`; returns its EMA model
    and checkpoint. A killed run resumes from its last checkpoint."""
    path = run_dir / "checkpoint.pt"
    state = load_training_checkpoint(path) if path.exists() else None
    if state is None or state["step"] < steps:
        tic = time.perf_counter()
        command = [sys.executable, str(ROOT / "train.py"), *flags, "--out", str(run_dir)]
        result = subprocess.run(command + (["--resume", "--steps", str(steps)] if state else []), cwd=ROOT)
        if result.returncode:
            raise SystemExit(result.returncode)  # train.py has said why, in one line
        print(f"trained {run_dir.name} in {time.perf_counter() - tic:.0f}s")
        state = load_training_checkpoint(path)
    return load_ema_model(state, path), state


def seed_suffix(seed: int) -> str:
    """Row and run names carry the training seed, except the first's."""
    return f"_seed{seed}" if seed else ""


def model_dir(s: Setup, name: str, seed: int) -> Path:
    return s.out / "models" / f"{name}{seed_suffix(seed)}"


def trained_model(s: Setup, name: str, seed: int) -> tuple[UNet, dict]:
    """One model of the ablation (MODELS[name]) at one training seed, trained the first time it is asked for."""
    if (name, seed) not in s.models:
        flags = train_flags(s.p, MODELS[name], seed, len(s.data), s.p.train_steps)
        s.models[name, seed] = train_run(model_dir(s, name, seed), flags, s.p.train_steps)
    return s.models[name, seed]


def trained_sampler(s: Setup, name: str, seed: int, spacing: str, steps: int, labels: Tensor | None = None,
                    **options) -> Callable[[], Tensor]:
    """`sampler` for a trained model of MODELS, which is trained or loaded only when a row is not cached."""
    def draw() -> Tensor:
        model, state = trained_model(s, name, seed)
        return sampler(model, checkpoint_schedule(state), state["config"]["prediction"], spacing, steps, s, 0,
                       labels=labels, **options)()
    return draw
