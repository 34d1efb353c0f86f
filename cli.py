"""What train.py and sample.py share: one-line errors with exit status 2, device choice, autocast."""
import argparse
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag ends with one line on stderr rather than the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main: Callable[[], int | None]) -> None:
    """Call `main`; bad input (ValueError, a missing file) ends with one line and exit status 2."""
    try:
        sys.exit(main() or 0)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked but MPS is not available")
    return device


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA, where it halves memory and time; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def check_writable_dir(path: str) -> None:
    """Create `path` if needed and make sure we can write there, before any work is done."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder {path} ({e.strerror})") from None
