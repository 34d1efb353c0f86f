"""Checkpoints: written atomically, read without running any code.

A checkpoint is a plain dict of tensors and Python values, saved with torch.save and loaded
with `weights_only=True`, so a file that smuggles in a pickled object is refused.
"""
import os
import pickle
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import torch

from diffusion import FlowAsV, Schedule, check_pairing, flow_schedule, make_schedule

from .unet import UNet, UNetConfig

FORMAT = "zero-snr-diffusion/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, foreign or incompatible: bad input, which the
    scripts print as one line (`cli.run`)."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync it, then rename over `path`: the rename is atomic, so a kill
    at any moment leaves either the old or the new checkpoint, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # one fixed name: a write killed halfway is overwritten by the next
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at `path`, on the CPU; CheckpointError with one clear line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} holds objects that a safe load refuses ({first_line[:160]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by this project's train.py")
    return state


def load_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint that train.py wrote: weights plus the training and model configs."""
    state = load_checkpoint(path)
    if "config" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} has no training config; it was not written by train.py")
    if missing := [key for key in ("ema", "classes", "data_brightness") if key not in state]:
        raise CheckpointError(f"{path} has no {', '.join(missing)}: another version of train.py wrote it")
    try:
        check_pairing(state["config"]["prediction"], state["config"]["zero_snr"])
        checkpoint_schedule(state)
    except KeyError as e:
        raise CheckpointError(f"{path} has no {e} in its training config: another version of train.py wrote it") from None
    except ValueError as e:
        raise CheckpointError(f"{path} cannot be sampled: {e}") from None
    return state


def saved_model_config(state: dict) -> UNetConfig:
    """A train.py checkpoint's UNet config, whose fields must be exactly UNetConfig's: a checkpoint that
    another version of this code wrote is refused in one line rather than read as another model."""
    saved, known = state["model_config"], [f.name for f in fields(UNetConfig)]
    unknown, missing = sorted(set(saved) - set(known)), [name for name in known if name not in saved]
    if unknown or missing:
        names = ", ".join([*(f"{k} (unknown here)" for k in unknown), *(f"{k} (missing)" for k in missing)])
        raise CheckpointError(f"the checkpoint's model config is not this code's UNet: {names}; another version "
                              "of train.py wrote it")
    return UNetConfig(**saved)


def load_ema_model(state: dict, path: str | Path) -> UNet | FlowAsV:
    """The EMA weights of a train.py checkpoint, the ones to sample with, in eval mode, with the detail skip
    (where it has one) rebuilt from the checkpoint's own schedule. A flow model comes as a v-predicting
    model of its VP path (`FlowAsV`), which every sampler takes."""
    schedule, config = checkpoint_schedule(state), saved_model_config(state)
    try:
        model = UNet(config, schedule.alpha_bar)
        model.load_state_dict(state["ema"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not hold a model this code can build ({type(e).__name__})") from None
    model = model.eval().requires_grad_(False)
    return FlowAsV(model, schedule) if state["config"]["objective"] == "flow" else model


def checkpoint_schedule(state: dict) -> Schedule:
    """The noise schedule a train.py checkpoint was trained with (sampling must use the same)."""
    config = state["config"]
    if config["objective"] == "flow":
        return flow_schedule(config["timesteps"])
    return make_schedule(config["schedule"], config["timesteps"], zero_snr=config["zero_snr"])


def load_weights(path: str | Path, model: UNet, ema: UNet) -> None:
    """Copy another checkpoint's model and EMA weights into `model` and `ema`, for fine-tuning (the paper's §4
    fine-tunes Stable Diffusion to zero SNR and v-prediction). Only what the weights do not fix may differ: the
    schedule, the prediction, the offset noise; another UNet preset, image size or class count is refused."""
    source = load_training_checkpoint(path)
    theirs, ours = asdict(saved_model_config(source)), model.config_dict()
    differences = [f"{key} {theirs[key]} (this run: {ours[key]})" for key in ours if theirs[key] != ours[key]]
    if differences:
        raise CheckpointError(f"--init-from {path} holds another model: {', '.join(differences)}; use its --model, "
                              "--image-size and dataset")
    model.load_state_dict(source["model"])
    ema.load_state_dict(source["ema"])
