import contextlib
import io
import os
import runpy
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.images import write_cifar10_files
from diffusion import ddim_update, predict_x0_eps

ROOT = Path(__file__).resolve().parents[1]
# 16 px, as the experiment's smoke preset: the suite then builds the yardstick of one image size only.
TINY = ["--model", "tiny", "--image-size", "16", "--num-images", "64", "--batch-size", "8", "--log-every", "1"]


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run train.py or sample.py as a user would."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def run_script_in_this_process(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run train.py or sample.py as `python script args` would, but in the test's own process: the same
    code from the same entry point, without the seconds a fresh interpreter spends importing torch.
    Only for runs that end early (bad input). What a script may set before its input is refused (the
    random state, the TF32 flags, the working directory) is restored; a warning is written to stderr, and
    an exception that escapes is written there with its traceback, as the interpreter would."""
    argv, cwd, tf32 = sys.argv, os.getcwd(), (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    run_argv = [str(ROOT / script), *args]
    stdout, stderr, returncode = io.StringIO(), io.StringIO(), 0
    sys.argv = run_argv
    os.chdir(ROOT)
    try:
        with torch.random.fork_rng(), warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            warnings.simplefilter("always")
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                returncode = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                returncode = 1
        stderr.write("".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught))
    finally:
        sys.argv = argv
        os.chdir(cwd)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return subprocess.CompletedProcess(run_argv, returncode, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny model trained for 4 steps: the folder holding its checkpoint.pt."""
    out = tmp_path_factory.mktemp("tiny_run")
    result = run_script("train.py", *TINY, "--steps", "4", "--ckpt-every", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> Path:
    """A tiny CIFAR-10 in its real on-disk format: pickled data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    n = 5 * per_batch
    return write_cifar10_files(root, rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist())


def write_image_folder(root: Path, classes=("cats", "dogs"), per_class: int = 3, size=(40, 30)) -> Path:
    """An ImageFolder: one subfolder of PNGs per class, not square, so cropping matters.

    Each image is grain around a brightness drawn uniformly from black to white, so that, like the
    embedded shapes, a folder of them shows the brightness leak.
    """
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            level = rng.uniform(0, 255)
            pixels = np.clip(level + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_celeba(root: Path, n: int = 4) -> Path:
    """A tiny CelebA in its real on-disk format: aligned JPEGs and the five annotation files."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / "img_align_celeba" / name)
    attributes = [f"attr_{k}" for k in range(40)]
    landmarks = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                 "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y"]
    files = {
        "list_eval_partition.txt": [f"{name} 0" for name in names],
        "identity_CelebA.txt": [f"{name} {i}" for i, name in enumerate(names)],
        "list_bbox_celeba.txt": [str(n), "image_id x_1 y_1 width height"] + [f"{name} 95 71 226 313" for name in names],
        "list_landmarks_align_celeba.txt": [str(n), " ".join(landmarks)] + [f"{name} " + " ".join(["70"] * 10) for name in names],
        "list_attr_celeba.txt": [str(n), " ".join(attributes)] + [f"{name} " + " ".join(["-1", "1"] * 20) for name in names],
    }
    for filename, lines in files.items():
        (folder / filename).write_text("\n".join(lines) + "\n")
    return folder


def ddim_step(x_t: torch.Tensor, model_output: torch.Tensor, alpha_bar_t, alpha_bar_prev, prediction_type: str,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step by hand from a network's raw output in its parameterisation, as the samplers take it."""
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    x0, eps = predict_x0_eps(x_t, model_output, alpha_bar_t, prediction_type)
    return ddim_update(x0, eps, alpha_bar_t, alpha_bar_prev, eta, noise)
