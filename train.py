"""Train a diffusion model with the paper's fixes (Lin et al., WACV 2024).

    python train.py                                   # zero terminal SNR on the embedded shapes
    python train.py --no-zero-snr --prediction eps    # Stable Diffusion's recipe, the baseline
    torchrun --nproc_per_node 4 train.py --dataset cifar10 --model cifar10 --batch-size 128

Read top to bottom: the config; the schedule (fix #1, zero terminal SNR); the data, the model,
its EMA and the optimizer; the loop, whose loss regresses the target of fix #2. Fixes #3
(trailing steps) and #4 (rescaled guidance) act at sampling time: see sample.py. Every flag, its
default and its check are in train_config.py; resuming, torchrun, stop signals and the metrics
log are plumbing, in runtime.py, which the loop body reaches only through the four closures
defined above it (skip_if_not_finite, sync, log, checkpoint) and the `with stop:` around it.
"""
import copy
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision.utils import save_image
from tqdm.auto import tqdm

import runtime
from cli import UsageError, amp_dtype, check_writable_dir, run
from data import hold_out, load_dataset
from diffusion import NULL_CLASS, FlowAsV, diffusion_loss, flow_loss, flow_schedule, get_timesteps, make_schedule, sample_in_batches
from evaluation.metrics import brightness, brightness_summary, summarize, summary_line
from evaluation.yardstick import shapes_quality
from models import UNet, unet_config
from models.checkpoint import load_weights
from train_config import (RESUMABLE, TrainConfig, check_config, detail_skip_default, parse_args, recipe_defaults,
                          trained_config)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to --lr, then constant (as DDPM) or a cosine decay to 0 at the last step."""
    warm = min(1.0, (step + 1) / max(config.warmup, 1))
    if config.lr_schedule == "constant":
        return config.lr * warm
    progress = min(1.0, max(0, step - config.warmup) / max(config.steps - config.warmup, 1))
    return config.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ, with d warmed up as min(decay, (1 + 3·step)/(10 + 3·step)).

    The warm-up keeps the random initial weights out of the average early on. An average of decay d spans
    about 1/(1 − d) steps: here (10 + 3·step)/9, a third of the steps taken so far, until it reaches the
    1/(1 − decay) that --ema-decay asks for. The common (1 + step)/(10 + step) spans a ninth of them and
    reaches the decay only after (10·decay − 1)/(1 − decay) steps, more than a short run takes.
    One multi-tensor lerp for all parameters: one kernel launch on a GPU instead of one per tensor.
    """
    d = min(decay, (1 + 3 * step) / (10 + 3 * step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)


def save_sample_grid(ema: UNet, schedule, config: TrainConfig, path: Path, device: torch.device) -> dict:
    """8 samples a class (or 64 unconditional) from the EMA model with 25 trailing DDIM steps; returns
    their quality: the yardstick on the shapes, elsewhere their brightness."""
    num_classes = ema.config.num_classes
    labels = torch.arange(num_classes).repeat_interleave(8) if num_classes else None
    size = ema.config.image_size
    model = FlowAsV(ema, schedule) if config.objective == "flow" else ema
    images = sample_in_batches(model, len(labels) if num_classes else 64, (ema.config.in_channels, size, size), schedule,
                               get_timesteps(config.timesteps, 25, "trailing"), config.prediction, labels=labels,
                               seed=config.seed, device=device, amp_dtype=amp_dtype(device, config.precision))
    save_image((images + 1) / 2, path, nrow=8)
    return shapes_quality(images, labels) if config.dataset == "shapes" else summarize(brightness(images))


def train(config: TrainConfig, state: dict | None = None) -> Path:
    """Train to config.steps, from the checkpoint `state` if given; returns the checkpoint's path."""
    rank, world, device = runtime.setup_distributed(config.device)
    if config.batch_size % world:
        raise UsageError(f"--batch-size {config.batch_size} must be divisible by the {world} processes")
    out = Path(config.out)
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
    data_brightness = brightness_summary(dataset, config.seed)
    num_classes = len(dataset.classes) if config.class_cond else 0
    # Recorded as trained: no flips for a folder unless asked (it may hold text), no null labels without classes,
    # loader workers on CUDA so that the GPU does not wait on the batches.
    config = replace(config, hflip=config.dataset != "folder" if config.hflip is None else config.hflip,
                     label_dropout=config.label_dropout if num_classes else 0.0,
                     workers=(4 if device.type == "cuda" else 0) if config.workers is None else config.workers,
                     detail_skip=detail_skip_default(config) if config.detail_skip is None else config.detail_skip)
    channels, size = dataset[0][0].shape[:2]
    try:
        model = UNet(replace(unet_config(config.model, size, num_classes, channels), detail_skip=config.detail_skip,
                             final_layer=config.final_layer),
                     schedule.alpha_bar).to(device)
    except ValueError as e:  # an image size this UNet cannot cut: the flags' fault, not a bug
        raise UsageError(f"--image-size {size}: {e}") from None
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # Fused: one kernel for all parameters, and it skips a non-finite step on the device (see skip_if_not_finite).
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda"))
    if rank:
        torch.manual_seed(config.seed + 1_000_003 * rank)  # but each rank its own noise, timesteps and flips
    step = runtime.resume(state, model, ema, optimizer, rank, world, device, config.seed) if state else 0
    if config.init_from and not state:
        load_weights(config.init_from, model, ema)
    ddp_model = DistributedDataParallel(model) if world > 1 else model
    # The loader gets a generator of its own: by default it would draw its workers' seed from the
    # global RNG, shifting the noise stream of a resumed run by one draw.
    batch_order = runtime.StepBatches(len(dataset), config.batch_size, config.seed, step, rank, world)
    loader = DataLoader(dataset, batch_sampler=batch_order, num_workers=config.workers,
                        pin_memory=device.type == "cuda", persistent_workers=config.workers > 0,
                        generator=torch.Generator().manual_seed(config.seed))
    # bf16 where the hardware runs it natively (or where --precision asks), else full precision.
    dtype = amp_dtype(device, config.precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    if rank == 0:
        print(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on {len(dataset)} "
              f"{config.dataset} images ({num_classes or 'no'} classes), "
              f"{config.schedule}{' + zero SNR' if config.zero_snr else ''}, {config.prediction}-prediction, {device}, "
              f"from step {step} to {config.steps}")
        print(summary_line("data brightness", data_brightness))

    # What the loop does besides the method, each behind a name: runtime.py's plumbing stays out of the loop.
    metrics, window = runtime.MetricsLog(out / "metrics.jsonl", step, rank), runtime.LossWindow(device)
    stop = runtime.StopRequest()  # within `with stop`, SIGINT and SIGTERM set a flag: the run ends with a checkpoint

    def skip_if_not_finite(loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Keep a non-finite loss or gradient norm from reaching the weights, without a device sync every step:
        LossWindow.add flags the step on the device (1.0 if either is not finite), and the fused AdamW skips a step
        whose `found_inf` is non-zero (the undocumented attribute GradScaler sets for it). The next `sync` stops the
        run. The unfused kernels (all mps has) refuse the flag: there only that stop keeps the checkpoint good."""
        not_finite = window.add(loss, grad_norm, step + 1)  # numbered as the log numbers it: the count after it
        if optimizer.defaults["fused"]:
            optimizer.found_inf = not_finite

    def sync() -> tuple[float, bool]:
        """The one read of the device, every --log-every steps and at checkpoints: the window's mean loss, and
        whether any rank was asked to stop; raises TrainingDiverged, on every rank, if a step was not finite."""
        return window.read(step, stop, device, world, out)

    def log(step: int, mean_loss: float) -> None:
        """A row of metrics.jsonl: the window's mean loss, the learning rate of its last step and the speed."""
        nonlocal tic
        seconds, tic = time.perf_counter() - tic, time.perf_counter()
        metrics.write({"step": step, "loss": mean_loss, "lr": lr_at(step - 1, config),
                       "images_per_sec": window.steps * config.batch_size / seconds})
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        window.reset()

    def checkpoint() -> None:
        """checkpoint.pt (everything a bit-exact resume needs), then a grid of samples and its quality in the log."""
        runtime.save_training_state(out / runtime.CHECKPOINT, model, ema, optimizer, step, rank, world, device,
                                    config=asdict(config), classes=list(dataset.classes) if num_classes else [],
                                    data_brightness=data_brightness)
        if rank == 0:
            grid = out / f"samples_{step:06d}.png"
            metrics.write({"step": step, "quality": save_sample_grid(ema, schedule, config, grid, device)})

    bar = tqdm(total=config.steps, initial=step, disable=rank != 0, desc="train")
    tic = time.perf_counter()
    model.train()
    batches = iter(loader)
    with stop:
        while step < config.steps:
            x0, labels = (t.to(device, non_blocking=True) for t in next(batches))
            if config.hflip:
                x0 = torch.where(torch.rand(len(x0), 1, 1, 1, device=device) < 0.5, x0.flip(3), x0)
            if num_classes:  # dropping labels teaches the unconditional model that guidance needs
                labels = torch.where(torch.rand(len(labels), device=device) < config.label_dropout, NULL_CLASS, labels)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            with autocast:
                if config.objective == "flow":  # regress the velocity ε − x0 of the straight path
                    loss = flow_loss(ddp_model, x0, labels if num_classes else None, config.flow_time)
                else:  # Fix #2: regress v_t = √ᾱ·ε − √(1 − ᾱ)·x0 (the paper's v-loss), or the target --prediction names.
                    loss = diffusion_loss(ddp_model, x0, schedule, config.prediction, labels if num_classes else None,
                                          offset_noise=config.offset_noise, loss_space=config.loss_space or None,
                                          timestep_sampling=config.timestep_sampling)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            skip_if_not_finite(loss, grad_norm)
            optimizer.step()
            update_ema(ema, model, config.ema_decay, step)
            step += 1
            bar.update(1)

            log_now = step % config.log_every == 0
            save_now = step % config.ckpt_every == 0 or step == config.steps
            if log_now or save_now:  # the only steps that wait for the device
                mean_loss, stopping = sync()
                if log_now:
                    log(step, mean_loss)
                if save_now or stopping:
                    checkpoint()
                if stopping:
                    if rank == 0:
                        print(f"stopped at step {step}; resume with: python train.py --out {config.out} --resume")
                    break
    bar.close()
    metrics.close()
    runtime.end_distributed(world)
    return out / runtime.CHECKPOINT


def resolve(given: dict, state: dict | None) -> TrainConfig:
    """The run's recipe: TrainConfig's defaults, under the model preset's recipe, under the config of the
    checkpoint being resumed, under the flags given."""
    saved = trained_config(state["config"]) if state else None
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
