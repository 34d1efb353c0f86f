"""The short-run recipe: train.py's flags (optimiser, schedule, model), tried at 2,200 steps of 64 images.

    python -m experiments.recipe --page docs/design.md          # every arm below; about 14 min an arm and training seed

Each arm is trained at 2 seeds (`python train.py FLAGS --seed S`) and scored by `python sample.py CHECKPOINT --evaluate
--seed K` at 3 sampling seeds, as a user runs them; OUT/results.json keeps each row once measured (a rerun skips it).
"""
import json
from pathlib import Path

from cli import Parser, run
from experiments.common import ROOT, groups, markdown, publish, train, train_flags
from experiments.default_run import HEADER, columns, evaluate

STEPS = 2_200  # the arms' length (unless an arm sets its own), kept so that a new arm is measured like its table's rows
# train.py's settings over its defaults, in the order tried (the first keep β2 0.999: BEFORE). An arm whose code
# lost and is gone keeps only its rows in the results file, which the tables read.
BEFORE = {"adam_beta2": 0.999}
ARMS = {
    "constant rate": {"lr_schedule": "constant", "ema_decay": 0.999, **BEFORE},
    "linear decay over the last 20 %": {"lr_schedule": "wsd", "decay_fraction": 0.2, "ema_decay": 0.999, **BEFORE},
    "linear decay over the last 30 %": {"lr_schedule": "wsd", "decay_fraction": 0.3, "ema_decay": 0.999, **BEFORE},
    "raw weights": {"lr_schedule": "wsd", "decay_fraction": 0.2, "ema_decay": 0.0, **BEFORE},
    "Adam β2 0.99": {"adam_beta2": 0.99}, "Adam β2 0.95": {"adam_beta2": 0.95},
    "the default recipe": {},  # what the later arms are measured against
    "learning rate 4e-3": {"lr": 4e-3, **BEFORE}, "learning rate 1e-3": {"lr": 1e-3},
    "learning rate 4e-3 at β2 0.95": {"lr": 4e-3}, "batch 32, twice the steps": {"batch_size": 32, "steps": 4_400},
    "batch 32 at the same minutes": {"batch_size": 32, "steps": 3_600},  # its step is about 1.2 times slower per image
    "null label 20 % of the time": {"label_dropout": 0.2},
}


def table(rows: list[dict]) -> str:
    """A line per arm and training seed: its logged minutes and each number's mean ± std over the sampling seeds."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    ordered = sorted(groups(rows, "arm", "train_seed").items(), key=lambda item: (arms.index(item[0][0]), item[0][1]))
    lines = [[arm, f"`{group[0]['train_flags']}`" if group[0]["train_flags"] else "defaults", train_seed, *columns(group)]
             for (arm, train_seed), group in ordered]
    return markdown(["arm", "train.py flags", "training seed", *HEADER], lines)


def spans(rows: list[dict], arm: str) -> str:
    """An arm's numbers as the lowest and highest of its training seeds' means over the sampling seeds."""
    by_seed = groups([r for r in rows if r["arm"] == arm], "train_seed")
    if not by_seed:
        return "not measured yet"
    parts = []
    for key, name, digits in (("fd_ratio", "feature distance ratio", 1), ("spectrum_max", "highest band", 2),
                              ("class_accuracy", "class accuracy", 3), ("chroma_ratio", "chroma", 2),
                              ("spread_ratio", "brightness spread", 2)):
        means = [sum(r[key] for r in group) / len(group) for group in by_seed.values()]
        low, high = (f"{m:.{digits}f}" for m in (min(means), max(means)))
        parts.append(f"{name} {low}" + (f"-{high}" if high != low else ""))
    return f"{len(by_seed)} training × {min(map(len, by_seed.values()))} sampling seeds: " + ", ".join(parts)


def tried_table(tried: dict, rows: list[dict]) -> str:
    """docs/design/tried.json as a table: a row with an `arm` takes its numbers from these results, others their own."""
    return markdown(["change", "flag", "what it measured", "verdict"],
                    [[r["change"], f"`{r['flag']}`" if r["flag"].startswith(("-", "sample.py")) else r["flag"],
                      spans(rows, r["arm"]) if "arm" in r else r["measured"], r["verdict"]] for r in tried["rows"]])


def main() -> int:
    p = Parser(description="Train each recipe arm at 2 seeds and score it with sample.py --evaluate.")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="which arms (default: all)")
    p.add_argument("--train-seeds", type=int, default=2, help="training seeds 0 … N − 1 (default: 2)")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds 0 … N − 1 (default: 3)")
    p.add_argument("--work", default="runs/recipe", help="folder of the trained runs (default: %(default)s)")
    p.add_argument("--out", default="docs/recipe", help="folder of results.json (default: %(default)s)")
    p.add_argument("--page", help="put the recipe and tried tables between this page's <!-- NAME:begin/end -->")
    p.add_argument("--report-only", action="store_true", help="write the table from OUT/results.json")
    a = p.parse_args()
    if a.train_seeds < 1 or a.seeds < 1:
        p.error("--train-seeds and --seeds must be at least 1")
    path, work = Path(a.out) / "results.json", Path(a.work)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    if not a.report_only:
        for train_seed in range(a.train_seeds):
            for arm in a.arms:
                done = {r["seed"] for r in rows if r["arm"] == arm and r["train_seed"] == train_seed}
                if done >= set(range(a.seeds)):  # scored already: its run need not exist any more
                    continue
                flags = train_flags(ARMS[arm])
                run_dir = work / f"{'-'.join(flags).replace('--', '') or 'defaults'}_seed{train_seed}"
                train(run_dir, {"steps": STEPS, **ARMS[arm], "seed": train_seed})
                for seed in sorted(set(range(a.seeds)) - done):
                    rows.append({"arm": arm, "train_flags": " ".join(flags), "train_seed": train_seed,
                                 **evaluate(str(run_dir / "checkpoint.pt"), seed)})
                    path.write_text(json.dumps({"rows": rows}, indent=1))
    tried = json.loads((ROOT / "docs/design/tried.json").read_text())
    publish(a.page, {"recipe": table(rows), "tried": tried_table(tried, rows)})
    return 0


if __name__ == "__main__":
    run(main)
