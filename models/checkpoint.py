"""Checkpoints: written atomically, read without running any code.

A checkpoint is a plain dict of tensors and Python values, saved with torch.save and loaded
with `weights_only=True`, so a file that smuggles in a pickled object is refused.
"""
import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from diffusion import FlowAsV, Schedule, check_pairing, flow_schedule, make_schedule

from .unet import UNet, UNetConfig

FORMAT = "zero-snr-diffusion/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, foreign or incompatible: bad input, which the
    scripts print as one line (`cli.run`)."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync it, then rename over `path`.

    The rename is atomic, so a kill at any moment leaves either the old or the new
    checkpoint, never half of one.
    """
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
    try:
        check_pairing(state["config"]["prediction"], state["config"]["zero_snr"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be sampled: {e}") from None
    return state


def saved_model_config(state: dict) -> dict:
    """A train.py checkpoint's UNet config as this code reads it: a field added since the checkpoint was written
    takes its default, which is what the model was before the field existed."""
    try:
        return asdict(UNetConfig(**state["model_config"]))
    except TypeError as e:
        raise CheckpointError(f"the checkpoint's model config is not one this code can build ({e})") from None


def load_ema_model(state: dict, path: str | Path) -> UNet | FlowAsV:
    """The EMA weights of a train.py checkpoint, the ones to sample with, in eval mode. A flow model
    comes as a v-predicting model of its VP path (`FlowAsV`), which every sampler takes."""
    try:
        model = UNet(UNetConfig(**state["model_config"]), checkpoint_schedule(state).alpha_bar)
        model.load_state_dict(state["ema"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not hold a model this code can build ({type(e).__name__})") from None
    model = model.eval().requires_grad_(False)
    return FlowAsV(model, checkpoint_schedule(state)) if state["config"].get("objective") == "flow" else model


def checkpoint_schedule(state: dict) -> Schedule:
    """The noise schedule a train.py checkpoint was trained with (sampling must use the same)."""
    config = state["config"]
    if config.get("objective") == "flow":
        return flow_schedule(config["timesteps"])
    return make_schedule(config["schedule"], config["timesteps"], zero_snr=config["zero_snr"])


def load_weights(path: str | Path, model: UNet, ema: UNet) -> None:
    """Copy another checkpoint's model and EMA weights into `model` and `ema`, for fine-tuning (the
    paper's §4 fine-tunes Stable Diffusion to zero SNR and v-prediction). Only what the weights do
    not fix may differ: the schedule, the prediction, the offset noise. Another UNet preset, image
    size or class count is refused."""
    source = load_training_checkpoint(path)
    theirs, ours = saved_model_config(source), model.config_dict()
    differences = [f"{key} {theirs.get(key)} (this run: {ours[key]})" for key in ours if theirs.get(key) != ours[key]]
    if differences:
        raise CheckpointError(f"--init-from {path} holds another model: {', '.join(differences)}; use its --model, "
                              "--image-size and dataset")
    model.load_state_dict(source["model"])
    ema.load_state_dict(source["ema"])
