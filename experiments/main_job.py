"""The main job measured: sample.py's yardstick over training seeds × sampling seeds, as a table.

    python -m experiments.main_job runs/default/checkpoint.pt runs/seed1/checkpoint.pt --page docs/main_job.md

Each row is one `python sample.py CHECKPOINT --evaluate --seed S [FLAGS]`, run as a user runs it, for
every checkpoint, every sampling seed and every flag set of --settings (sample.py's defaults, and
unguided). Writes --out (the commands, each model's train.py flags and the numbers as JSON) and,
with --page, the table between that page's markers; a test checks the page against the file.
"""
import json
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

from cli import Parser, UsageError, run
from experiments.summary import markdown, replace_between
from models.checkpoint import load_training_checkpoint
from experiments.common import train_flags
from train_config import TrainConfig, detail_skip_default, trained_config

ROOT = Path(__file__).resolve().parents[1]
# What the targets ask of every row (issue text in docs/main_job.md): a band of the spectrum, the
# colour and the brightness within these, the class accuracy no lower than held-out data's by more.
TARGETS = {"spectrum": (0.7, 1.4), "chroma_ratio": (0.8, 1.25), "spread_ratio": (0.9, None), "w1": (None, 0.03),
           "fd_ratio": (None, 5.0), "class_accuracy_gap": (None, 0.05)}


# The recipe's flags that a row may differ in (the run's place, device and logging are not the recipe).
NOT_RECIPE = {"out", "device", "precision", "workers", "ckpt_every", "log_every", "download", "data_dir", "hflip",
              "label_dropout"}


def recipe_flags(checkpoint: str) -> str:
    """The train.py flags, against today's defaults, of the recipe the checkpoint was trained with."""
    trained = trained_config(load_training_checkpoint(checkpoint)["config"])
    default = TrainConfig(**{k: v for k, v in trained.items() if k in ("prediction", "objective")})
    # the detail skip's default as train.py resolves it for this run's model
    default = {**{f.name: getattr(default, f.name) for f in fields(TrainConfig)},
               "detail_skip": detail_skip_default(replace(default, model=trained["model"]))}
    return " ".join(train_flags({k: v for k, v in trained.items()
                                 if k in default and k not in NOT_RECIPE and v != default[k]}))


def evaluate(checkpoint: str, seed: int, flags: str) -> dict:
    """One `sample.py --evaluate` run: its command, the train.py flags of its model and the quality it prints."""
    command = [sys.executable, str(ROOT / "sample.py"), checkpoint, "--evaluate", "--seed", str(seed), *flags.split(),
               "--out", str(Path(checkpoint).parent / f"evaluated_seed{seed}.png")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("quality ")]
    if result.returncode or not lines:
        raise UsageError(f"sample.py failed on {checkpoint}: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    shown = " ".join(["python sample.py", checkpoint, "--evaluate", "--seed", str(seed), *flags.split()])
    return {"checkpoint": checkpoint, "seed": seed, "flags": flags, "command": shown, "trained": recipe_flags(checkpoint),
            **json.loads(lines[0].removeprefix("quality "))}


def misses(row: dict) -> list[str]:
    """The targets a row misses, by name."""
    values = {"spectrum": (row["spectrum_min"], row["spectrum_max"]), "chroma_ratio": (row.get("chroma_ratio"),) * 2,
              "spread_ratio": (row["spread_ratio"],) * 2, "w1": (row["w1"],) * 2, "fd_ratio": (row["fd_ratio"],) * 2,
              "class_accuracy_gap": ((row["data_class_accuracy"] - row["class_accuracy"],) * 2
                                     if "class_accuracy" in row else (None, None))}
    missed = []
    for key, (low, high) in TARGETS.items():
        lowest, highest = values[key]
        if lowest is not None and ((low is not None and lowest < low) or (high is not None and highest > high)):
            missed.append(key)
    return missed


def table(results: dict) -> str:
    """The page's table: one line per row, its command and numbers."""
    lines = [[f"`{r['command']}`", f"`{r['trained'] or 'defaults'}`", f"{r.get('class_accuracy', float('nan')):.3f} ({r['data_class_accuracy']:.3f})",
              f"{r['fd_ratio']:.1f}", f"{r['spectrum_min']:.2f} / {r['spectrum_max']:.2f}",
              f"{r['chroma_ratio']:.2f}" if "chroma_ratio" in r else "", f"{r['spread_ratio']:.2f}", f"{r['w1']:.3f}",
              ", ".join(misses(r)) or "none"] for r in results["rows"]]
    bands = [[f"`{r['command']}`", *(f"{b:.2f}" for b in r["spectrum_ratio"])] for r in results["rows"]]
    return "\n\n".join([
        markdown(["command", "train.py flags", "class accuracy (held-out data)", "FD ratio (≤ 5)", "spectrum bands, lowest / highest "
                  "([0.7, 1.4])", "chroma ratio ([0.8, 1.25])", "spread (≥ 0.9)", "W1 (≤ 0.03)", "targets missed"], lines),
        "The spectrum ratio in each of its 8 bands (lowest frequency first):",
        markdown(["command", *map(str, range(1, 9))], bands)])


def spread(rows: list[dict], key: str, digits: int) -> str:
    values = [r[key] for r in rows]
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def summary(results: dict) -> str:
    """The README's sentence on the main job: each number's range over the rows of sample.py's defaults."""
    rows = [r for r in results["rows"] if r["flags"] == ""]
    data = rows[0]["data_class_accuracy"]
    missed = sorted({m for r in rows for m in misses(r)})
    return (f"Against held-out shapes (`python -m experiments.main_job`, {len({r['checkpoint'] for r in rows})} training "
            f"seeds × {len({r['seed'] for r in rows})} sampling seeds, `sample.py`'s defaults) its samples reach class "
            f"accuracy {spread(rows, 'class_accuracy', 3)} (held-out data: {data:.3f}), feature distance ratio "
            f"{spread(rows, 'fd_ratio', 1)} (target ≤ 5), a highest spectrum band of {spread(rows, 'spectrum_max', 2)} "
            f"times the data's power (target ≤ 1.4), chroma {spread(rows, 'chroma_ratio', 2)}, brightness spread "
            f"{spread(rows, 'spread_ratio', 2)} and W1 {spread(rows, 'w1', 3)}; targets missed on some row: "
            f"{', '.join(missed) or 'none'}.")


def write_page(results: dict, page: Path, name: str) -> None:
    """Put the table between the page's markers <!-- NAME:begin --> and <!-- NAME:end -->."""
    replace_between(page, f"<!-- {name}:begin -->", f"<!-- {name}:end -->", table(results))


def main() -> int:
    p = Parser(description="Measure the main job with sample.py's yardstick over training and sampling seeds.")
    p.add_argument("checkpoints", nargs="+", help="train.py checkpoints of the shapes, one per training seed")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds 0 … N − 1 (default: 3)")
    p.add_argument("--settings", nargs="+", default=["", "--guidance 1"],
                   help="sample.py flag sets, one row each ('' : its defaults; default: defaults and unguided)")
    p.add_argument("--out", default="docs/main_job/results.json", help="the rows as JSON (default: %(default)s)")
    p.add_argument("--page", default="", help="also put the table between this page's <!-- NAME:begin --> and "
                                              "<!-- NAME:end --> markers, NAME the --out file's name without .json")
    p.add_argument("--readme", default="", help="also put the summary sentence between this page's "
                                                "<!-- main_job_summary:begin --> and <!-- main_job_summary:end --> markers")
    a = p.parse_args()
    if a.seeds < 1:
        p.error("--seeds must be at least 1")
    rows = [evaluate(c, seed, flags) for flags in a.settings for c in a.checkpoints for seed in range(a.seeds)]
    results = {"rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    if a.page:
        write_page(results, Path(a.page), Path(a.out).stem)
    if a.readme:
        replace_between(Path(a.readme), "<!-- main_job_summary:begin -->", "<!-- main_job_summary:end -->", summary(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    run(main)
