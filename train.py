"""Train a diffusion model with the paper's fixes (Lin et al., WACV 2024).

    python train.py                                   # zero terminal SNR on the embedded shapes
    python train.py --no-zero-snr --prediction eps    # Stable Diffusion's recipe, the baseline
    torchrun --nproc_per_node 4 train.py --dataset cifar10 --model cifar10 --batch-size 128

Read top to bottom: the config; the schedule (fix #1, zero terminal SNR); the data, the model, its EMA and the
optimizer; the loop, whose loss regresses the target of fix #2. Fixes #3 (trailing steps) and #4 (rescaled guidance) act
at sampling time: see sample.py. Every flag, its default and its check are in train_config.py; resuming, torchrun, stop
signals and the metrics log are plumbing, in runtime.py.
"""
import copy
import itertools
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import runtime
from cli import UsageError, amp_dtype, check_writable_dir, run
from data import hold_out, load_dataset
from diffusion import NULL_CLASS, FlowAsV, Schedule, diffusion_loss, flow_loss, flow_schedule, make_schedule
from evaluation.metrics import brightness_summary, summary_line
from evaluation.preview import preview
from models import UNet, unet_config
from models.checkpoint import load_weights
from train_config import RESUMABLE, TrainConfig, check_config, detail_skip_on, parse_args, recipe_defaults


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to --lr, then constant (as DDPM), or wsd (warmup-stable-decay, Hägele et al. 2024):
    constant, then a linear decay to 0 over the last --decay-fraction of the steps,

        lr(step) = lr · min(1, (steps − step) / (decay_fraction · steps)).

    A short run's last weights otherwise carry the optimiser's noise at full step size; and since the
    stable part does not depend on --steps, a longer run can branch its decay off a shorter one's checkpoint.
    """
    warm = min(1.0, (step + 1) / max(config.warmup, 1))
    if config.lr_schedule == "constant":
        return config.lr * warm
    return config.lr * warm * min(1.0, (config.steps - step) / (config.decay_fraction * config.steps))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ, with d warmed up as min(decay, (1 + 3·step)/(10 + 3·step)).

    The warm-up keeps the random initial weights out of the average: an average of decay d spans about 1/(1 − d)
    steps, here (10 + 3·step)/9, a third of the steps so far, until it reaches the 1/(1 − decay) --ema-decay asks
    for. (The common (1 + step)/(10 + step) reaches the decay only after (10·decay − 1)/(1 − decay) steps, more than
    a short run takes.) One multi-tensor lerp: one kernel launch on a GPU, not one per tensor. At decay 0 its weight
    is 1, which returns θ exactly: the "average" is the last weights themselves.
    """
    d = min(decay, (1 + 3 * step) / (10 + 3 * step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)


@dataclass
class Job:
    """What the loop works with, built by `setup` from the config and the checkpoint being resumed."""

    config: TrainConfig  # as trained: the dataset's defaults filled in
    rank: int
    world: int
    device: torch.device
    schedule: Schedule
    dataset: Dataset
    num_classes: int
    data_brightness: dict
    model: UNet
    ema: UNet
    optimizer: torch.optim.Optimizer
    step: int
    loader: DataLoader
    out: Path


def setup(config: TrainConfig, state: dict | None) -> Job:
    """The schedule (fix #1), the data, the model, its EMA and the optimizer, resumed from `state` if given."""
    rank, world, device = runtime.setup_distributed(config.device)
    if config.batch_size % world:
        raise UsageError(f"--batch-size {config.batch_size} must be divisible by the {world} processes")
    if rank == 0:
        check_writable_dir(config.out)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls and convolutions on CUDA

    # Fix #1: the noise schedule, rescaled so that the last timestep is pure noise (a flow's path ends there).
    if config.objective == "flow":
        schedule = flow_schedule(config.timesteps)
    else:
        schedule = make_schedule(config.schedule, config.timesteps, zero_snr=config.zero_snr)

    with runtime.rank_zero_first(rank, world):  # one download and one cache build, not one per process
        dataset = load_dataset(config.dataset, config.data_dir, config.image_size, config.download, config.num_images,
                               config.seed)
    if config.hold_out:
        split_seed = config.seed if config.hold_out_seed is None else config.hold_out_seed
        _, dataset = hold_out(dataset, config.hold_out, split_seed)
    if len(dataset) < config.batch_size:
        raise UsageError(f"the dataset has {len(dataset)} images, fewer than --batch-size {config.batch_size}")
    num_classes = len(dataset.classes) if config.class_cond else 0
    # Recorded as trained: no flips for a folder unless asked (it may hold text), no null labels without classes,
    # loader workers on CUDA so that the GPU does not wait on the batches.
    config = replace(config, hflip=config.dataset != "folder" if config.hflip is None else config.hflip,
                     label_dropout=config.label_dropout if num_classes else 0.0,
                     workers=(4 if device.type == "cuda" else 0) if config.workers is None else config.workers,
                     detail_skip=detail_skip_on(config))
    channels, size = dataset[0][0].shape[:2]
    try:
        # The detail skip's gain comes from this run's schedule (zero SNR or not), as a checkpoint rebuilds it.
        model = UNet(replace(unet_config(config.model, size, num_classes, channels), detail_skip=config.detail_skip),
                     schedule.alpha_bar).to(device)
    except ValueError as e:  # an image size this UNet cannot cut: the flags' fault, not a bug
        raise UsageError(f"--image-size {size}: {e}") from None
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # Fused: one kernel for all parameters, and it skips a non-finite step on the device (runtime.skip_if_not_finite).
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2), weight_decay=0.0,
                                  fused=device.type in ("cpu", "cuda"))
    if rank:
        torch.manual_seed(config.seed + 1_000_003 * rank)  # but each rank its own noise, timesteps and flips
    step = runtime.resume(state, model, ema, optimizer, rank, world, device, config.seed) if state else 0
    if config.init_from and not state:
        load_weights(config.init_from, model, ema)
    # Its own generator: the default draws the workers' seed from the global RNG, shifting a resumed run's noise by one draw.
    loader = DataLoader(dataset, batch_sampler=runtime.StepBatches(len(dataset), config.batch_size, config.seed, step, rank, world),
                        num_workers=config.workers, pin_memory=device.type == "cuda",
                        persistent_workers=config.workers > 0, generator=torch.Generator().manual_seed(config.seed))
    job = Job(config, rank, world, device, schedule, dataset, num_classes, brightness_summary(dataset, config.seed),
              model, ema, optimizer, step, loader, Path(config.out))
    if rank == 0:
        print(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {len(dataset)} "
              f"{config.dataset} images ({num_classes or 'no'} classes), "
              f"{config.schedule}{' + zero SNR' if config.zero_snr else ''}, {config.prediction}-prediction, {device}, "
              f"from step {step} to {config.steps}")
        print(summary_line("data brightness", job.data_brightness))
    return job


def save_checkpoint(job: Job, step: int, metrics: runtime.MetricsLog) -> None:
    """checkpoint.pt (all a bit-exact resume needs), then a grid of the EMA model's samples, its quality logged."""
    runtime.save_training_state(job.out / runtime.CHECKPOINT, job.model, job.ema, job.optimizer, step, job.rank, job.world,
                                job.device, config=asdict(job.config), data_brightness=job.data_brightness,
                                classes=list(job.dataset.classes) if job.num_classes else [])
    if job.rank == 0:
        c = job.config
        ema = FlowAsV(job.ema, job.schedule) if c.objective == "flow" else job.ema
        quality = preview(ema, job.schedule, c.prediction, job.out / f"samples_{step:06d}.png", shapes=c.dataset == "shapes",
                          seed=c.seed, device=job.device, amp_dtype=amp_dtype(job.device, c.precision))
        metrics.write({"step": step, "quality": quality})


def train(config: TrainConfig, state: dict | None = None) -> Path:
    """Train to config.steps, from the checkpoint `state` if given; returns the checkpoint's path."""
    started = time.perf_counter()
    job = setup(config, state)
    config, model, optimizer, device, step = job.config, job.model, job.optimizer, job.device, job.step
    ddp_model = DistributedDataParallel(model) if job.world > 1 else model
    # bf16 where the hardware runs it natively (or where --precision asks), else full precision.
    dtype = amp_dtype(device, config.precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    # Plumbing behind names: the metrics file, the loss read back once a window, SIGINT/SIGTERM ending with a checkpoint.
    metrics, window = runtime.MetricsLog(job.out / "metrics.jsonl", step, job.rank, started), runtime.LossWindow(device)
    stop = runtime.StopRequest()
    bar = tqdm(total=config.steps, initial=step, disable=job.rank != 0, desc="train")
    model.train()
    batches = iter(job.loader)
    if config.compile:  # compiled on the first batch, which the loop then trains on: the compile time counts as the run's
        first = next(batches)
        x, labels = (t.to(device) for t in first)
        t = torch.zeros(len(x), dtype=torch.float32 if config.objective == "flow" else torch.long, device=device)
        with autocast:  # t of the type the loss passes: a flow's is a float in [0, 1], a diffusion's an integer step
            ddp_model = runtime.compile_or_eager(ddp_model, (x, t, labels if job.num_classes else None))
        batches = itertools.chain([first], batches)
    with stop:
        while step < config.steps:
            x0, labels = (t.to(device, non_blocking=True) for t in next(batches))
            if config.hflip:
                x0 = torch.where(torch.rand(len(x0), 1, 1, 1, device=device) < 0.5, x0.flip(3), x0)
            if job.num_classes:  # dropping labels teaches the unconditional model that guidance needs
                labels = torch.where(torch.rand(len(labels), device=device) < config.label_dropout, NULL_CLASS, labels)
            else:
                labels = None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            with autocast:
                if config.objective == "flow":  # regress the velocity ε − x0 of the straight path
                    loss = flow_loss(ddp_model, x0, labels, config.flow_time)
                else:  # Fix #2: regress v_t = √ᾱ·ε − √(1 − ᾱ)·x0 (the paper's v-loss), or the target --prediction names.
                    loss = diffusion_loss(ddp_model, x0, job.schedule, config.prediction, labels,
                                          offset_noise=config.offset_noise, loss_space=config.loss_space or None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            not_finite = window.add(loss, grad_norm, step + 1)  # numbered as the log numbers it: the count after the step
            runtime.skip_if_not_finite(optimizer, not_finite)
            optimizer.step()
            update_ema(job.ema, model, config.ema_decay, step)
            step += 1
            bar.update(1)

            log_now = step % config.log_every == 0
            save_now = step % config.ckpt_every == 0 or step == config.steps
            if log_now or save_now:  # the only steps that wait for the device
                mean_loss, stopping = window.read(step, stop, device, job.world, job.out)
                if log_now:
                    metrics.write_loss(step, mean_loss, lr_at(step - 1, config), window.steps * config.batch_size)
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    window.reset()
                if save_now or stopping:
                    save_checkpoint(job, step, metrics)
                if stopping:
                    if job.rank == 0:
                        print(f"stopped at step {step}; resume with: python train.py --out {config.out} --resume")
                    break
    bar.close()
    metrics.close()
    runtime.end_distributed(job.world)
    return job.out / runtime.CHECKPOINT


def resolve(given: dict, state: dict | None) -> TrainConfig:
    """The run's recipe: TrainConfig's defaults, under the model preset's recipe, under the resumed checkpoint's
    config, under the flags given."""
    saved = state["config"] if state else None
    model = given.get("model") or (saved["model"] if saved else TrainConfig.model)
    return runtime.resolve_config(recipe_defaults(model), given, saved, RESUMABLE)


def main() -> int:
    given, resume = parse_args()
    out = Path(given.get("out", TrainConfig.out))
    state = runtime.previous_state(out, resume)
    config = resolve(given, state)
    check_config(config, given)
    if state and not resume and state["step"] < config.steps:
        raise UsageError(f"{out / runtime.CHECKPOINT} is a finished run of {state['step']} steps; pass --resume to train "
                         f"it on to {config.steps}, or choose another --out")
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
