"""The paper's Table 1 and Fig. 2 as output, and why the leak grows with resolution.

    python -m experiments.schedules --page docs/results.md     # writes docs/schedules/ and the page's two tables

Resolution: x_T's channel mean is √ᾱ_T·(mean of x0) plus noise of std 1/√(HW), so the same ᾱ_T tells a network more
about an image's brightness the more pixels it has: the ideal denoiser's spread at 16, 32 and 64 px, beside the spread
the first step alone predicts (`evaluation.metrics.leak_prediction`).
"""
import itertools
import json
import math
import time
from pathlib import Path

import torch

from cli import Parser, pick_device, run
from data import make_shapes
from diffusion import SCHEDULES, IdealDenoiser, get_timesteps, guided_denoiser, initial_noise, make_schedule, sample
from evaluation.metrics import brightness, leak_prediction, spread_ratio, wasserstein1
from experiments.common import command, markdown, publish, pyplot, save

# Table 1 of the paper, as printed: (√ᾱ_T, SNR_T) at T = 1000.
PAPER_TABLE_1 = {"linear": (0.006353, 4.035993e-05), "cosine": (4.928220e-05, 2.428735e-09),
                 "scaled_linear": (0.068265, 0.004682)}
# The resolution rows: Stable Diffusion's recipe against the fixed one, both in v (defined at zero SNR; for an exact
# model ε or v makes no difference).
RESOLUTION_ROWS = {"baseline_leading": (False, "leading", 1), "fixed_trailing": (True, "trailing", 0)}


def terminal_values() -> list[dict]:
    """√ᾱ_T and SNR_T of every schedule, before and after the rescale to zero terminal SNR, beside the paper's."""
    rows = []
    for name, zero_snr in itertools.product(SCHEDULES, (False, True)):
        schedule = make_schedule(name, zero_snr=zero_snr)
        paper = (0.0, 0.0) if zero_snr else PAPER_TABLE_1[name]
        rows.append({"schedule": name, "zero_snr": zero_snr, "sqrt_alpha_bar_T": schedule.sqrt_alpha_bar[-1].item(),
                     "snr_T": schedule.snr[-1].item(), "paper_sqrt_alpha_bar_T": paper[0], "paper_snr_T": paper[1]})
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
            denoise = guided_denoiser(IdealDenoiser(known, schedule, "v").to(device), schedule, "v")
            x_T = initial_noise(data.shape, torch.Generator().manual_seed(seed)).to(device)
            images = sample(denoise, x_T, schedule, timesteps, progress=False).cpu()
            b, b_data = brightness(images), brightness(data)
            first = schedule.sqrt_alpha_bar[timesteps[0]].item()
            rows.append({"size": size, "row": name, "steps": steps, "first_timestep": timesteps[0].item(),
                         "sqrt_alpha_bar_first": first, "noise_mean_std": 1 / math.sqrt(size * size),
                         "spread_ratio": spread_ratio(b, b_data), "w1": wasserstein1(b, b_data),
                         **leak_prediction(data, first**2), "seconds": time.perf_counter() - tic})
            r = rows[-1]
            print(f"{size}px {name} {steps} steps: spread {r['spread_ratio']:.2f} (the leak alone allows {r['leak_only_spread']:.2f}), "
                  f"W1 {r['w1']:.3f} ({r['seconds']:.0f}s)")
    return rows


def plot_log_snr(plt, path: Path) -> None:
    """Fig. 2: log SNR against t; the fixed schedules fall to −∞ at t = T − 1 (drawn as an arrow)."""
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
    ax.set(ylim=(-22, 12), xlabel="timestep t", ylabel="log SNR(t) = log(ᾱ_t / (1 − ᾱ_t))")
    ax.set_title("Fig. 2: only the rescaled schedules reach SNR = 0 (log SNR → −∞) at the last step", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)


def table_1(results: dict) -> str:
    """√ᾱ_T and SNR_T of each schedule, ours beside the paper's, before and after fix 1."""
    rows = {(r["schedule"], r["zero_snr"]): r for r in results["table_1"]}
    return markdown(["schedule (T = 1000)", "√ᾱ_T", "SNR_T", "paper's √ᾱ_T", "paper's SNR_T", "after fix 1: √ᾱ_T, SNR_T"],
                    [[name, f"{r['sqrt_alpha_bar_T']:.6g}", f"{r['snr_T']:.6g}", f"{r['paper_sqrt_alpha_bar_T']:.6g}",
                      f"{r['paper_snr_T']:.6g}", f"{rows[name, True]['sqrt_alpha_bar_T']:g}, {rows[name, True]['snr_T']:g}"]
                     for (name, zero_snr), r in rows.items() if not zero_snr])


def resolution_table(results: dict) -> str:
    """Per image size: what the data predicts of the flawed schedule's squeeze, beside the ideal denoiser's spread."""
    rows = {(r["size"], r["row"], r["steps"]): r for r in results["resolution"]}
    steps = sorted({n for _, _, n in rows})
    lines = []
    for size in sorted({size for size, _, _ in rows}):
        first = rows[size, "baseline_leading", steps[0]]
        spreads = [f"{rows[size, name, n]['spread_ratio']:.2f}" for name in RESOLUTION_ROWS for n in steps]
        lines.append([f"{size} px", f"{first['x_T_std_ratio']:.2f}", f"{first['leak_only_spread']:.2f}", *spreads])
    return markdown(["size", "predicted: std of x_T's mean from pure noise over its std in training",
                     "predicted: spread the exact first step alone allows",
                     *(f"spread, {name.replace('_', ' ')} {n}" for name in RESOLUTION_ROWS for n in steps)], lines)


def main() -> int:
    parser = Parser(description="The paper's Table 1 and Fig. 2, and ideal-denoiser rows at several resolutions.")
    parser.add_argument("--out", default="docs/schedules", help="output folder (default: docs/schedules)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64], help="image sides in pixels (default: 16 32 64)")
    parser.add_argument("--num-samples", type=int, default=500, help="samples a row, and held-out images (default: 500)")
    parser.add_argument("--num-known", type=int, default=1000, help="images the ideal denoiser knows (default: 1000)")
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 100], help="DDIM step counts (default: 25 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the noise (default: 0)")
    parser.add_argument("--page", help="also put the tables between this page's <!-- schedules.NAME:begin/end --> markers")
    args = parser.parse_args()
    if min(args.num_samples, args.num_known, *args.steps) < 1 or min(args.sizes) < 4:
        parser.error("--num-samples, --num-known and --steps must be positive, and --sizes at least 4 pixels")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    rows = resolution_rows(args.sizes, args.num_samples, args.num_known, args.steps, args.seed, pick_device("auto"))
    results = {"command": command(), "table_1": terminal_values(), "resolution": rows,
               "minutes": (time.perf_counter() - tic) / 60}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if plt := pyplot():
        plot_log_snr(plt, out / "log_snr.png")
    publish(args.page, {"table_1": table_1(results), "resolution": resolution_table(results)}, "schedules.")
    return 0


if __name__ == "__main__":
    run(main)
