"""How much does the yardstick itself move? Sampling seeds × reference sets on one checkpoint.

    python -m experiments.yardstick_noise runs/default/checkpoint.pt   # 3 seeds × 2 reference sets

Prints a Markdown table, one row per (seed, reference set), and the relative range of each
number over seeds and over reference sets: a number that moves more between reference sets
than the differences it is asked to show is no yardstick.
"""
import torch

from cli import Parser, run
from cli import UsageError
from diffusion import get_timesteps, sample_in_batches
from evaluation.yardstick import shapes_quality
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

KEYS = ("fd_ratio", "hf_ratio", "spectrum_min", "spectrum_max", "class_accuracy", "spread_ratio", "w1")


def relative_range(values: list[float]) -> float:
    return (max(values) - min(values)) / (sum(values) / len(values))


def main() -> int:
    p = Parser(description="Measure the shapes yardstick's noise over sampling seeds and reference sets.")
    p.add_argument("checkpoint")
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds (default: 3)")
    p.add_argument("--reference-sets", type=int, default=2, help="held-out reference sets (default: 2)")
    p.add_argument("--num-samples", type=int, default=512, help="samples per seed (default: 512)")
    p.add_argument("--num-steps", type=int, default=50, help="trailing DDIM steps, as sample.py (default: 50)")
    a = p.parse_args()
    if min(a.seeds, a.reference_sets, a.num_steps) < 1 or a.num_samples < 2:
        p.error("--seeds, --reference-sets and --num-steps must be positive, --num-samples at least 2")
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
        rows += [(seed, r, shapes_quality(images, labels, r)) for r in range(a.reference_sets)]
    keys = [k for k in KEYS if k in rows[0][2]]
    print("| seed | reference set | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    for seed, r, q in rows:
        print(f"| {seed} | {r} | " + " | ".join(f"{q[k]:.3f}" for k in keys) + " |")
    for label, group in (("seeds", lambda s, r: r), ("reference sets", lambda s, r: s)):
        spreads = {k: max(relative_range([q[k] for s, r, q in rows if group(s, r) == g]) for g in {group(s, r) for s, r, _ in rows})
                   for k in keys}
        print(f"\nlargest relative range over {label}: " + ", ".join(f"{k} {v:.1%}" for k, v in spreads.items()))
    return 0


if __name__ == "__main__":
    run(main)
