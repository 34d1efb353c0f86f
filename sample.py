"""Sample from a checkpoint written by train.py, with the paper's sampling-time fixes.

    python sample.py runs/default/checkpoint.pt                                  # 50 trailing steps (fix #3)
    python sample.py runs/default/checkpoint.pt --class disc --guidance 5       # rescaled CFG (fix #4)
    python sample.py runs/default/checkpoint.pt --spacing leading --offset 1    # Stable Diffusion's steps

Everything about the model (schedule, prediction type, size, classes) comes from the
checkpoint; sampling uses its EMA weights. Prints the per-image brightness summary.
"""
import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

from cli import PRECISIONS, Parser, UsageError, amp_dtype, check_writable_dir, pick_device, run
from data import load_dataset
from diffusion import SAMPLERS, SPACINGS, get_timesteps, sample_in_batches, spacing_offset
from evaluation.fid import fid_quality, inception_extractor
from evaluation.metrics import brightness, summarize, summary_line
from evaluation.yardstick import shapes_quality
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

REAL_IMAGES = 10_000  # training images FID compares with (the whole set when smaller)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(description="Generate images from a train.py checkpoint with DDIM.")
    arg = p.add_argument
    arg("checkpoint", help="checkpoint.pt written by train.py")
    arg("--num-steps", type=int, default=50, help="sampling steps (default: 50, as the paper's Table 3)")
    arg("--spacing", choices=SPACINGS, default="trailing", help="fix #3: which timesteps to visit (default: trailing)")
    arg("--offset", type=int, default=None, help="added to leading timesteps; Stable Diffusion uses 1 (default: 1)")
    arg("--guidance", type=float, default=1.0, help="classifier-free guidance weight w; 1 is no guidance (default: 1)")
    arg("--guidance-rescale", type=float, default=0.7, help="fix #4: rescale phi in [0, 1]; 0 is plain CFG (default: 0.7)")
    arg("--class", dest="class_", default=None, help="class name or index to generate; omitted: unconditional")
    arg("--num-samples", type=int, default=None, help="how many images (default: 64, or 512 with --evaluate)")
    arg("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    arg("--seed", type=int, default=0, help="seed of the initial noise (default: 0)")
    arg("--sampler", choices=SAMPLERS, default="ddim", help="ddim, or dpmpp-2m: DPM-Solver++(2M), exact at zero SNR (default: ddim)")
    arg("--offset-noise", type=float, default=0.0, help="start from ε + S·N(0, 1) per image and channel, the noise an "
        "--offset-noise model was trained on (default: 0, plain N(0, I))")
    arg("--eta", type=float, default=0.0, help="DDIM eta: 0 is deterministic, 1 is DDPM-like (default: 0)")
    arg("--out", default=None, help="grid PNG to write (default: grid.png next to the checkpoint)")
    arg("--out-dir", default=None, help="also write one PNG per sample here, e.g. for FID tools")
    arg("--evaluate", action="store_true",
        help="also print `quality {json}`: the shapes yardstick, or FID/KID for real data (needs .[fid]); "
             "without --class a class-conditional model then draws the classes in turn")
    arg("--precision", choices=PRECISIONS, default="auto", help="bf16 autocast of the network; auto: bf16 on CUDA and "
        "on CPUs with native bf16, else fp32 (default: auto)")
    arg("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)")
    a = p.parse_args(argv)
    if a.offset is not None and a.spacing != "leading":
        p.error(f"--offset shifts leading timesteps only; --spacing {a.spacing} has no offset")
    if a.eta and a.sampler != "ddim":
        p.error(f"--eta is a DDIM option; {a.sampler} is deterministic")
    if a.num_samples is None:
        a.num_samples = 512 if a.evaluate else 64
    if a.num_samples < 1 or a.batch_size < 1:
        p.error("--num-samples and --batch-size must be positive")
    if not 0 <= a.guidance_rescale <= 1:
        p.error(f"--guidance-rescale must be in [0, 1], got {a.guidance_rescale}")
    if not 0 <= a.eta <= 1:
        p.error(f"--eta must be in [0, 1], got {a.eta}")
    if a.guidance < 0:
        p.error(f"--guidance must be zero or positive, got {a.guidance}")
    if not a.offset_noise >= 0:
        p.error(f"--offset-noise must be zero or positive, got {a.offset_noise}")
    return a


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
    a = parse_args()
    state = load_training_checkpoint(a.checkpoint)
    config, classes = state["config"], state.get("classes", [])
    label = class_label(a.class_, classes) if a.class_ is not None else None
    if a.guidance != 1 and label is None and not (a.evaluate and classes):
        raise UsageError("--guidance needs --class (or --evaluate on a class-conditional model): guidance pushes toward a class")
    offset = a.offset if a.offset is not None else spacing_offset(a.spacing)
    try:
        timesteps = get_timesteps(config["timesteps"], a.num_steps, a.spacing, offset)
    except ValueError as e:  # steps this model does not have: the flags' fault, not a bug
        raise UsageError(f"--num-steps {a.num_steps}, --offset {offset}: {e}") from None
    out = Path(a.out) if a.out else Path(a.checkpoint).parent / "grid.png"
    check_writable_dir(str(out.parent))
    if a.out_dir:
        check_writable_dir(a.out_dir)

    device = pick_device(a.device)
    model = load_ema_model(state, a.checkpoint).to(device)
    size, channels = model.config.image_size, model.config.in_channels
    if label is not None:
        labels = torch.full((a.num_samples,), label)
    elif a.evaluate and classes:
        labels = torch.arange(a.num_samples) % len(classes)
    else:
        labels = None
    images = sample_in_batches(model, a.num_samples, (channels, size, size), checkpoint_schedule(state), timesteps,
                               config["prediction"], labels=labels, batch_size=a.batch_size, seed=a.seed, device=device,
                               guidance=a.guidance, rescale=a.guidance_rescale, eta=a.eta, sampler=a.sampler, offset_noise=a.offset_noise,
                               amp_dtype=amp_dtype(device, a.precision))
    save_image((images + 1) / 2, out, nrow=8)
    if a.out_dir:
        for i, image in enumerate(images):
            save_image((image + 1) / 2, Path(a.out_dir) / f"{i:06d}.png")
    summary = summarize(brightness(images))
    print(f"wrote {out} ({a.num_samples} samples, step {state['step']}, {a.num_steps} {a.spacing} {a.sampler} steps)")
    print(summary_line("brightness", summary))
    if "data_brightness" in state:
        print(summary_line("data brightness", state["data_brightness"]))
    if a.evaluate:
        print(summary_line("quality", evaluate(images, labels, config, device)))
    return 0


def evaluate(images: torch.Tensor, labels: torch.Tensor | None, config: dict, device: torch.device) -> dict:
    """The shapes yardstick against held-out shapes, or FID/KID against the training images."""
    if config["dataset"] == "shapes":
        return shapes_quality(images, labels)
    dataset = load_dataset(config["dataset"], config["data_dir"], config["image_size"] or None)
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:REAL_IMAGES]
    real = torch.stack([dataset[i][0] for i in pick.tolist()])
    return fid_quality(images, real, inception_extractor(device))


if __name__ == "__main__":
    run(main)
