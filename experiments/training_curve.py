"""How long clean takes: one train.py run, continued, scored by sample.py's yardstick at each point.

    python -m experiments.training_curve --out runs/curve --page docs/main_job.md

Trains `python train.py --out OUT/step_N --steps N` for the first N of --steps, and each later point as
a copy of the one before resumed to N (resuming is bit-exact, so every point is the same run, read at N
steps). Each point is scored as `experiments.main_job` scores the main job (`sample.py --evaluate`, the
defaults: guided, a row per class) at each sampling seed. Minutes are the slow machine kind's: train.py's
images at 290 images/s (fp32 on 2 AMD EPYC cores), so 2,700 steps of 64 are its 10 minutes (this
machine's own minutes depend on what runs beside it; `train_seconds` reads them from a run's log). Writes
--out/curve.json, with --page the table between the page's `<!-- curve:begin -->` and `<!-- curve:end -->`
markers, with --page and --readme the sentence of when each target is met (`when_met`) between their
`<!-- curve_summary:… -->` markers, and curve.png beside the JSON (with matplotlib).
"""
import json
import math
import sys
from pathlib import Path

from cli import Parser, run
from experiments.common import copy_run, train_run
from experiments.figures import pyplot, save
from experiments.main_job import TARGETS, evaluate, misses
from experiments.summary import markdown, replace_between
from train_config import TrainConfig

# Each target of experiments.main_job as a reader names it, and the numbers a row reads it by.
TARGET_NAMES = {"spectrum": ("every spectrum band within [0.7, 1.4]", {"lowest band": "spectrum_min",
                                                                        "highest": "spectrum_max"}),
                "chroma_ratio": ("chroma ratio within [0.8, 1.25]", {"": "chroma_ratio"}),
                "spread_ratio": ("brightness spread ≥ 0.9", {"": "spread_ratio"}), "w1": ("W1 ≤ 0.03", {"": "w1"}),
                "fd_ratio": ("feature distance ratio ≤ 5", {"": "fd_ratio"}),
                "class_accuracy_gap": ("class accuracy at least held-out data's minus 0.05", {})}
# Targets that training shrinks toward their upper bound: the number an extrapolation follows, its name, its bound.
SHRINKING = {"fd_ratio": ("fd_ratio", "the seeds' mean", TARGETS["fd_ratio"][1]),
             "spectrum": ("spectrum_max", "the seeds' mean highest band", TARGETS["spectrum"][1])}
SLOW_KIND_IMAGES_PER_SEC = 290  # train.py in fp32 on the slow machine kind (2 AMD EPYC cores)
BATCH = TrainConfig.batch_size  # train.py's default, which every point keeps


def train_seconds(run_dir: Path, log: str = "metrics.jsonl") -> float:
    """The seconds train.py spent on the steps it logged: each logged window's images over its speed."""
    rows = [json.loads(line) for line in (run_dir / log).read_text().splitlines()]
    logged = [r for r in rows if "images_per_sec" in r]
    return sum((r["step"] - before["step"]) * BATCH / r["images_per_sec"]
               for before, r in zip([{"step": 0}] + logged, logged))


def point(out: Path, steps: int, before: int | None) -> Path:
    """OUT/step_N: the run at N steps, trained from scratch or copied from the point before and resumed."""
    run_dir = out / f"step_{steps:06d}"
    if before is not None and not run_dir.exists():
        copy_run(out / f"step_{before:06d}", run_dir)
    train_run(run_dir, {"steps": steps} if before is None else {}, steps)  # train.py's defaults: the main job
    return run_dir


def table(results: dict) -> str:
    """One line per point and sampling seed: its budget and the numbers the targets read."""
    lines = [[f"{r['steps']:,}", f"{r['steps'] * BATCH:,}", f"{r['minutes_slow_kind']:.1f}",
              f"{r['seed']}", f"{r['class_accuracy']:.3f} ({r['data_class_accuracy']:.3f})", f"{r['fd_ratio']:.1f}",
              f"{r['spectrum_max']:.2f}", f"{r['chroma_ratio']:.2f}", f"{r['spread_ratio']:.2f}", f"{r['w1']:.3f}",
              ", ".join(misses(r)) or "none"] for r in results["rows"]]
    return markdown(["steps", "images seen", "minutes (slow kind)", "sampling seed",
                     "class accuracy (held-out data)", "FD ratio (≤ 5)", "highest spectrum band (≤ 1.4)",
                     "chroma ratio ([0.8, 1.25])", "spread (≥ 0.9)", "W1 (≤ 0.03)", "targets missed"], lines)


def when_met(results: dict) -> str:
    """For each target, the training time from which every sampling seed meets it, or how far it is at the end.

    A target not met at the last point and listed in SHRINKING is also carried on along the power law through
    the means of the last two points, minutes = m₂·(bound / v₂)^(ln(m₂/m₁) / ln(v₂/v₁)): an extrapolation,
    which the sentence says it is.
    """
    points = sorted({r["steps"] for r in results["rows"]})
    rows = {s: [r for r in results["rows"] if r["steps"] == s] for s in points}
    minutes = {s: rows[s][0]["minutes_slow_kind"] for s in points}
    last = rows[points[-1]]

    def at(steps: list[int]) -> str:
        return ", ".join(f"{minutes[s]:.1f}" for s in steps)

    parts = []
    for key, (name, values) in TARGET_NAMES.items():
        met = [all(key not in misses(r) for r in rows[s]) for s in points]
        if met[-1]:
            first = next(i for i in range(len(points)) if all(met[i:]))
            text = (f"{name} from {minutes[points[first]]:.1f} minutes on" if first < len(points) - 1
                    else f"{name} at {minutes[points[first]]:.1f} minutes, the last point")
            if any(met[:first]):
                text += f" (also met at {at([s for s, m in zip(points[:first], met) if m])} minutes)"
            parts.append(text)
            continue
        text = (f"{name} not by {minutes[points[-1]]:.1f} minutes "
                f"({sum(key not in misses(r) for r in last)} of {len(last)} sampling seeds there")
        digits = 3 if key == "w1" else 2
        for label, value in values.items():
            low, high = min(r[value] for r in last), max(r[value] for r in last)
            text += f", {label + ' ' if label else ''}{low:.{digits}f}-{high:.{digits}f}"
        if any(met):
            text += f"; met on every seed at {at([s for s, m in zip(points, met) if m])} minutes"
        # only a miss from above is carried on: a band below 0.7 is not what the highest band's fall would mend
        from_above = key != "spectrum" or all(r["spectrum_min"] >= TARGETS["spectrum"][0] for r in last)
        if key in SHRINKING and len(points) > 1 and from_above:
            number, label, bound = SHRINKING[key]
            (m1, v1), (m2, v2) = [(minutes[s], sum(r[number] for r in rows[s]) / len(rows[s])) for s in points[-2:]]
            if bound < v2 < v1:
                reached = m2 * (bound / v2) ** (math.log(m2 / m1) / math.log(v2 / v1))
                text += (f"; on the power law through its last two points, an extrapolation, {label} would reach "
                         f"{bound:g} at about {reached:.0f} minutes")
        parts.append(text + ")")
    return f"Over the curve's points (minutes of the slow machine kind), on every sampling seed: {'; '.join(parts)}."


def plot(results: dict, path: Path) -> None:
    """Class accuracy, feature distance and the highest and lowest spectrum bands against the slow kind's minutes."""
    plt = pyplot()
    if plt is None:
        return
    rows = results["rows"]
    minutes = [r["minutes_slow_kind"] for r in rows]
    panels = [(["class_accuracy"], "class accuracy", [rows[0]["data_class_accuracy"] - 0.05]),
              (["fd_ratio"], "feature distance ratio", [TARGETS["fd_ratio"][1]]),
              (["spectrum_max", "spectrum_min"], "spectrum: highest (o), lowest (v) band", list(TARGETS["spectrum"]))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (keys, title, targets) in zip(axes, panels):
        for key, marker in zip(keys, "ov"):
            ax.plot(minutes, [r[key] for r in rows], marker, color="C0")
        for target in targets:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        if keys != ["class_accuracy"]:  # ratios: a factor off reads the same above and below
            ax.set_yscale("log")
        ax.set_xlabel("minutes of training (slow machine kind)")
        ax.set_title(f"{title} (dashed: target)", fontsize=9)
    save(fig, path)


def main() -> int:
    p = Parser(description="Score one train.py run, continued, at several points: how long clean takes.")
    p.add_argument("--out", default="runs/curve", help="one folder per point, and curve.json (default: %(default)s)")
    p.add_argument("--steps", type=int, nargs="+", default=[675, 1350, 2700, 5400, 10800, 21600, 32400, 43200],
                   help="the points, in train.py steps of 64 (default: 2.5, 5, 10, 20, 40, 80, 120 and 160 minutes "
                        "of the slow kind)")
    p.add_argument("--seeds", type=int, default=1, help="sampling seeds 0 … N − 1 per point (default: 1)")
    p.add_argument("--page", default="", help="also put the table between this page's <!-- curve:begin --> and "
                                              "<!-- curve:end --> markers, and the sentence of when each target is met "
                                              "between its <!-- curve_summary:begin/end --> markers")
    p.add_argument("--readme", default="", help="also put the sentence of when each target is met between this "
                                                "page's <!-- curve_summary:begin/end --> markers")
    a = p.parse_args()
    if sorted(set(a.steps)) != a.steps or a.steps[0] < 1 or a.seeds < 1:
        p.error("--steps must be increasing positive step counts, and --seeds at least 1")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # a point scored before keeps its numbers: a longer curve trains and scores only its new points
    scored = {(r["steps"], r["seed"]): r for r in json.loads((out / "curve.json").read_text())["rows"]} \
        if (out / "curve.json").exists() else {}
    rows = []
    for before, steps in zip([None] + a.steps[:-1], a.steps):
        run_dir = point(out, steps, before)
        minutes = {"steps": steps, "minutes_slow_kind": steps * BATCH / SLOW_KIND_IMAGES_PER_SEC / 60}
        rows += [scored.get((steps, seed)) or {**minutes, **evaluate(str(run_dir / "checkpoint.pt"), seed, "")}
                 for seed in range(a.seeds)]
    results = {"command": " ".join(["python -m experiments.training_curve", *sys.argv[1:]]), "rows": rows}
    (out / "curve.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "curve.png")
    rows_table, sentence = table(results), when_met(results)
    if a.page:
        replace_between(Path(a.page), "<!-- curve:begin -->", "<!-- curve:end -->", rows_table)
    for page in filter(None, [a.page, a.readme]):
        replace_between(Path(page), "<!-- curve_summary:begin -->", "<!-- curve_summary:end -->", sentence)
    print(rows_table)
    print(sentence)
    return 0


if __name__ == "__main__":
    run(main)
