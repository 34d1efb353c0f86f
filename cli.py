"""What the scripts share: bad input as one line and exit status 2, flags from a dataclass, device and precision."""
import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, field, fields
from typing import Any

import torch

from models.checkpoint import CheckpointError


class UsageError(ValueError):
    """Bad input from the user: a flag, a path, a data folder. `run` prints it as one line and exits 2 (as it
    does a CheckpointError: a bad checkpoint file is bad input too). Anything else is a bug and keeps its traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag ends with one line on stderr rather than the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main: Callable[[], int | None]) -> None:
    """Call `main`; bad input (UsageError, CheckpointError) ends with one line on stderr and exit status 2."""
    try:
        sys.exit(main() or 0)
    except (UsageError, CheckpointError) as e:
        print(f"{os.path.basename(sys.argv[0])}: error: {e}", file=sys.stderr)
        sys.exit(2)


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        mps = torch.backends.mps.is_available()
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps was asked but MPS is not available")
    return device


PRECISIONS = ("auto", "fp32", "bf16")
# The help of --device and --precision, which train.py and sample.py both take: written once.
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
PRECISION_HELP = "bf16 autocast of the network; auto: bf16 on CUDA and on CPUs with native bf16 instructions, else fp32"


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (avx512_bf16 or AMX tiles), which make bf16 autocast pay:
    without them bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 where asked, or with `auto` where the hardware runs it natively (CUDA, and CPUs with `native_bf16`);
    None for full precision. bf16 halves the bytes each tensor moves and runs on the matrix units (tensor cores,
    AMX), and it keeps fp32's exponent range, so unlike fp16 it needs no loss scaling."""
    native = device.type == "cuda" or (device.type == "cpu" and native_bf16())
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and native) else None


def check_writable_dir(path: str) -> None:
    """Create `path` if needed and make sure we can write there, before any work is done."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"cannot write to output folder {path} ({e.strerror})") from None


def flag(default: Any, help: str, **argparse_options: Any) -> Any:
    """A dataclass field that is also a command-line flag (see `add_flags`): one place for a setting's default,
    its help and its valid values. MISSING as the default makes it a positional argument."""
    return field(default=default, metadata={"help": help, **argparse_options})


def add_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One --flag per field of a dataclass made with `flag`, or a positional argument for a field without a
    default. Every default is None, so that the parsed namespace tells which flags were given; a bool field
    becomes --name / --no-name; a trailing underscore (class_, for a Python keyword) is not part of the flag's name."""
    for f in fields(config_class):
        options = dict(f.metadata)
        text = options.pop("help")
        if f.default is MISSING:
            parser.add_argument(f.name, help=text, **options)
            continue
        if isinstance(f.default, bool):
            options.setdefault("action", argparse.BooleanOptionalAction)
        elif "action" not in options:
            options.setdefault("type", type(f.default))
        if "(default" not in text:
            text += f" (default: {f.default})"
        name = f.name.rstrip("_")
        if name != f.name:
            options.setdefault("metavar", name.upper())
        parser.add_argument("--" + name.replace("_", "-"), dest=f.name, default=None, help=text, **options)
