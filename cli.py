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


PRECISIONS = ("auto", "fp32", "bf16")


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 where asked, or with `auto` on CUDA; None for full precision.

    On the CPU bf16 pays only with native bf16 instructions (avx512_bf16 or AMX), so `auto` keeps
    fp32 there and `bf16` is a choice the caller measures.
    """
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None


def autocast(device: torch.device, precision: str = "auto") -> AbstractContextManager:
    """Autocast to `amp_dtype(device, precision)`, or nothing in full precision."""
    dtype = amp_dtype(device, precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def check_writable_dir(path: str) -> None:
    """Create `path` if needed and make sure we can write there, before any work is done."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output folder {path} ({e.strerror})") from None
