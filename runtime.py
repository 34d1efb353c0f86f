"""What a long training run needs that is not diffusion: torchrun, resuming, stop signals, the metrics log.

The plumbing train.py calls, so that a run can be killed, resumed bit-exactly on the CPU, spread over processes,
and watched, while train.py reads top to bottom as the method.
"""
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from cli import UsageError, pick_device
from models.checkpoint import CheckpointError, load_training_checkpoint, save_checkpoint, saved_model_config

CHECKPOINT = "checkpoint.pt"
Config = TypeVar("Config")


def resolve_config(defaults: Config, given: dict, saved: dict | None, resumable: set[str]) -> Config:
    """The defaults, overridden by the config of the checkpoint being resumed, overridden by the flags given.
    A resumed run may change only the `resumable` fields: anything else would silently train a different model."""
    if saved is not None:
        known = [f.name for f in fields(defaults)]
        if other := sorted(set(saved) ^ set(known)):
            raise CheckpointError(f"the checkpoint's config does not have this code's fields ({', '.join(other)}): "
                                  "another version of train.py wrote it")
        clashes = [f"--{k.replace('_', '-')} {given[k]} (checkpoint: {saved[k]})"
                   for k in given if k not in resumable and given[k] != saved[k]]
        if clashes:
            raise UsageError(f"the checkpoint was trained differently from what was asked: {', '.join(clashes)}; "
                                  "drop those flags to resume, or train into a new --out")
    return replace(defaults, **{**(saved or {}), **given})


def previous_state(out: Path, resume: bool) -> dict | None:
    """The checkpoint in `out` to resume, or the finished run there (so that running the same command twice is
    harmless); None for a new run. A run stopped part-way is never overwritten: resume it, or use another --out."""
    path = out / CHECKPOINT
    if resume:
        return load_training_checkpoint(path)
    if not path.exists():
        return None
    state = load_training_checkpoint(path)
    if state["step"] < state["config"]["steps"]:
        raise UsageError(f"{path} stopped at step {state['step']} of {state['config']['steps']}; pass --resume to "
                         "continue it, or choose another --out")
    return state


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun, one process per GPU (NCCL) or per CPU process (gloo)."""
    device = pick_device(device_name)
    if "RANK" not in os.environ:
        return 0, 1, device
    if device.type == "cuda":
        if device.index is not None:
            raise UsageError(f"--device {device_name}: under torchrun each process takes the GPU cuda:LOCAL_RANK; "
                             "pass --device cuda (or auto)")
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise UsageError(f"torchrun trains on cuda or cpu, not {device.type}")
    return dist.get_rank(), dist.get_world_size(), device


@contextmanager
def rank_zero_first(rank: int, world: int):
    """Rank 0 runs the block first (a download, a cache build) while the others wait at a barrier, then the
    others run it, finding its files done."""
    if world > 1 and rank:
        dist.barrier()
    yield
    if world > 1 and not rank:
        dist.barrier()


def end_distributed(world: int) -> None:
    if world > 1:
        dist.destroy_process_group()


def any_rank(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Each flag, true if it is true on any process (one all-reduce for all of them): decisions that end the
    loop must be taken by all ranks together, or the others wait forever in the next gradient all-reduce."""
    if world == 1:
        return flags
    flag_tensor = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(flag_tensor, op=dist.ReduceOp.MAX)
    return [bool(f) for f in flag_tensor.tolist()]


def gather_rng_states(device: torch.device, world: int) -> dict[str, list[torch.Tensor]]:
    """Every process's RNG states, rank by rank, so that each resumes its own stream (a collective)."""
    states = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return {k: [v] for k, v in states.items()}
    gathered = [None] * world
    dist.all_gather_object(gathered, states)
    return {k: [g[k] for g in gathered] for k in states}


def restore_rng_states(state: dict, rank: int, world: int, device: torch.device, seed: int) -> None:
    """Each rank takes back its own saved stream; with another number of processes than were saved, every rank
    restarts from (seed, rank, step) instead, since no saved stream is its own."""
    saved = state["rng"]
    if len(saved) != world:
        torch.manual_seed(seed + 1_000_003 * rank + state["step"])  # seeds CUDA too
        return
    torch.set_rng_state(saved[rank])
    cuda_saved = state.get("cuda_rng")
    if device.type == "cuda" and isinstance(cuda_saved, list) and len(cuda_saved) == world:
        torch.cuda.set_rng_state(cuda_saved[rank], device)


def resume(state: dict, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int,
           world: int, device: torch.device, seed: int) -> int:
    """Load a checkpoint's weights, EMA weights and optimizer state, and give each rank its RNG stream back
    (`restore_rng_states`); returns the step to continue from."""
    if saved_model_config(state) != model.config:
        raise CheckpointError("the checkpoint's model does not match this dataset and preset")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    restore_rng_states(state, rank, world, device, seed)
    return state["step"]


def save_training_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        step: int, rank: int, world: int, device: torch.device, **info) -> None:
    """What `resume` needs (weights, EMA, optimizer, step, every rank's RNG state) and `info`, written atomically
    by rank 0. A collective: every rank must call it."""
    rng_states = gather_rng_states(device, world)
    if rank == 0:
        save_checkpoint({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                         "step": step, **rng_states, "model_config": model.config_dict(), **info}, path)


def compile_or_eager(model: torch.nn.Module, example: tuple) -> torch.nn.Module:
    """torch.compile(model), compiled now by one forward and backward pass on `example` (the loop's first batch,
    so that the loop reuses these graphs); the model itself, after a one-line notice, where the compiler is
    missing or fails. The RNG is forked so that the trial pass leaves the run's random stream as it was."""
    try:
        compiled = torch.compile(model)
        with torch.random.fork_rng(devices=[]):
            compiled(*example).float().square().mean().backward()
    except Exception as e:  # a missing C++ compiler, an unsupported Python or platform, a graph it cannot trace
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"train.py: torch.compile failed ({type(e).__name__}: {first_line}); training in eager mode", file=sys.stderr)
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


class StepBatches:
    """Index batches whose order depends only on (seed, step): resuming at step s replays the same data. Epoch e
    is a permutation drawn from seed + e; each global batch is split across processes."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, rank: int, world: int):
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step
        self.rank, self.world, self.per_epoch = rank, world, size // batch_size

    def __iter__(self):
        step = self.start_step
        while True:
            epoch, i = divmod(step, self.per_epoch)
            perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            while i < self.per_epoch:
                batch = perm[i * self.batch_size:(i + 1) * self.batch_size]
                yield batch[self.rank::self.world].tolist()
                i, step = i + 1, step + 1


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can checkpoint and exit 0; a context manager,
    the handlers it replaced come back when training ends."""

    def __init__(self):
        self.requested, self.previous = False, {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.requested = True


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stops, keeping its last good checkpoint."""


def skip_if_not_finite(optimizer: torch.optim.Optimizer, not_finite: torch.Tensor) -> None:
    """Keep a step whose loss or gradient norm is not finite (`LossWindow.add`'s flag) from reaching the weights,
    without a device sync every step: the fused AdamW skips a step whose `found_inf` (the undocumented attribute
    GradScaler sets) is non-zero, and `LossWindow.read` stops the run at the end of the window. The unfused
    kernels (all mps has) refuse the flag: there only that stop keeps the checkpoint good."""
    if optimizer.defaults["fused"]:
        optimizer.found_inf = not_finite


class LossWindow:
    """The loss of the last few steps, kept on the device and read back once a window (every --log-every steps
    and at checkpoints), so the step itself never waits for the device. `add` returns the step's non-finite flag
    as a float tensor, for `skip_if_not_finite`."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1.0, device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, step: int) -> torch.Tensor:
        bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
        self.first_bad = torch.where(bad & (self.first_bad < 0), float(step), self.first_bad)
        self.loss_sum += loss.detach().float()
        self.steps += 1
        return bad.float()

    def read(self, step: int, stop: StopRequest, device: torch.device, world: int, out: Path) -> tuple[float, bool]:
        """(mean loss of the window, whether to stop); raises TrainingDiverged, on every rank at once."""
        mean_loss, bad_step = torch.stack([self.loss_sum / max(self.steps, 1), self.first_bad]).tolist()
        diverged, stopping = any_rank([bad_step >= 0, stop.requested], device, world)
        if diverged:
            raise TrainingDiverged(f"training diverged at step {int(bad_step) if bad_step >= 0 else step}; the loss or "
                                   f"its gradient is not finite. The last good checkpoint ({out / CHECKPOINT}) is "
                                   "kept: resume it with a lower --lr or --grad-clip")
        return mean_loss, stopping

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.steps = 0


class MetricsLog:
    """metrics.jsonl, one JSON object a line; reopened at `step`, it drops the rows past that step that a killed
    run wrote after its last checkpoint. Writes nothing on ranks other than 0.

    Every row carries `wall_s`: the run's wall time so far, from `started` (a perf_counter reading taken before
    the run's set-up), counting on from the last row kept when a run is resumed. Set-up, checkpoints, their
    sample grids and compiling all count: it is the time a user waits.
    """

    def __init__(self, path: Path, step: int, rank: int, started: float):
        self.file, self.tic, self.started, self.wall_s_before = None, time.perf_counter(), started, 0.0
        if rank:
            return
        rows = path.read_text().splitlines() if step and path.exists() else []
        kept = [r for r in rows if json.loads(r)["step"] <= step]
        self.wall_s_before = max((json.loads(r).get("wall_s", 0.0) for r in kept), default=0.0)
        self.file = open(path, "w")
        self.file.writelines(r + "\n" for r in kept)

    def write_loss(self, step: int, mean_loss: float, lr: float, images: int) -> None:
        """A row of the window's mean loss, the learning rate of its last step, and the speed since the last row."""
        seconds, self.tic = time.perf_counter() - self.tic, time.perf_counter()
        self.write({"step": step, "loss": mean_loss, "lr": lr, "images_per_sec": images / seconds})

    def write(self, row: dict) -> None:
        if self.file:
            wall_s = self.wall_s_before + time.perf_counter() - self.started
            self.file.write(json.dumps({**row, "wall_s": round(wall_s, 2)}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
