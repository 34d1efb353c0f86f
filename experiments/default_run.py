"""The default run's samples, measured against held-out shapes and shown beside the data they learned from.

    python train.py && python train.py --seed 1 --out runs/seed1        # two training seeds
    python -m experiments.default_run runs/default/checkpoint.pt runs/seed1/checkpoint.pt --page docs/results.md

Each row is one `python sample.py CHECKPOINT --evaluate --seed S [FLAGS]`, run as a user runs it.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from torchvision.utils import save_image

from cli import Parser, UsageError, run
from evaluation.preview import GRID_ROW, data_grid
from experiments.common import ROOT, groups, markdown, mean_std, publish, wall_time
from models.checkpoint import load_training_checkpoint

COLUMNS = {"class_accuracy": ("class accuracy", 3), "fd_ratio": ("feature distance ratio", 1),
           "spectrum_max": ("highest spectrum band", 2), "spectrum_min": ("lowest band", 2),
           "chroma_ratio": ("chroma", 2), "spread_ratio": ("brightness spread", 2), "w1": ("W1", 3)}
HEADER = ["training minutes", "sampling seeds", *(name for name, _ in COLUMNS.values())]  # what `columns` gives


def evaluate(checkpoint: str, seed: int, flags: str = "") -> dict:
    """One `sample.py --evaluate` run: its command, the run's training wall time and the quality it prints."""
    args = [checkpoint, "--evaluate", "--seed", str(seed), *flags.split()]
    out = Path(checkpoint).parent / f"evaluated_seed{seed}.png"
    result = subprocess.run([sys.executable, str(ROOT / "sample.py"), *args, "--out", str(out)], capture_output=True,
                            text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("quality ")]
    if result.returncode or not lines:
        raise UsageError(f"sample.py failed on {checkpoint}: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return {"checkpoint": checkpoint, "seed": seed, "flags": flags, "command": " ".join(["python sample.py", *args]),
            "wall_s": wall_time(checkpoint), **json.loads(lines[0].removeprefix("quality "))}


def columns(group: list[dict]) -> list:
    """A run's rows, one per sampling seed: its logged training minutes, the seeds, each number's mean ± std."""
    return [f"{group[0]['wall_s'] / 60:.1f}", len(group), *(mean_std([r[k] for r in group], digits)
                                                          for k, (_, digits) in COLUMNS.items())]


def table(results: dict) -> str:
    """A line per checkpoint and flag set: each number's mean ± std over the sampling seeds."""
    rows = results["rows"]
    lines = [[f"`{checkpoint}`", f"`{flags}`" if flags else "defaults", *columns(group)]
             for (flags, checkpoint), group in groups(rows, "flags", "checkpoint").items()]
    data = rows[0]["data_class_accuracy"]
    return markdown(["checkpoint", "sample.py flags", *HEADER], lines) + (
        f"\n\nHeld-out data against another held-out set: class accuracy {data:.3f}, every other number 1 (W1: 0).")


def grids(checkpoint: str, out: Path) -> None:
    """sample.py's default grid of the checkpoint (and what it printed), its training log, and the data's grid."""
    result = subprocess.run([sys.executable, str(ROOT / "sample.py"), checkpoint], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise UsageError(f"sample.py failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    shutil.copyfile(Path(checkpoint).parent / "grid.png", out / "samples.png")  # where sample.py writes by default
    shutil.copyfile(Path(checkpoint).parent / "metrics.jsonl", out / "train_metrics.jsonl")
    config = load_training_checkpoint(checkpoint)["config"]
    save_image((data_grid(config) + 1) / 2, out / "data.png", nrow=GRID_ROW)
    print(result.stdout.strip())


def main() -> int:
    p = Parser(description="Measure the default run with sample.py --evaluate over training and sampling seeds.")
    p.add_argument("checkpoints", nargs="*", help="train.py checkpoints of the shapes, one per training seed")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds 0 … N − 1 (default: 3)")
    p.add_argument("--settings", nargs="+", default=["", "--guidance 1"],
                   help="sample.py flag sets, one line each ('': its defaults; default: the defaults, and unguided)")
    p.add_argument("--out", default="docs/default_run", help="folder of results.json and the grids (default: %(default)s)")
    p.add_argument("--page", help="also put the table between this page's <!-- default_run:begin/end --> markers")
    p.add_argument("--report-only", action="store_true", help="write the table from OUT/results.json")
    a = p.parse_args()
    if a.seeds < 1 or not (a.checkpoints or a.report_only):
        p.error("give the checkpoints to measure (or --report-only), and --seeds of at least 1")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        results = json.loads((out / "results.json").read_text())
    else:
        results = {"rows": [evaluate(c, s, f) for f in a.settings for c in a.checkpoints for s in range(a.seeds)]}
        (out / "results.json").write_text(json.dumps(results, indent=1))
        grids(a.checkpoints[0], out)
    publish(a.page, {"default_run": table(results)})
    return 0


if __name__ == "__main__":
    run(main)
