"""What the main job makes, beside what it learns from: sample.py's default grid and the data's, laid out alike.

    python -m experiments.grids runs/default/checkpoint.pt --out docs/main_job

Writes OUT/samples.png, the grid that `python sample.py CHECKPOINT` writes (its defaults: a row per class,
guided), and OUT/data.png: images of the data the checkpoint was trained on, one class a row in the
same order; and what sample.py printed, in OUT/sample_output.txt.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

from cli import Parser, UsageError, run
from data import load_dataset
from evaluation.preview import GRID_ROW, grid_labels
from models.checkpoint import load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 64  # sample.py's default grid


def data_grid(config: dict, num_images: int = NUM_IMAGES) -> torch.Tensor:
    """`num_images` images of the run's training data, class by class as sample.py's grid draws them."""
    dataset = load_dataset(config["dataset"], config["data_dir"], config["image_size"], num_images=config["num_images"],
                           seed=config["seed"])
    wanted = grid_labels(num_images, len(dataset.classes)).tolist()
    by_class: dict[int, list[int]] = {}
    for i in range(len(dataset)):
        by_class.setdefault(int(dataset[i][1]), []).append(i)
        if all(len(by_class.get(c, [])) >= wanted.count(c) for c in set(wanted)):
            break
    else:
        raise UsageError("the dataset has too few images of some class for the grid")
    taken = {c: iter(indices) for c, indices in by_class.items()}
    return torch.stack([dataset[next(taken[c])][0] for c in wanted])


def main() -> int:
    p = Parser(description="The main job's default sample grid beside a grid of the data it learns from.")
    p.add_argument("checkpoint", help="a train.py checkpoint of a class-conditional run")
    p.add_argument("--out", default="docs/main_job", help="folder for samples.png and data.png (default: %(default)s)")
    a = p.parse_args()
    config = load_training_checkpoint(a.checkpoint)["config"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, str(ROOT / "sample.py"), a.checkpoint], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise UsageError(f"sample.py failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    shutil.copyfile(Path(a.checkpoint).parent / "grid.png", out / "samples.png")  # where sample.py writes by default
    save_image((data_grid(config) + 1) / 2, out / "data.png", nrow=GRID_ROW)
    (out / "sample_output.txt").write_text(result.stdout)
    print(result.stdout.strip())
    print(f"wrote {out / 'samples.png'}, {out / 'data.png'} and sample.py's output, {out / 'sample_output.txt'}")
    return 0


if __name__ == "__main__":
    run(main)
