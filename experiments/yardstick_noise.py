"""How much does the yardstick itself move? Sampling seeds × reference sets on one checkpoint.

    python -m experiments.yardstick_noise runs/default/checkpoint.pt --out docs/quality/noise.json --page docs/quality.md

Prints a Markdown table, one row per (seed, reference set), and the relative range of each
number over seeds and over reference sets (with --out, also writes them as JSON, which
docs/quality.md's table is checked against): a number that moves more between reference sets
than the differences it is asked to show is no yardstick.
"""
import argparse
import json
from pathlib import Path

import torch

from cli import Parser, run
from data import make_shapes
from cli import UsageError
from diffusion import get_timesteps, sample_in_batches
from evaluation.yardstick import shapes_quality
from experiments.summary import replace_between
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

DATA_SEED = 9_000_001  # held-out shapes that are neither a reference set nor any training run's
KEYS = ("fd_ratio", "hf_ratio", "spectrum_min", "spectrum_max", "chroma_ratio", "class_accuracy", "spread_ratio", "w1")


def relative_range(values: list[float]) -> float:
    return (max(values) - min(values)) / (sum(values) / len(values))


def table(results: dict) -> str:
    """The rows as a Markdown table, then the largest relative range over seeds and over reference sets."""
    rows = results["rows"]
    keys = [k for k in KEYS if k in rows[0]]
    text = ["| seed | reference set | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    text += [f"| {r['seed']} | {r['reference_set']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for r in rows]
    for label, other in (("sampling seeds", "reference_set"), ("reference sets", "seed")):
        groups = {r[other] for r in rows}
        spreads = {k: max(relative_range([r[k] for r in rows if r[other] == g]) for g in groups) for k in keys}
        text.append(f"\nLargest relative range over {label}: " + ", ".join(f"{k} {v:.1%}" for k, v in spreads.items()))
    return "\n".join(text)


def main() -> int:
    p = Parser(description="Measure the shapes yardstick's noise over sampling seeds and reference sets.")
    p.add_argument("checkpoint", nargs="?", help="a train.py checkpoint of the shapes (or --data)")
    p.add_argument("--data", type=int, default=0, metavar="SIZE",
                   help="measure held-out shapes of this size instead of a model's samples: the data's own scores")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds (default: 3)")
    p.add_argument("--reference-sets", type=int, default=2, help="held-out reference sets (default: 2)")
    p.add_argument("--num-samples", type=int, default=512, help="samples per seed (default: 512)")
    p.add_argument("--num-steps", type=int, default=50, help="trailing DDIM steps, as sample.py (default: 50)")
    p.add_argument("--out", default="", help="also write the rows as JSON to this file (default: none)")
    p.add_argument("--page", default="", help="with --out FILE.json, also put the table between this page's "
                                              "<!-- FILE:begin --> and <!-- FILE:end --> markers")
    a = p.parse_args()
    if min(a.seeds, a.reference_sets, a.num_steps) < 1 or a.num_samples < 2:
        p.error("--seeds, --reference-sets and --num-steps must be positive, --num-samples at least 2")
    if bool(a.checkpoint) == bool(a.data):
        p.error("give a checkpoint or --data SIZE, not both")
    if a.page and not a.out:
        p.error("--page needs --out, whose name marks the page's table")
    if a.data:
        rows = []
        for seed in range(a.seeds):
            images, labels, _ = make_shapes(a.num_samples, a.data, DATA_SEED + seed)
            rows += [{"seed": seed, "reference_set": r, **shapes_quality(images, labels, r)} for r in range(a.reference_sets)]
        return write(a, {"checkpoint": f"held-out shapes, {a.data} px", "num_samples": a.num_samples, "rows": rows})
    state = load_training_checkpoint(a.checkpoint)
    config = state["config"]
    if config["dataset"] != "shapes":
        raise UsageError("the yardstick is for models of the embedded shapes")
    model = load_ema_model(state, a.checkpoint)
    num_classes, size = model.config.num_classes, model.config.image_size
    labels = torch.arange(a.num_samples) % num_classes if num_classes else None
    timesteps = get_timesteps(config["timesteps"], a.num_steps, "trailing")
    rows = []
    for seed in range(a.seeds):
        images = sample_in_batches(model, a.num_samples, (model.config.in_channels, size, size), checkpoint_schedule(state),
                                   timesteps, config["prediction"], labels=labels, seed=seed)
        rows += [{"seed": seed, "reference_set": r, **shapes_quality(images, labels, r)} for r in range(a.reference_sets)]
    return write(a, {"checkpoint": a.checkpoint, "num_samples": a.num_samples, "num_steps": a.num_steps, "rows": rows})


def write(a: argparse.Namespace, results: dict) -> int:
    """Print the table, and write the rows to --out if given."""
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=1))
    if a.page:
        name = Path(a.out).stem
        replace_between(Path(a.page), f"<!-- {name}:begin -->", f"<!-- {name}:end -->", table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    run(main)
