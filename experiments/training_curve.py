"""How the default run's samples improve with training time: the default recipe at several lengths, scored at each.

    python -m experiments.training_curve --out runs/curve --seeds 3 --page docs/results.md

`python train.py --steps N` keeps a constant rate up to step 0.8·N, then decays it to 0; so each point copies one run at
a constant rate (the trunk) at 0.8·N and resumes it with the decay, bit for bit `python train.py --steps N`. Its minutes
are its log's (each trunk piece adds its set-up and closing checkpoint); it is scored as experiments.default_run does.
"""
import json
from pathlib import Path

from cli import Parser, run
from experiments.common import command, continue_run, groups, markdown, publish, pyplot, save, train
from experiments.default_run import HEADER, columns, evaluate
from train_config import TrainConfig

TARGETS = {"fd_ratio": 8.0, "spectrum_max": 2.0}  # what the default run is asked to reach (docs/results.md)


def stable_steps(steps: int) -> int:
    """The steps of `python train.py --steps N` before its decay begins: the trunk's share of a point."""
    return int((1 - TrainConfig.decay_fraction) * steps)


def minutes(results: dict) -> list[float]:
    """Each row's training minutes: its run's logged wall time, or for the earlier recipe's rows, whose logs did not
    record it, their steps at the earlier default run's measured seconds a step."""
    if "seconds_per_step" in results:
        return [r["steps"] * results["seconds_per_step"] / 60 for r in results["rows"]]
    return [r["wall_s"] / 60 for r in results["rows"]]


def table(results: dict) -> str:
    """A line per point: its steps, its minutes and each number's mean ± std over the sampling seeds."""
    lines = [[f"{steps:,}", *columns(group)] for (steps,), group in groups(results["rows"], "steps").items()]
    return markdown(["steps", *HEADER], lines)


def plot(plt, results: dict, earlier: dict | None, path: Path) -> None:
    """Class accuracy, the feature distance and the highest and lowest spectrum bands against training minutes."""
    rows = results["rows"]
    panels = [(["class_accuracy"], "class accuracy", rows[0]["data_class_accuracy"]),
              (["fd_ratio"], "feature distance ratio", 1.0),
              (["spectrum_max", "spectrum_min"], "spectrum bands: max (o), min (v)", 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (keys, title, data) in zip(axes, panels):
        for key, marker in zip(keys, "ov"):
            if earlier:
                ax.plot(minutes(earlier), [r[key] for r in earlier["rows"]], marker, color="grey", fillstyle="none",
                        label="earlier recipe")
            ax.plot(minutes(results), [r[key] for r in rows], marker, color="C0", label="default recipe")
            if key in TARGETS:
                ax.axhline(TARGETS[key], color="C2", linestyle=":", linewidth=1)
        ax.axhline(data, color="grey", linestyle="--", linewidth=1)
        ax.axvline(10, color="C3", linewidth=1)
        # ratios on a log scale: a factor off reads the same above and below
        ax.set(xscale="log", yscale="linear" if keys == ["class_accuracy"] else "log")
        ax.set_xlabel("minutes of training (red: 10); dashed: data, dotted: target", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    save(fig, path)


def main() -> int:
    p = Parser(description="Score the default recipe at several run lengths, branched off one run at a constant rate.")
    p.add_argument("--out", default="runs/curve", help="the trunk's and the points' folders (default: %(default)s)")
    p.add_argument("--steps", type=int, nargs="+", default=[375, 750, 1500, 3000, 6000],
                   help="the points, in train.py steps of 64 images (default: 375 … 6,000, 2 … 34 min on 2 cores)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds 0 … N − 1 per point (default: 3)")
    p.add_argument("--docs", default="docs/default_run", help="folder of curve.json and curve.png (default: %(default)s)")
    p.add_argument("--page", help="also put the table between this page's <!-- curve:begin/end --> markers")
    a = p.parse_args()
    if sorted(set(a.steps)) != a.steps or a.steps[0] < 2 or a.seeds < 1:
        p.error("--steps must be increasing step counts of at least 2, and --seeds at least 1")
    out, docs = Path(a.out), Path(a.docs)
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "curve.json"
    scored = {(r["steps"], r["seed"]): r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}
    before = None
    for steps in a.steps:
        trunk, point = out / f"trunk_{stable_steps(steps):06d}", out / f"step_{steps:06d}"
        if before is None:
            train(trunk, {"steps": stable_steps(steps), "lr_schedule": "constant"})
        else:
            continue_run(before, trunk, stable_steps(steps))
        continue_run(trunk, point, steps, lr_schedule="wsd")
        before = trunk
        for seed in range(a.seeds):
            if (steps, seed) not in scored:
                scored[steps, seed] = {"steps": steps, **evaluate(str(point / "checkpoint.pt"), seed)}
        path.write_text(json.dumps({"command": command(), "rows": [scored[k] for k in sorted(scored)]}, indent=1))
    results = json.loads(path.read_text())
    earlier = docs / "curve_constant.json"
    if plt := pyplot():
        plot(plt, results, json.loads(earlier.read_text()) if earlier.exists() else None, docs / "curve.png")
    publish(a.page, {"curve": table(results)})
    return 0


if __name__ == "__main__":
    run(main)
