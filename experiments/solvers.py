"""Few-step solvers at zero terminal SNR: does DPM-Solver++(2M) at S = 10 match DDIM at S = 25 (trailing steps)?

    python -m experiments.solvers runs/default/checkpoint.pt --page docs/results.md

Two models of the embedded shapes: the ideal denoiser of 2,048 known images (no training error, so only the solver
differs) and a trained zero-SNR v-prediction checkpoint (classes in turn), both measured against held-out shapes.
"""
import itertools
import json
import time
from pathlib import Path

import torch

from cli import Parser, UsageError, check_writable_dir, run
from data import make_shapes
from diffusion import SAMPLERS, IdealDenoiser, SamplingSettings, get_timesteps, sample_in_batches
from evaluation.yardstick import shapes_quality
from experiments.common import command, markdown, publish, pyplot, save
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

STEPS = (2, 3, 5, 10, 25)
KNOWN_SEED = 6_000_001  # the ideal denoiser's images: not the shapes classifier's held-out references
METRICS = (("spread_ratio", "brightness spread (1 = data)"), ("w1", "brightness W1 to data"),
           ("hf_ratio", "high-frequency ratio (1 = data)"), ("fd_ratio", "feature distance ratio (1 = data)"))


def plot(plt, path: Path, rows: list[dict]) -> None:
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4))
    for ax, (key, label) in zip(axes, METRICS):
        for model, style in (("ideal denoiser", "-"), ("trained model", "--")):
            for sampler, color in zip(SAMPLERS, ("C0", "C3")):
                points = [(r["steps"], r[key]) for r in rows if r["model"] == model and r["sampler"] == sampler]
                ax.plot(*zip(*points), style, color=color, marker="o", label=f"{model}, {sampler}")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(STEPS, [str(s) for s in STEPS])
        ax.set(yscale="log" if key == "fd_ratio" else "linear", xlabel="sampling steps S (trailing)")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle("DDIM against DPM-Solver++(2M) on a zero-terminal-SNR schedule")
    save(fig, path)


def table(results: dict) -> str:
    """Brightness spread and feature distance ratio of each model and sampler, a column per step count."""
    rows = results["rows"]
    return markdown(["model", "sampler", "number", *(f"S = {n}" for n in STEPS)],
                    [[model, sampler, label] + [f"{r[key]:.{digits}f}" for n in STEPS for r in rows
                                                if (r["model"], r["sampler"], r["steps"]) == (model, sampler, n)]
                     for model in ("ideal denoiser", "trained model") for key, label, digits in
                     (("spread_ratio", "brightness spread", 2), ("fd_ratio", "feature distance ratio", 1)) for sampler in SAMPLERS])


def main() -> int:
    p = Parser(description="Compare DDIM and DPM-Solver++(2M) at few steps on a zero-SNR model of the shapes.")
    p.add_argument("checkpoint", help="a zero-SNR v-prediction train.py checkpoint of the shapes")
    p.add_argument("--num-samples", type=int, default=512, help="samples a row (default: 512)")
    p.add_argument("--out", default="docs/solvers", help="output folder (default: docs/solvers)")
    p.add_argument("--page", help="also put the table between this page's <!-- solvers:begin/end --> markers")
    a = p.parse_args()
    if a.num_samples < 2:
        p.error("--num-samples must be at least 2")
    check_writable_dir(a.out)
    state = load_training_checkpoint(a.checkpoint)
    config = state["config"]
    if config["dataset"] != "shapes" or not config["zero_snr"]:
        raise UsageError("this experiment needs a zero-SNR checkpoint of the embedded shapes")
    trained, schedule = load_ema_model(state, a.checkpoint), checkpoint_schedule(state)
    known = make_shapes(2048, trained.config.image_size, KNOWN_SEED)[0]
    classes = torch.arange(a.num_samples) % trained.config.num_classes if trained.config.num_classes else None
    models = {"ideal denoiser": (IdealDenoiser(known, schedule, "v"), "v", None),
              "trained model": (trained, config["prediction"], classes)}
    rows, tic = [], time.perf_counter()
    for (name, (model, prediction, labels)), sampler, steps in itertools.product(models.items(), SAMPLERS, STEPS):
        settings = SamplingSettings(get_timesteps(schedule.num_train_steps, steps, "trailing"), sampler=sampler)
        images = sample_in_batches(model, (a.num_samples, *known.shape[1:]), schedule, prediction, settings,
                                   labels=labels)
        row = {"model": name, "sampler": sampler, "steps": steps, **shapes_quality(images, labels)}
        rows.append(row)
        print(f"{name}, {sampler}, S={steps}: spread {row['spread_ratio']:.3f}, W1 {row['w1']:.4f}, "
              f"HF x{row['hf_ratio']:.2f}, FD x{row['fd_ratio']:.1f}", flush=True)
    results = {"command": command(), "minutes": (time.perf_counter() - tic) / 60, "rows": rows}
    (Path(a.out) / "results.json").write_text(json.dumps(results, indent=1))
    publish(a.page, {"solvers": table(results)})
    if plt := pyplot():
        plot(plt, Path(a.out) / "solvers.png", rows)
    return 0


if __name__ == "__main__":
    run(main)
