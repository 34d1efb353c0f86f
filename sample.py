"""Sample from a checkpoint written by train.py, with the paper's sampling-time fixes.

    python sample.py runs/default/checkpoint.pt                 # 50 trailing steps (fix #3), a row per class, guided (fix #4)
    python sample.py runs/default/checkpoint.pt --class disc --guidance 5       # one class, stronger guidance
    python sample.py runs/default/checkpoint.pt --unconditional                 # no class, no guidance
    python sample.py runs/default/checkpoint.pt --spacing leading --offset 1    # Stable Diffusion's steps

Everything about the model (schedule, prediction type, size, classes) comes from the
checkpoint; sampling uses its EMA weights. Prints the per-image brightness summary. Every flag,
its default and its check are in SampleConfig and check_sample_config, as train.py's in train_config.py.
"""
from dataclasses import MISSING, dataclass, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from cli import (DEVICE_HELP, PRECISION_HELP, PRECISIONS, Parser, UsageError, add_flags, amp_dtype, check_writable_dir,
                 flag, pick_device, run)
from data import load_dataset
from diffusion import SAMPLERS, SPACINGS, Guidance, SamplingSettings, get_timesteps, sample_in_batches, spacing_offset
from evaluation.fid import fid_quality, inception_extractor
from evaluation.metrics import brightness, summarize, summary_line
from evaluation.preview import GRID_ROW, grid_labels
from evaluation.yardstick import shapes_quality
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

REAL_IMAGES = 10_000  # training images FID compares with (the whole set when smaller)
# The default guidance of a class-conditional model, with the paper's rescale φ = 0.7: the weight that measured
# best on the default run's models (docs/design.md, "What we tried").
GUIDANCE = 1.5
# What --out may be: the image formats torchvision's save_image writes (through Pillow), checked before sampling.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SampleConfig:
    """Every flag of sample.py, built as TrainConfig is (cli.flag); the model itself comes from the checkpoint."""
    checkpoint: str = flag(MISSING, "checkpoint.pt written by train.py")
    num_steps: int = flag(50, "sampling steps (default: 50, as the paper's Table 3)")
    spacing: str = flag("trailing", "fix #3: which timesteps to visit", choices=SPACINGS)
    offset: int | None = flag(None, "added to leading timesteps; Stable Diffusion uses 1 (default: 1)", type=int)
    guidance: float | None = flag(None, f"classifier-free guidance weight w; 1 is no guidance (default: {GUIDANCE} for "
                                  "a class-conditional model, 1 for an unconditional one)", type=float)
    guidance_rescale: float = flag(0.7, "fix #4: rescale phi in [0, 1]; 0 is plain CFG")
    guidance_interval: tuple[int, int] | None = flag(None, "guide only at timesteps LOW ≤ t ≤ HIGH and draw the "
                                                     "class's own prediction elsewhere, e.g. 0 700 (default: every "
                                                     "step, as the paper)", type=int, nargs=2, metavar=("LOW", "HIGH"))
    class_: str | None = flag(None, "class name or index to generate (default: a class-conditional model draws one row "
                              "of the grid per class, in turn)", type=str)
    unconditional: bool = flag(False, "draw without a class and without guidance (the null label)")
    num_samples: int | None = flag(None, "how many images (default: 64, or 512 with --evaluate)", type=int)
    batch_size: int = flag(256, "images per forward pass")
    seed: int = flag(0, "seed of the initial noise")
    sampler: str = flag("ddim", "ddim, or dpmpp-2m: DPM-Solver++(2M), exact at zero SNR", choices=SAMPLERS)
    offset_noise: float = flag(0.0, "start from ε + S·N(0, 1) per image and channel, the noise an --offset-noise model "
                               "was trained on (default: 0, plain N(0, I))")
    eta: float = flag(0.0, "DDIM eta: 0 is deterministic, 1 is DDPM-like")
    out: str | None = flag(None, "grid PNG to write (default: grid.png next to the checkpoint)", type=str)
    out_dir: str | None = flag(None, "also write one PNG per sample here, e.g. for FID tools (default: none)", type=str)
    evaluate: bool = flag(False, "also print `quality {json}`: the frozen shapes classifier's measures, or FID/KID for real data (needs "
                          ".[fid]), of what the other flags draw")
    precision: str = flag("auto", PRECISION_HELP, choices=PRECISIONS)
    device: str = flag("auto", DEVICE_HELP)


def check_sample_config(config: SampleConfig) -> None:
    """Refuse numbers and combinations that cannot sample, or flags that would do nothing, before the
    checkpoint is read: one line each (UsageError)."""
    if config.offset is not None and config.spacing != "leading":
        raise UsageError(f"--offset shifts leading timesteps only; --spacing {config.spacing} has no offset")
    if config.eta and config.sampler != "ddim":
        raise UsageError(f"--eta is a DDIM option; {config.sampler} is deterministic")
    positive = {"num-samples": config.num_samples, "batch-size": config.batch_size}
    if config.unconditional and (config.class_ is not None or config.guidance not in (None, 1)):
        raise UsageError("--unconditional draws without a class and without guidance; drop --class and --guidance")
    non_negative = {"guidance": config.guidance or 0.0, "offset-noise": config.offset_noise}
    unit_interval = {"guidance-rescale": config.guidance_rescale, "eta": config.eta}
    for name, value in positive.items():
        if value is not None and not value > 0:  # num_samples None: the default, 64 or 512
            raise UsageError(f"--{name} must be positive, got {value}")
    for name, value in non_negative.items():
        if not value >= 0:
            raise UsageError(f"--{name} must be zero or positive, got {value}")
    for name, value in unit_interval.items():
        if not 0 <= value <= 1:
            raise UsageError(f"--{name} must be in [0, 1], got {value}")
    if config.out is not None and Path(config.out).suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"--out {config.out}: name an image file, e.g. grid.png")
    if config.guidance_interval is not None:
        low, high = config.guidance_interval
        if config.unconditional or config.guidance == 1:
            raise UsageError("--guidance-interval limits guidance, and this draws unguided: drop it, or give a "
                             "--guidance other than 1 without --unconditional")
        if not 0 <= low <= high:
            raise UsageError(f"--guidance-interval takes LOW ≤ HIGH, both zero or positive; got {low} {high}")


def parse_args(argv: list[str] | None = None) -> SampleConfig:
    """The flags, with --num-samples' default filled in, and checked."""
    p = Parser(description="Generate images from a train.py checkpoint with DDIM or DPM-Solver++(2M): by default on "
                           "trailing timesteps, with rescaled classifier-free guidance when guided.")
    add_flags(p, SampleConfig)
    config = SampleConfig(**{k: v for k, v in vars(p.parse_args(argv)).items() if v is not None})
    if config.num_samples is None:
        config = replace(config, num_samples=512 if config.evaluate else 64)
    if config.guidance_interval is not None:  # argparse gives a list
        config = replace(config, guidance_interval=tuple(config.guidance_interval))
    check_sample_config(config)
    return config


def class_label(name: str, classes: list[str]) -> int:
    """A class given by name or index, checked against the checkpoint's classes."""
    if not classes:
        raise UsageError("--class was given but this model is unconditional")
    if name in classes:
        return classes.index(name)
    if name.lstrip("-").isdigit() and 0 <= int(name) < len(classes):
        return int(name)
    raise UsageError(f"unknown class {name!r}; this model knows {', '.join(classes)} (or 0-{len(classes) - 1})")


def main() -> int:
    config = parse_args()
    state = load_training_checkpoint(config.checkpoint)
    trained, classes = state["config"], state["classes"]
    label = class_label(config.class_, classes) if config.class_ is not None else None
    conditional = bool(classes) and not config.unconditional
    guidance = config.guidance if config.guidance is not None else (GUIDANCE if conditional else 1.0)
    if guidance != 1 and not conditional:
        raise UsageError("--guidance needs a class-conditional model drawn with its classes: guidance pushes toward a class")
    if config.guidance_interval is not None and guidance == 1:  # an unconditional model, which draws unguided
        raise UsageError("--guidance-interval limits guidance, and this model has no classes to guide toward")
    offset = config.offset if config.offset is not None else spacing_offset(config.spacing)
    try:
        timesteps = get_timesteps(trained["timesteps"], config.num_steps, config.spacing, offset)
    except ValueError as e:  # steps this model does not have: the flags' fault, not a bug
        raise UsageError(f"--num-steps {config.num_steps}, --offset {offset}: {e}") from None
    out = Path(config.out) if config.out else Path(config.checkpoint).parent / "grid.png"
    check_writable_dir(str(out.parent))
    if config.out_dir:
        check_writable_dir(config.out_dir)

    device = pick_device(config.device)
    model = load_ema_model(state, config.checkpoint).to(device)
    size, channels = model.config.image_size, model.config.in_channels
    labels = (torch.full((config.num_samples,), label) if label is not None
              else grid_labels(config.num_samples, len(classes)) if conditional else None)
    settings = SamplingSettings(timesteps, sampler=config.sampler, eta=config.eta,
                                guidance=Guidance(guidance, config.guidance_rescale, config.guidance_interval),
                                offset_noise=config.offset_noise, seed=config.seed, batch_size=config.batch_size,
                                amp_dtype=amp_dtype(device, config.precision))
    images = sample_in_batches(model, (config.num_samples, channels, size, size), checkpoint_schedule(state),
                               trained["prediction"], settings, labels=labels, device=device)
    save_image((images + 1) / 2, out, nrow=GRID_ROW)
    if config.out_dir:
        for i, image in enumerate(images):
            save_image((image + 1) / 2, Path(config.out_dir) / f"{i:06d}.png")
    drawn = f"guidance w = {guidance:g}, φ = {config.guidance_rescale:g}" if guidance != 1 else "unguided"
    if config.guidance_interval is not None:  # refused above when unguided
        drawn += " at t in [{}, {}]".format(*config.guidance_interval)
    print(f"wrote {out} ({config.num_samples} samples, step {state['step']}, "
          f"{config.num_steps} {config.spacing} {config.sampler} steps, {drawn})")
    print(summary_line("brightness", summarize(brightness(images))))
    print(summary_line("data brightness", state["data_brightness"]))
    if config.evaluate:
        print(summary_line("quality", evaluate(images, labels, trained, device)))
    return 0


def evaluate(images: torch.Tensor, labels: torch.Tensor | None, config: dict, device: torch.device) -> dict:
    """The frozen shapes classifier's measures against held-out shapes, or FID/KID against the training images."""
    if config["dataset"] == "shapes":
        return shapes_quality(images, labels)
    dataset = load_dataset(config["dataset"], config["data_dir"], config["image_size"] or None)
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:REAL_IMAGES]
    real = torch.stack([dataset[i][0] for i in pick.tolist()])
    return fid_quality(images, real, inception_extractor(device))


if __name__ == "__main__":
    run(main)
