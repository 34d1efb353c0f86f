"""Train a diffusion model with the paper's fixes (Lin et al., WACV 2024).

    python train.py                                   # zero terminal SNR on the embedded shapes
    python train.py --no-zero-snr --prediction eps    # Stable Diffusion's recipe, the baseline
    torchrun --nproc_per_node 4 train.py --dataset cifar10 --model cifar10 --batch-size 128

Read top to bottom: the config; the schedule (fix #1, zero terminal SNR); the data, the model,
its EMA and the optimizer; the loop, whose loss regresses the target of fix #2. Fixes #3
(trailing steps) and #4 (rescaled guidance) act at sampling time: see sample.py. Resuming,
torchrun, stop signals and the metrics log are plumbing, in runtime.py.
"""
import argparse
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm.auto import tqdm

import runtime
from cli import PRECISIONS, Parser, UsageError, add_flags, amp_dtype, autocast, check_writable_dir, flag, run
from data import DATASETS, hold_out, load_dataset
from diffusion import NULL_CLASS, PREDICTION_TYPES, SCHEDULES, check_pairing, diffusion_loss, get_timesteps, make_schedule, sample_in_batches
from evaluation.metrics import brightness, brightness_summary, summarize, summary_line
from evaluation.yardstick import shapes_quality
from models import PRESETS, UNet, unet_config
from models.checkpoint import load_training_checkpoint

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = flag("shapes", "training data; 'shapes' is embedded and needs no download", choices=DATASETS)
    data_dir: str = flag("datasets", "where cifar10/celeba live, or the image folder's root (one subfolder per class)")
    download: bool = flag(False, "download cifar10/celeba into --data-dir first (needs internet)")
    image_size: int | None = flag(None, "image side in pixels (default: the dataset's, 32 for shapes and cifar10, "
                                  "64 for celeba and folders)", type=int)
    num_images: int | None = flag(None, "how many shapes to generate, or a random subset of at most this many images "
                                  "of another dataset (default: 10,000 shapes, all other images)", type=int)
    hold_out: int = flag(0, "keep this many images (a split seeded by --seed) out of training, as a reference "
                         "to measure samples against")
    hflip: bool | None = flag(None, "flip training images left-right at random (default: on, except for a folder, "
                              "which may hold text or digits)", action=argparse.BooleanOptionalAction)
    class_cond: bool = flag(True, "condition on the class label when the dataset has classes")
    model: str = flag("cpu", "UNet size: tiny (tests), cpu, cifar10 (35.7M, for a GPU)", choices=PRESETS)
    init_from: str = flag("", "fine-tune: start from this checkpoint's model and EMA weights with a fresh optimizer and "
                          "step count; --schedule, --zero-snr, --prediction and --offset-noise may differ from its own "
                          "(default: from scratch)")
    batch_size: int = flag(64, "images per optimizer step, over all processes")
    steps: int = flag(2_700, "total optimizer steps; with --resume, train up to this step")
    lr: float = flag(2e-3, "AdamW learning rate after the warmup")
    lr_schedule: str = flag("constant", "after the warmup: constant, or a cosine decay to 0 at --steps",
                            choices=LR_SCHEDULES)
    warmup: int = flag(100, "steps of linear learning-rate warmup")
    grad_clip: float = flag(1.0, "clip the gradient norm to this; 0 turns clipping off")
    ema_decay: float = flag(0.999, "decay of the weight average that sampling uses")
    schedule: str = flag("scaled_linear", "beta schedule", choices=SCHEDULES)
    zero_snr: bool = flag(True, "fix #1: rescale the schedule to zero terminal SNR")
    # At zero SNR x0-prediction works as well as v, and a small model's samples come out clean (docs/quality_trials.md).
    prediction: str = flag("x0", "fix #2: what the network predicts", choices=PREDICTION_TYPES)
    loss_space: str = flag("", "regress in this space, e.g. v: the paper's v-loss for any --prediction "
                           "(default: the prediction's own)", choices=PREDICTION_TYPES)
    timesteps: int = flag(1000, "training timesteps T")
    offset_noise: float = flag(0.0, "add S·N(0, 1) per image and channel to the noise: the older workaround")
    label_dropout: float = flag(0.1, "probability of the null label, which guidance needs (unconditional models: none)")
    seed: int = flag(0, "seed of the data order, the noise and the initial weights")
    device: str = flag("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    precision: str = flag("auto", "bf16 autocast of the network; auto: bf16 on CUDA and on CPUs with native bf16 "
                          "instructions, else fp32", choices=PRECISIONS)
    workers: int = flag(0, "data-loading worker processes")
    out: str = flag("runs/default", "folder for checkpoint.pt, metrics.jsonl and samples_STEP.png")
    ckpt_every: int = flag(900, "write a checkpoint and a sample grid every N steps, and at the end")
    log_every: int = flag(10, "append the mean loss to metrics.jsonl every N steps")


# What may change when a run is resumed: where and how long to train, and the step size (lowered after
# a divergence). Anything else would silently train a different model.
RESUMABLE = {"steps", "device", "precision", "workers", "out", "ckpt_every", "log_every", "download", "data_dir", "lr", "grad_clip"}


def parse_args(argv: list[str] | None = None) -> tuple[dict, bool]:
    """The flags given on the command line (the others stay unset), and whether to resume."""
    p = Parser(description="Train a diffusion model with zero terminal SNR and the paper's other fixes.")
    add_flags(p, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt up to --steps, with its config")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    return {k: v for k, v in args.items() if v is not None}, resume


def check_config(c: TrainConfig, given: dict) -> None:
    """Refuse numbers and combinations that cannot train, or flags that would do nothing, before any work."""
    optional = {"image_size": c.image_size, "num_images": c.num_images}  # None: the dataset's own
    positive = {"batch_size": c.batch_size, "steps": c.steps, "lr": c.lr, "ckpt_every": c.ckpt_every,
                "log_every": c.log_every, **{k: v for k, v in optional.items() if v is not None}}
    non_negative = {"warmup": c.warmup, "grad_clip": c.grad_clip, "offset_noise": c.offset_noise, "workers": c.workers,
                    "hold_out": c.hold_out}
    in_range = {"ema_decay": (c.ema_decay, 0, 1), "label_dropout": (c.label_dropout, 0, 1), "timesteps": (c.timesteps, 2, math.inf)}
    for name, value in positive.items():
        if not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name, value in non_negative.items():
        if not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"--{name.replace('_', '-')} must be zero or positive, got {value}")
    for name, (value, low, high) in in_range.items():
        if not low <= value < high:
            raise UsageError(f"--{name.replace('_', '-')} must be in [{low}, {high}), got {value}")
    try:
        check_pairing(c.prediction, c.zero_snr)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for_files = sorted({"data_dir", "download"} & set(given))
    if c.dataset == "shapes" and for_files:
        raise UsageError(f"--{for_files[0].replace('_', '-')} does nothing with --dataset shapes, which is made in code")


def lr_at(step: int, c: TrainConfig) -> float:
    """Linear warmup to --lr, then constant (as DDPM) or a cosine decay to 0 at the last step."""
    warm = min(1.0, (step + 1) / max(c.warmup, 1))
    if c.lr_schedule == "constant":
        return c.lr * warm
    progress = min(1.0, max(0, step - c.warmup) / max(c.steps - c.warmup, 1))
    return c.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ, with d warmed up as min(decay, (1 + 3·step)/(10 + 3·step)).

    The warm-up keeps the random initial weights out of the average early on. The common
    (1 + step)/(10 + step) would hold d below 0.999 until step 9,000, an average over the last
    ~300 steps of a 2,700-step run; three times faster, it reaches ~0.999 by the end, and the
    wider average spreads brightness closer to the data's (docs/quality_trials.md, t12).
    """
    d = min(decay, (1 + 3 * step) / (10 + 3 * step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)


def save_sample_grid(ema: UNet, schedule, c: TrainConfig, path: Path, device: torch.device) -> dict:
    """8 samples a class (or 64 unconditional) from the EMA model with 25 trailing DDIM steps; returns
    their quality: the yardstick on the shapes, elsewhere their brightness."""
    num_classes = ema.config.num_classes
    labels = torch.arange(num_classes).repeat_interleave(8) if num_classes else None
    size = ema.config.image_size
    images = sample_in_batches(ema, len(labels) if num_classes else 64, (ema.config.in_channels, size, size), schedule,
                               get_timesteps(c.timesteps, 25, "trailing"), c.prediction, labels=labels, seed=c.seed,
                               device=device, amp_dtype=amp_dtype(device, c.precision))
    save_image((images + 1) / 2, path, nrow=8)
    return shapes_quality(images, labels) if c.dataset == "shapes" else summarize(brightness(images))


def load_weights(path: str, model: UNet, ema: UNet) -> None:
    """The model and EMA weights of another checkpoint, for fine-tuning (the paper's §4 fine-tunes Stable
    Diffusion to zero SNR and v-prediction). Only what the weights do not fix may change: the schedule,
    the prediction, the offset noise; a different UNet, image size or class count is refused."""
    source = load_training_checkpoint(path)
    theirs, ours = source["model_config"], model.config_dict()
    differences = [f"{key} {theirs.get(key)} (this run: {ours[key]})" for key in ours if theirs.get(key) != ours[key]]
    if differences:
        raise UsageError(f"--init-from {path} holds another model: {', '.join(differences)}; use its --model, "
                         "--image-size and dataset")
    model.load_state_dict(source["model"])
    ema.load_state_dict(source["ema"])


def train(c: TrainConfig, state: dict | None = None) -> Path:
    """Train to c.steps, from the checkpoint `state` if given; returns the checkpoint's path."""
    rank, world, device = runtime.setup_distributed(c.device)
    if c.batch_size % world:
        raise UsageError(f"--batch-size {c.batch_size} must be divisible by the {world} processes")
    out = Path(c.out)
    if rank == 0:
        check_writable_dir(c.out)
    torch.manual_seed(c.seed)  # the same initial weights on every rank

    # Fix #1: the noise schedule, rescaled so that the last timestep is pure noise.
    schedule = make_schedule(c.schedule, c.timesteps, zero_snr=c.zero_snr)

    dataset = load_dataset(c.dataset, c.data_dir, c.image_size, c.download, c.num_images, c.seed)
    if c.hold_out:
        _, dataset = hold_out(dataset, c.hold_out, c.seed)
    if len(dataset) < c.batch_size:
        raise UsageError(f"the dataset has {len(dataset)} images, fewer than --batch-size {c.batch_size}")
    data_brightness = brightness_summary(dataset, c.seed)
    num_classes = len(dataset.classes) if c.class_cond else 0
    # Recorded as trained: no flips for a folder unless asked (it may hold text), no null labels without classes.
    c = replace(c, hflip=c.dataset != "folder" if c.hflip is None else c.hflip, label_dropout=c.label_dropout if num_classes else 0.0)
    channels, size = dataset[0][0].shape[:2]
    try:
        model = UNet(unet_config(c.model, size, num_classes, channels)).to(device)
    except ValueError as e:  # an image size this UNet cannot cut: the flags' fault, not a bug
        raise UsageError(f"--image-size {size}: {e}") from None
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # Fused: one kernel for all parameters, and it skips a non-finite step on the device (found_inf below).
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda"))
    if rank:
        torch.manual_seed(c.seed + 1_000_003 * rank)  # but each rank its own noise, timesteps and flips
    step = runtime.resume(state, model, ema, optimizer, rank, world, device, c.seed) if state else 0
    if c.init_from and not state:
        load_weights(c.init_from, model, ema)
    ddp_model = DistributedDataParallel(model) if world > 1 else model
    # The loader gets a generator of its own: by default it would draw its workers' seed from the
    # global RNG, shifting the noise stream of a resumed run by one draw.
    loader = DataLoader(dataset, batch_sampler=runtime.StepBatches(len(dataset), c.batch_size, c.seed, step, rank, world),
                        num_workers=c.workers, pin_memory=device.type == "cuda", persistent_workers=c.workers > 0,
                        generator=torch.Generator().manual_seed(c.seed))
    if rank == 0:
        print(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {len(dataset)} "
              f"{c.dataset} images ({num_classes or 'no'} classes), {c.schedule}{' + zero SNR' if c.zero_snr else ''}, "
              f"{c.prediction}-prediction, {device}, from step {step} to {c.steps}")
        print(summary_line("data brightness", data_brightness))

    def checkpoint() -> None:
        runtime.save_training_state(out / runtime.CHECKPOINT, model, ema, optimizer, step, rank, world, device,
                                    config=asdict(c), classes=list(dataset.classes) if num_classes else [],
                                    data_brightness=data_brightness)
        if rank == 0:  # a preview, and its quality in the log
            metrics.write({"step": step, "quality": save_sample_grid(ema, schedule, c, out / f"samples_{step:06d}.png", device)})

    metrics, window = runtime.MetricsLog(out / "metrics.jsonl", step, rank), runtime.LossWindow(device)
    bar = tqdm(total=c.steps, initial=step, disable=rank != 0, desc="train")
    tic = time.perf_counter()
    model.train()
    batches = iter(loader)
    with runtime.StopRequest() as stop:
        while step < c.steps:
            x0, labels = (t.to(device, non_blocking=True) for t in next(batches))
            if c.hflip:
                x0 = torch.where(torch.rand(len(x0), 1, 1, 1, device=device) < 0.5, x0.flip(3), x0)
            if num_classes:  # dropping labels teaches the unconditional model that guidance needs
                labels = torch.where(torch.rand(len(labels), device=device) < c.label_dropout, NULL_CLASS, labels)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, c)
            with autocast(device, c.precision):
                # Fix #2: regress the target --prediction names (v in the paper, x0 by default here).
                loss = diffusion_loss(ddp_model, x0, schedule, c.prediction, labels if num_classes else None,
                                      offset_noise=c.offset_noise, loss_space=c.loss_space or None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip or float("inf"))
            optimizer.found_inf = window.add(loss, grad_norm, step + 1)  # a non-finite step is skipped on the device
            optimizer.step()
            update_ema(ema, model, c.ema_decay, step)
            step += 1
            bar.update(1)
            if step % c.log_every and step % c.ckpt_every and step < c.steps:
                continue

            mean_loss, stopping = window.read(step, stop, device, world, out)  # the one read of the device
            if step % c.log_every == 0:
                seconds, tic = time.perf_counter() - tic, time.perf_counter()
                metrics.write({"step": step, "loss": mean_loss, "lr": lr_at(step - 1, c),
                               "images_per_sec": window.steps * c.batch_size / seconds})
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                window.reset()
            if step % c.ckpt_every == 0 or step == c.steps or stopping:
                checkpoint()
            if stopping:
                if rank == 0:
                    print(f"stopped at step {step}; resume with: python train.py --out {c.out} --resume")
                break
    bar.close()
    metrics.close()
    runtime.end_distributed(world)
    return out / runtime.CHECKPOINT


def main() -> int:
    given, resume = parse_args()
    out = Path(given.get("out", TrainConfig.out))
    state = None
    if resume:
        state = load_training_checkpoint(out / runtime.CHECKPOINT)
    elif (out / runtime.CHECKPOINT).exists():
        raise UsageError(f"{out / runtime.CHECKPOINT} exists; pass --resume to continue it, or choose another --out")
    config = runtime.resolve_config(TrainConfig(), given, state["config"] if state else None, RESUMABLE)
    check_config(config, given)
    if state and state["step"] >= config.steps:
        print(f"{out / runtime.CHECKPOINT} is already at step {state['step']} >= --steps {config.steps}; nothing to do")
        return 0
    try:
        train(config, state)
    except runtime.TrainingDiverged as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
