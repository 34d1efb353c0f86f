"""How the default run's samples improve with training time: one run, continued, scored at each point.

    python -m experiments.training_curve --out runs/curve --seeds 3

Trains `python train.py --out OUT/step_N --steps N --lr-schedule constant --ema-decay 0.999` for the first N
of --steps and each later point as a copy of the point before, resumed to N (resuming is bit-exact, so every
point is the same run read at N steps); scores each as experiments.default_run does (`sample.py --evaluate`, its defaults) at each sampling
seed. Writes DOCS/curve.json (a point scored before keeps its rows) and the figure DOCS/curve.png.
"""
import json
import sys
from pathlib import Path

from cli import Parser, run
from experiments.common import CONSTANT_RATE_EMA, continue_run, pyplot, save, train
from experiments.default_run import evaluate
from train_config import TrainConfig

BATCH = TrainConfig.batch_size  # train.py's default, which every point keeps


def plot(results: dict, path: Path) -> None:
    """Class accuracy, the feature distance and the highest and lowest spectrum bands against the images seen."""
    plt = pyplot()
    if plt is None:
        return
    rows = results["rows"]
    images = [r["steps"] * BATCH / 1000 for r in rows]
    panels = [(["class_accuracy"], "class accuracy", rows[0]["data_class_accuracy"]),
              (["fd_ratio"], "feature distance ratio", 1.0),
              (["spectrum_max", "spectrum_min"], "spectrum bands: max (o), min (v)", 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (keys, title, data) in zip(axes, panels):
        for key, marker in zip(keys, "ov"):
            ax.plot(images, [r[key] for r in rows], marker, color="C0")
        ax.axhline(data, color="grey", linestyle="--", linewidth=1)
        ax.axvline(TrainConfig.steps * BATCH / 1000, color="C3", linewidth=1)  # train.py's default length
        ax.set_xscale("log")
        if keys != ["class_accuracy"]:  # ratios: a factor off reads the same above and below
            ax.set_yscale("log")
        ax.set_xlabel("thousands of training images (red: python train.py)")
        ax.set_title(f"{title}; dashed: data", fontsize=9)
    save(fig, path)


def main() -> int:
    p = Parser(description="Score one train.py run, continued, at several points of its training.")
    p.add_argument("--out", default="runs/curve", help="one folder per point (default: %(default)s)")
    p.add_argument("--steps", type=int, nargs="+", default=[675, 1350, 2700, 5400, 10800, 21600, 32400, 43200],
                   help="the points, in train.py steps of 64 images (default: 675 … 43,200)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds 0 … N − 1 per point (default: 3)")
    p.add_argument("--docs", default="docs/default_run", help="folder of curve.json and curve.png (default: %(default)s)")
    a = p.parse_args()
    if sorted(set(a.steps)) != a.steps or a.steps[0] < 1 or a.seeds < 1:
        p.error("--steps must be increasing positive step counts, and --seeds at least 1")
    out, docs = Path(a.out), Path(a.docs)
    out.mkdir(parents=True, exist_ok=True)
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "curve.json"
    scored = {(r["steps"], r["seed"]): r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}
    command = " ".join(["python -m experiments.training_curve", *sys.argv[1:]])
    for before, steps in zip([None] + a.steps[:-1], a.steps):
        run_dir = out / f"step_{steps:06d}"
        if before is None:
            # at a constant rate, so that each point goes on from the one before (a decay to 0 ends a run)
            train(run_dir, {"steps": steps, **CONSTANT_RATE_EMA})
        else:
            continue_run(out / f"step_{before:06d}", run_dir, steps)
        for seed in range(a.seeds):
            if (steps, seed) not in scored:
                scored[steps, seed] = {"steps": steps, **evaluate(str(run_dir / "checkpoint.pt"), seed)}
        path.write_text(json.dumps({"command": command, "rows": [scored[k] for k in sorted(scored)]}, indent=1))
    plot(json.loads(path.read_text()), docs / "curve.png")
    print(f"wrote {path} and {docs / 'curve.png'}")
    return 0


if __name__ == "__main__":
    run(main)
