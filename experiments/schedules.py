"""The paper's Table 1 and Fig. 2 as output, and why the leak grows with resolution.

    python -m experiments.schedules                 # writes docs/schedules/ (its time: docs/schedules.md)

1. Table 1: √ᾱ_T and SNR_T of the common schedules, before and after fix #1, beside the values
   the paper prints. Only the fixed schedules reach exactly 0.
2. Fig. 2: log SNR(t) against t for each schedule, before and after (log_snr.png).
3. Resolution: the channel mean of x_T is √ᾱ_T·(mean of x0) plus noise whose std is 1/√(HW), so
   the same ᾱ_T tells a network more about an image's brightness the more pixels it has, and pure
   noise (whose mean is ≈ 0) pins the samples' brightness harder. Rows of the ideal denoiser at
   16, 32 and 64 px, baseline (leading steps) against fixed (trailing), next to the spread that
   the first step alone predicts (`evaluation.metrics.leak_prediction`).
"""
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

from cli import Parser, pick_device, run
from data import make_shapes
from diffusion import SCHEDULES, IdealDenoiser, get_timesteps, make_schedule, sample
from evaluation.metrics import brightness, leak_prediction, spread_ratio, wasserstein1
from experiments.figures import pyplot, save
from experiments.summary import markdown

# Table 1 of the paper, as printed: (√ᾱ_T, SNR_T) at T = 1000.
PAPER_TABLE_1 = {"linear": (0.006353, 4.035993e-05), "cosine": (4.928220e-05, 2.428735e-09),
                 "scaled_linear": (0.068265, 0.004682)}
# The resolution rows: Stable Diffusion's flawed recipe against the fixed one (ε or v makes no difference
# to an exact model, so both use v, which is defined at zero SNR).
RESOLUTION_ROWS = {"baseline_leading": (False, "leading", 1), "fixed_trailing": (True, "trailing", 0)}


def terminal_values() -> list[dict]:
    """√ᾱ_T, SNR_T and log SNR_T of every schedule, before and after the rescale to zero terminal SNR."""
    rows = []
    for name in SCHEDULES:
        for zero_snr in (False, True):
            schedule = make_schedule(name, zero_snr=zero_snr)
            snr = schedule.snr[-1].item()
            paper = PAPER_TABLE_1[name] if not zero_snr else (0.0, 0.0)
            rows.append({"schedule": name, "zero_snr": zero_snr, "sqrt_alpha_bar_T": schedule.sqrt_alpha_bar[-1].item(),
                         "snr_T": snr, "paper_sqrt_alpha_bar_T": paper[0], "paper_snr_T": paper[1]})
    return rows


def resolution_rows(sizes: list[int], num_samples: int, num_known: int, step_counts: list[int], seed: int,
                    device: torch.device) -> list[dict]:
    rows = []
    for size in sizes:
        known = make_shapes(num_known, size, seed)[0]
        data = make_shapes(num_samples, size, seed + 1)[0]  # held out: the denoiser never saw these
        for (name, (zero_snr, spacing, offset)), steps in itertools.product(RESOLUTION_ROWS.items(), step_counts):
            schedule = make_schedule("scaled_linear", zero_snr=zero_snr)
            timesteps = get_timesteps(1000, steps, spacing, offset)
            tic = time.perf_counter()
            images = sample(IdealDenoiser(known, schedule, "v").to(device), data.shape, schedule, timesteps, "v",
                            generator=torch.Generator().manual_seed(seed), device=device, progress=False).cpu()
            b, b_data = brightness(images), brightness(data)
            first = schedule.sqrt_alpha_bar[timesteps[0]].item()
            predicted = leak_prediction(data, first**2)
            rows.append({"size": size, "row": name, "steps": steps, "first_timestep": timesteps[0].item(), "sqrt_alpha_bar_first": first,
                         "noise_mean_std": 1 / math.sqrt(size * size), "spread_ratio": spread_ratio(b, b_data),
                         "w1": wasserstein1(b, b_data),
                         **predicted,
                         "seconds": time.perf_counter() - tic})
            r = rows[-1]
            print(f"{size}px {name} {steps} steps: spread {r['spread_ratio']:.2f} (the leak alone allows {r['leak_only_spread']:.2f}), "
                  f"W1 {r['w1']:.3f} ({r['seconds']:.0f}s)")
    return rows


def plot_log_snr(path: Path) -> None:
    """Fig. 2: log SNR against t; the fixed schedules fall to −∞ at t = T − 1 (drawn as an arrow)."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, name in enumerate(SCHEDULES):
        for zero_snr, style in ((False, "-"), (True, "--")):
            log_snr = make_schedule(name, zero_snr=zero_snr).snr.log()
            finite = torch.isfinite(log_snr)
            label = f"{name}, {'rescaled to zero terminal SNR' if zero_snr else 'as published'}"
            ax.plot(torch.arange(1000)[finite], log_snr[finite], style, color=f"C{i}", label=label)
            if not finite.all():
                ax.annotate("", xy=(999, -22), xytext=(999, log_snr[finite][-1].item()),
                            arrowprops=dict(arrowstyle="->", color=f"C{i}"))
    ax.set_ylim(-22, 12)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("log SNR(t) = log(ᾱ_t / (1 − ᾱ_t))")
    ax.set_title("Fig. 2: only the rescaled schedules reach SNR = 0 (log SNR → −∞) at the last step", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)


def report(out: Path, table: list[dict], rows: list[dict], seconds: float, command: str) -> str:
    table_1 = markdown(["schedule", "zero SNR", "√ᾱ_T", "SNR_T", "paper √ᾱ_T", "paper SNR_T"],
                       [[r["schedule"], "yes" if r["zero_snr"] else "no", f"{r['sqrt_alpha_bar_T']:.6g}", f"{r['snr_T']:.6g}",
                         f"{r['paper_sqrt_alpha_bar_T']:.6g}", f"{r['paper_snr_T']:.6g}"] for r in table])
    resolution = markdown(["size", "row", "steps", "first t", "√ᾱ at first t", "std of the noise's mean 1/√(HW)",
                           "signal's share of x_T's mean", "std of x_T's mean, sampling / training", "spread",
                           "leak-only spread", "W1"],
                          [[f"{r['size']} px", r["row"], r["steps"], r["first_timestep"], f"{r['sqrt_alpha_bar_first']:.4f}",
                            f"{r['noise_mean_std']:.4f}", f"{r['signal_share']:.2f}", f"{r['x_T_std_ratio']:.2f}",
                            f"{r['spread_ratio']:.2f}",
                            f"{r['leak_only_spread']:.2f}" if r["sqrt_alpha_bar_first"] > 0 else "none: no leak", f"{r['w1']:.3f}"]
                           for r in rows])
    lines = ["## Table 1: the last timestep of common schedules (T = 1000)", "", table_1, "",
             "## The leak against resolution (ideal denoiser, embedded shapes, scaled_linear)", "", resolution]
    text = (f"# Schedules: Table 1, Fig. 2 and the resolution rows\n\n`{command}` took {seconds / 60:.1f} min.\n\n"
            + "\n".join(lines) + "\n\nFig. 2: log_snr.png.\n")
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"table_1": table, "resolution": rows, "seconds": seconds}, indent=1))
    return text


def main() -> int:
    parser = Parser(description="The paper's Table 1 and Fig. 2, and ideal-denoiser rows at several resolutions.")
    parser.add_argument("--out", default="docs/schedules", help="output folder (default: docs/schedules)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="image sides in pixels (default: 16 32 64)")
    parser.add_argument("--num-samples", type=int, default=500, help="samples a row, and held-out images (default: 500)")
    parser.add_argument("--num-known", type=int, default=1000, help="images the ideal denoiser knows (default: 1000)")
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 100], help="DDIM step counts (default: 25 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the noise (default: 0)")
    args = parser.parse_args()
    if min(args.num_samples, args.num_known, *args.steps) < 1:
        parser.error("--num-samples, --num-known and --steps must be positive")
    if min(args.sizes) < 4:
        parser.error("--sizes must be at least 4 pixels")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    table = terminal_values()
    rows = resolution_rows(args.sizes, args.num_samples, args.num_known, args.steps, args.seed, pick_device("auto"))
    plot_log_snr(out / "log_snr.png")
    command = " ".join(["python -m experiments.schedules", *sys.argv[1:]])
    print(report(out, table, rows, time.perf_counter() - tic, command))
    return 0


if __name__ == "__main__":
    run(main)
