"""Train a diffusion model with the paper's fixes (Lin et al., WACV 2024).

    python train.py                                   # zero terminal SNR + v-prediction on the embedded shapes
    python train.py --no-zero-snr --prediction eps    # Stable Diffusion's recipe, the baseline
    torchrun --nproc_per_node 4 train.py --dataset cifar10 --model cifar10 --batch-size 128

Read top to bottom: the config; the schedule (fix #1, zero terminal SNR, in `make_schedule`);
the data, model, EMA and optimizer; the loop, whose loss regresses the v target (fix #2,
`diffusion_loss`). Fixes #3 (trailing steps) and #4 (rescaled guidance) are sampling-time:
see sample.py. Checkpoints hold everything needed to resume bit-exactly on the CPU.
"""
import argparse
import copy
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torchvision.utils import save_image
from tqdm.auto import tqdm

from cli import PRECISIONS, Parser, amp_dtype, autocast, check_writable_dir, pick_device, run
from data import DATASETS, DEFAULT_IMAGE_SIZE, load_dataset
from diffusion import PREDICTION_TYPES, SCHEDULES, diffusion_loss, get_timesteps, make_schedule, sample
from evaluation.metrics import brightness, summarize, summary_line
from evaluation.yardstick import shapes_quality
from models import PRESETS, UNet, unet_config
from models.checkpoint import CheckpointError, load_training_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    dataset: str = "shapes"
    data_dir: str = "datasets"
    download: bool = False
    image_size: int = 0  # 0: the dataset's own (32 for shapes and CIFAR-10, 64 for CelebA and folders)
    num_images: int = 10_000  # size of the embedded shapes dataset
    model: str = "cpu"
    class_cond: bool = True  # when the dataset has classes
    hflip: bool | None = None  # None: on, except for image folders (text, digits and other asymmetric content)
    batch_size: int = 64
    steps: int = 1_800
    lr: float = 2e-3
    lr_schedule: str = "constant"
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    schedule: str = "scaled_linear"
    zero_snr: bool = True
    prediction: str = "x0"  # at zero SNR x0 works as well as v, and a small model's samples are clean (docs/quality_trials.md)
    loss_space: str = ""  # "": the prediction's own space
    timesteps: int = 1000
    offset_noise: float = 0.0
    label_dropout: float = 0.1  # forced to 0 for an unconditional model
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int = 0
    out: str = "runs/default"
    ckpt_every: int = 450
    log_every: int = 10


# Flags that may differ between a run and its --resume: where and how long to train, and the step size
# (lowered after a divergence). Anything else would silently train a different model.
RESUMABLE = {"steps", "device", "precision", "workers", "out", "ckpt_every", "log_every", "download", "data_dir", "lr", "grad_clip"}
CHECKPOINT = "checkpoint.pt"


def parse_args(argv: list[str] | None = None) -> tuple[dict, bool]:
    """The flags given on the command line (others stay unset), and whether to resume."""
    d = TrainConfig()
    p = Parser(description="Train a diffusion model with zero terminal SNR, v-prediction and the paper's other fixes.")
    arg = p.add_argument
    arg("--dataset", choices=DATASETS, help=f"training data; 'shapes' is embedded and needs no download (default: {d.dataset})")
    arg("--data-dir", help=f"where cifar10/celeba live, or the image folder's root (default: {d.data_dir})")
    arg("--download", action=argparse.BooleanOptionalAction, help="download cifar10/celeba into --data-dir first (needs internet)")
    arg("--image-size", type=int, help=f"image side in pixels (default: {DEFAULT_IMAGE_SIZE})")
    arg("--num-images", type=int, help=f"how many embedded shapes images to generate (default: {d.num_images})")
    arg("--model", choices=PRESETS, help=f"UNet size preset: tiny (tests), cpu, cifar10 (35.7M, GPU) (default: {d.model})")
    arg("--hflip", action=argparse.BooleanOptionalAction, help="flip training images left-right at random "
        "(default: on for shapes, cifar10 and celeba; off for a folder, which may hold text or digits)")
    arg("--class-cond", action=argparse.BooleanOptionalAction, help="condition on the class label when the dataset has classes (default: on)")
    arg("--batch-size", type=int, help=f"images per optimizer step, over all processes (default: {d.batch_size})")
    arg("--steps", type=int, help=f"total optimizer steps; with --resume, train up to this step (default: {d.steps})")
    arg("--lr", type=float, help=f"AdamW learning rate after linear warmup (default: {d.lr})")
    arg("--lr-schedule", choices=LR_SCHEDULES, help="after warmup: constant, or cosine decay to 0 at --steps (default: constant)")
    arg("--warmup", type=int, help=f"learning-rate warmup steps (default: {d.warmup})")
    arg("--grad-clip", type=float, help=f"clip the gradient norm to this; 0 turns clipping off (default: {d.grad_clip})")
    arg("--ema-decay", type=float, help=f"decay of the weight average used for sampling (default: {d.ema_decay})")
    arg("--schedule", choices=SCHEDULES, help=f"beta schedule (default: {d.schedule})")
    arg("--zero-snr", action=argparse.BooleanOptionalAction, help="fix #1: rescale the schedule to zero terminal SNR (default: on)")
    arg("--prediction", choices=PREDICTION_TYPES, help=f"fix #2: what the network predicts (default: {d.prediction})")
    arg("--loss-space", choices=PREDICTION_TYPES, help="regress in this space (e.g. v: the paper's v-loss for any "
        "--prediction); default: the prediction's own")
    arg("--timesteps", type=int, help=f"number of training timesteps T (default: {d.timesteps})")
    arg("--offset-noise", type=float, help="add S*N(0,1) per image and channel to the noise: the older workaround (default: 0)")
    arg("--label-dropout", type=float, help=f"probability of the null label, for guidance; 0 if unconditional (default: {d.label_dropout})")
    arg("--seed", type=int, help=f"seed of data order, noise and initial weights (default: {d.seed})")
    arg("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps; bf16 autocast on cuda (default: auto)")
    arg("--precision", choices=PRECISIONS, help="bf16 autocast for the forward pass; auto: bf16 on CUDA, fp32 elsewhere (default: auto)")
    arg("--workers", type=int, help="data-loading worker processes (default: 0)")
    arg("--out", help=f"output folder for checkpoint.pt, metrics.jsonl and samples_STEP.png (default: {d.out})")
    arg("--ckpt-every", type=int, help=f"write a checkpoint and a sample grid every N steps, and at the end (default: {d.ckpt_every})")
    arg("--log-every", type=int, help=f"append the mean loss to metrics.jsonl every N steps (default: {d.log_every})")
    arg("--resume", action="store_true", help="continue OUT/checkpoint.pt up to --steps, with the config it was trained with")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    return {k: v for k, v in args.items() if v is not None}, resume


def resolve_config(given: dict, saved: dict | None) -> TrainConfig:
    """Defaults, overridden by the checkpoint being resumed, overridden by the flags given."""
    if saved is not None:
        clashes = [f"--{k.replace('_', '-')} {given[k]} (checkpoint: {saved[k]})"
                   for k in given if k not in RESUMABLE and given[k] != saved.get(k)]
        if clashes:
            raise CheckpointError(f"the checkpoint was trained differently from what was asked: {', '.join(clashes)}; "
                                  "drop those flags to resume, or train into a new --out")
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in (saved or {}).items() if k in known}, **given})


def check_config(c: TrainConfig) -> None:
    """Refuse numbers and combinations that cannot train, before any work is done."""
    positive = {"batch_size": c.batch_size, "steps": c.steps, "lr": c.lr, "timesteps": c.timesteps,
                "ckpt_every": c.ckpt_every, "log_every": c.log_every, "num_images": c.num_images}
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    non_negative = {"warmup": c.warmup, "grad_clip": c.grad_clip, "offset_noise": c.offset_noise,
                    "workers": c.workers, "image_size": c.image_size}
    for name, value in non_negative.items():
        if not value >= 0 or not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be zero or positive, got {value}")
    if not 0 <= c.ema_decay < 1:
        raise ValueError(f"--ema-decay must be in [0, 1), got {c.ema_decay}")
    if not 0 <= c.label_dropout < 1:
        raise ValueError(f"--label-dropout must be in [0, 1), got {c.label_dropout}")
    if c.timesteps < 2:
        raise ValueError(f"--timesteps must be at least 2, got {c.timesteps}")
    if c.prediction == "eps" and c.zero_snr:
        raise ValueError("--prediction eps cannot sample from a zero-SNR schedule (x0 is undefined at the last "
                         "timestep); use --prediction v, or --no-zero-snr for the baseline")


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun, one process per GPU (NCCL) or per CPU process (gloo)."""
    device = pick_device(device_name)
    if "RANK" not in os.environ:
        return 0, 1, device
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--device {device_name}: under torchrun each process takes the GPU cuda:LOCAL_RANK; "
                             "pass --device cuda (or auto)")
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise ValueError(f"torchrun trains on cuda or cpu, not {device.type}")
    return dist.get_rank(), dist.get_world_size(), device


def any_rank(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Each flag, true if it is true on any process (one all-reduce for all of them): decisions that
    end the loop must be taken by all ranks together, or the others wait forever in the next
    gradient all-reduce."""
    if world == 1:
        return flags
    flag_tensor = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(flag_tensor, op=dist.ReduceOp.MAX)
    return [bool(f) for f in flag_tensor.tolist()]


def gather_rng_states(device: torch.device, world: int) -> dict[str, list[torch.Tensor]]:
    """Every process's RNG states, rank by rank, so that each resumes its own stream."""
    states = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return {k: [v] for k, v in states.items()}
    gathered = [None] * world
    dist.all_gather_object(gathered, states)
    return {k: [g[k] for g in gathered] for k in states}


def restore_rng_states(state: dict, rank: int, world: int, device: torch.device, seed: int) -> None:
    """Each rank takes back its own saved stream; with another number of processes than were saved,
    every rank restarts from (seed, rank, step) instead, since no saved stream is its own."""
    saved = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    if len(saved) != world:
        torch.manual_seed(seed + 1_000_003 * rank + state["step"])  # seeds CUDA too
        return
    torch.set_rng_state(saved[rank])
    cuda_saved = state.get("cuda_rng")
    if device.type == "cuda" and isinstance(cuda_saved, list) and len(cuda_saved) == world:
        torch.cuda.set_rng_state(cuda_saved[rank], device)


class StepBatches:
    """Index batches whose order depends only on (seed, step): resuming at step s replays the same data.

    Epoch e is a permutation drawn from seed + e; each global batch is split across processes.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, rank: int, world: int):
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step
        self.rank, self.world = rank, world
        self.per_epoch = size // batch_size

    def __iter__(self):
        step = self.start_step
        while True:
            epoch, i = divmod(step, self.per_epoch)
            perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            while i < self.per_epoch:
                batch = perm[i * self.batch_size:(i + 1) * self.batch_size]
                yield batch[self.rank::self.world].tolist()
                i, step = i + 1, step + 1


def brightness_summary(dataset, seed: int, n: int = 1000) -> dict[str, float]:
    """Per-image mean brightness of up to n training images: what sampling should reproduce."""
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return summarize(brightness(torch.stack([dataset[i][0] for i in pick.tolist()])))


LR_SCHEDULES = ("constant", "cosine")


def lr_at(step: int, c: TrainConfig) -> float:
    """Linear warmup to --lr, then constant (as DDPM) or a cosine decay to 0 at the last step."""
    warm = min(1.0, (step + 1) / max(c.warmup, 1))
    if c.lr_schedule == "constant":
        return c.lr * warm
    progress = min(1.0, max(0, step - c.warmup) / max(c.steps - c.warmup, 1))
    return c.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ, with d warmed up as min(decay, (1 + step)/(10 + step)) for short runs."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)


@torch.no_grad()
def save_sample_grid(ema: UNet, schedule, c: TrainConfig, path: Path, device: torch.device) -> dict:
    """A grid from the EMA model: one row per class (or 8×8 unconditional), 25 trailing DDIM steps.

    Returns the quality of those samples: on the shapes the yardstick (`evaluation.yardstick`),
    elsewhere their brightness summary. Cheap, since the grid is drawn anyway.
    """
    num_classes = ema.config.num_classes
    rows = num_classes if num_classes else 8
    labels = torch.arange(num_classes).repeat_interleave(8) if num_classes else None
    timesteps = get_timesteps(c.timesteps, 25, "trailing")
    size = ema.config.image_size
    images = sample(ema, (rows * 8, ema.config.in_channels, size, size), schedule, timesteps, c.prediction,
                    labels=labels, generator=torch.Generator().manual_seed(c.seed), device=device, progress=False,
                    amp_dtype=amp_dtype(device, c.precision))
    save_image((images + 1) / 2, path, nrow=8)
    if c.dataset == "shapes":
        return shapes_quality(images.cpu(), labels)
    return summarize(brightness(images))


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can checkpoint and exit 0.

    A context manager: the handlers it replaced come back when training ends, so a caller that
    trains in-process (the brightness experiment) can still be interrupted afterwards.
    """

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.requested = True


def open_metrics(path: Path, step: int):
    """metrics.jsonl for appending, without rows past `step` that a killed run wrote after its last checkpoint."""
    rows = path.read_text().splitlines() if step and path.exists() else []
    kept = [r for r in rows if json.loads(r)["step"] <= step]
    f = open(path, "w")
    f.writelines(r + "\n" for r in kept)
    return f


class TrainingDiverged(RuntimeError):
    pass


def train(c: TrainConfig, state: dict | None = None, dataset: Dataset | None = None) -> Path:
    """Train to c.steps, starting from a checkpoint `state` if given; returns the checkpoint path.

    `dataset` replaces the one the config names (the experiments pass one with reference images held out).
    """
    check_config(c)
    if c.hflip is None:
        c = replace(c, hflip=c.dataset != "folder")
    rank, world, device = setup_distributed(c.device)
    if c.batch_size % world:
        raise ValueError(f"--batch-size {c.batch_size} must be divisible by the {world} processes")
    out = Path(c.out)
    if rank == 0:
        check_writable_dir(c.out)
    torch.manual_seed(c.seed)  # the same initial weights on every rank, for the model and its EMA copy alike

    # Fix #1: the noise schedule, rescaled so that the last timestep is pure noise.
    schedule = make_schedule(c.schedule, c.timesteps, zero_snr=c.zero_snr)

    if dataset is None:
        dataset = load_dataset(c.dataset, c.data_dir, c.image_size or None, c.download, c.num_images, c.seed)
    if len(dataset) < c.batch_size:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than --batch-size {c.batch_size}")
    data_brightness = brightness_summary(dataset, c.seed)
    num_classes = len(dataset.classes) if c.class_cond else 0
    if not num_classes:
        c.label_dropout = 0.0
    image_size = c.image_size or DEFAULT_IMAGE_SIZE[c.dataset]
    model = UNet(unet_config(c.model, image_size, num_classes)).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # Fused: one kernel for all parameters, and it can skip a step on the device (found_inf below).
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda"))
    if rank:
        torch.manual_seed(c.seed + 1_000_003 * rank)  # but each rank its own noise, timesteps and flips
    step = 0
    if state is not None:
        if state["model_config"] != model.config_dict():
            raise CheckpointError("the checkpoint's model does not match this dataset and preset")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        restore_rng_states(state, rank, world, device, c.seed)
    ddp_model = DistributedDataParallel(model) if world > 1 else model

    def checkpoint() -> None:
        rng_states = gather_rng_states(device, world)  # a collective: every rank takes part
        if rank != 0:
            return
        save_checkpoint({
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, **rng_states, "config": asdict(c), "model_config": model.config_dict(),
            "classes": list(dataset.classes) if num_classes else [], "data_brightness": data_brightness,
        }, out / CHECKPOINT)
        quality = save_sample_grid(ema, schedule, c, out / f"samples_{step:06d}.png", device)
        metrics.write(json.dumps({"step": step, "quality": quality}) + "\n")
        metrics.flush()

    # The loader gets a generator of its own: by default it would draw its workers' seed from the
    # global RNG, shifting the noise stream of a resumed run by one draw.
    loader = DataLoader(dataset, batch_sampler=StepBatches(len(dataset), c.batch_size, c.seed, step, rank, world),
                        num_workers=c.workers, pin_memory=device.type == "cuda", persistent_workers=c.workers > 0,
                        generator=torch.Generator().manual_seed(c.seed))
    if rank == 0:
        print(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {len(dataset)} "
              f"{c.dataset} images ({num_classes or 'no'} classes), {c.schedule}{' + zero SNR' if c.zero_snr else ''}, "
              f"{c.prediction}-prediction, {device}, from step {step} to {c.steps}")
        print(summary_line("data brightness", data_brightness))
    metrics = open_metrics(out / "metrics.jsonl", step) if rank == 0 else None
    bar = tqdm(total=c.steps, initial=step, disable=rank != 0, desc="train")
    # The loop reads the device back once a window (every --log-every steps, and at checkpoints):
    # the loss sum and the first step whose loss or gradient was not finite, in one transfer.
    loss_sum, window, first_bad = torch.zeros((), device=device), 0, torch.full((), -1.0, device=device)
    tic = time.perf_counter()
    model.train()
    batches = iter(loader)
    with StopRequest() as stop:
        while step < c.steps:
            x0, labels = next(batches)
            x0, labels = x0.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if c.hflip:
                x0 = torch.where(torch.rand(len(x0), 1, 1, 1, device=device) < 0.5, x0.flip(3), x0)
            if num_classes:
                labels = torch.where(torch.rand(len(labels), device=device) < c.label_dropout, -1, labels)
            else:
                labels = None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, c)
            with autocast(device, c.precision):
                # Fix #2: regress the target --prediction names (v in the paper, x0 by default here).
                loss = diffusion_loss(ddp_model, x0, schedule, c.prediction, labels, offset_noise=c.offset_noise,
                                      loss_space=c.loss_space or None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip or float("inf"))
            # A non-finite loss or gradient skips the update on the device (found_inf, as GradScaler
            # uses it), so the weights stay good until the window's read stops the run.
            bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
            optimizer.found_inf = bad.float()
            optimizer.step()
            first_bad = torch.where(bad & (first_bad < 0), float(step + 1), first_bad)
            update_ema(ema, model, c.ema_decay, step)
            step += 1
            loss_sum += loss.detach().float()
            window += 1
            bar.update(1)
            if step % c.log_every and step % c.ckpt_every and step < c.steps:
                continue

            mean_loss, bad_step = torch.stack([loss_sum / window, first_bad]).tolist()
            # A stop signal takes effect at the next read, on every rank at once.
            diverged, stopping = any_rank([bad_step >= 0, stop.requested], device, world)
            if diverged:
                raise TrainingDiverged(
                    f"training diverged at step {int(bad_step) if bad_step >= 0 else step}; the loss or its gradient is "
                    f"not finite. The last good checkpoint ({out / CHECKPOINT}) is kept: resume it with a lower --lr or --grad-clip")
            if step % c.log_every == 0:
                seconds, tic = time.perf_counter() - tic, time.perf_counter()
                if rank == 0:
                    row = {"step": step, "loss": mean_loss, "lr": lr_at(step - 1, c),
                           "images_per_sec": window * c.batch_size / seconds}
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{row['images_per_sec']:.0f}")
                loss_sum.zero_()
                window = 0
            if step % c.ckpt_every == 0 or step == c.steps or stopping:
                checkpoint()
            if stopping:
                if rank == 0:
                    print(f"stopped at step {step}; resume with: python train.py --out {c.out} --resume")
                break
    bar.close()
    if metrics:
        metrics.close()
    if world > 1:
        dist.destroy_process_group()
    return out / CHECKPOINT


def main() -> int:
    given, resume = parse_args()
    out = Path(given.get("out", TrainConfig.out))
    state = None
    if resume:
        state = load_training_checkpoint(out / CHECKPOINT)
    elif (out / CHECKPOINT).exists():
        raise ValueError(f"{out / CHECKPOINT} exists; pass --resume to continue it, or choose another --out")
    config = resolve_config(given, state["config"] if state else None)
    if state and state["step"] >= config.steps:
        print(f"{out / CHECKPOINT} is already at step {state['step']} >= --steps {config.steps}; nothing to do")
        return 0
    try:
        train(config, state)
    except TrainingDiverged as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
