"""The brightness experiment's findings as sentences, generated from its results.json, so that every
number the README states about them is the one the run measured.

    python -m experiments.summary docs/brightness/results.json   # prints the sentences

The README holds them between `<!-- summary:begin -->` and `<!-- summary:end -->`; a test checks
that they still match the committed results.
"""
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"


def sentences(results: dict) -> list[str]:
    rows = {r["name"]: r for r in results["rows"]}
    seeds = {(e["model"], e["spacing"], e["steps"]): e for e in results["over_seeds"]}
    steps = results["preset"]["step_counts"][0]
    out = []

    def spread(model: str, spacing: str) -> str:
        e = seeds.get((model, spacing, steps))
        return f"{e['spread_ratio']['mean']:.2f} ± {e['spread_ratio']['std']:.2f}" if e else "?"

    if ("baseline", "leading", steps) in seeds and ("fixed", "trailing", steps) in seeds:
        n = seeds["baseline", "leading", steps]["seeds"]
        out.append(f"**Brightness (Fig. 1-3).** Over {n} training seeds, the baseline (ε, flawed schedule, leading "
                   f"{steps} steps) spreads {spread('baseline', 'leading')} of the data's brightness; the fixed model "
                   f"(zero SNR, v, trailing) {spread('fixed', 'trailing')}, and x0 at zero SNR "
                   f"{spread('fixed_x0', 'trailing')}. The exact denoiser, free of training error, gives "
                   f"{rows[f'ideal_baseline_leading_{steps}']['spread_ratio']:.2f} and "
                   f"{rows[f'ideal_fixed_trailing_{steps}']['spread_ratio']:.2f}.")
    sweep = {(r["model"], r["spacing"], r["steps"]): r for r in results["rows"] if r["kind"] == "steps"}
    if sweep:
        counts = {s for _, _, s in sweep}
        few, many = 5 if 5 in counts else min(counts), max(counts)  # the paper shows S = 5
        for model in ("ideal_baseline", "baseline", "fixed"):
            at = lambda s: " / ".join(f"{sweep[model, sp, s]['spread_ratio']:.2f}" for sp in ("trailing", "linspace", "leading"))  # noqa: E731
            out.append(f"**Sample steps (Table 2, Fig. 4), {model.replace('_', ' ')}.** Spread with trailing / linspace / "
                       f"leading steps: {at(few)} at S = {few}, {at(many)} at S = {many}.")
    grid = {(r["guidance"], r["rescale"]): r for r in results["rows"] if r["kind"] == "guidance_grid"}
    if grid:
        w = max(w for w, _ in grid)
        phis = sorted(p for g, p in grid if g == w)
        clip = " / ".join(f"{100 * grid[w, p]['clip_fraction']:.1f} %" for p in phis)
        contrast = " / ".join(f"{grid[w, p]['contrast_ratio']:.2f}" for p in phis)
        accuracy = " / ".join(f"{grid[w, p].get('quality', {}).get('class_accuracy', float('nan')):.2f}" for p in phis)
        unguided = grid[min(g for g, _ in grid), phis[0]]
        out.append(f"**Rescaled guidance (Fig. 6).** At w = {w:g} with φ = {' / '.join(f'{p:g}' for p in phis)}: clipped "
                   f"pixels {clip}; per-image contrast {contrast} of the data's; class accuracy {accuracy} (unguided: "
                   f"{unguided.get('quality', {}).get('class_accuracy', float('nan')):.2f}, "
                   f"{100 * unguided['clip_fraction']:.1f} % clipped).")
    tuned = sorted((r["finetune_steps"], r) for r in results["rows"] if r["kind"] == "finetune" and r["model"] == "finetuned")
    scratch = {r["finetune_steps"]: r for r in results["rows"] if r["kind"] == "finetune" and r["model"] == "scratch"}
    if tuned:
        out.append("**Fine-tuning (§4).** The baseline fine-tuned to zero SNR + v spreads "
                   + ", ".join(f"{r['spread_ratio']:.2f} after {n} steps" for n, r in tuned)
                   + f" (before: {rows.get(f'baseline_trailing_{steps}', {}).get('spread_ratio', float('nan')):.2f} with "
                   "trailing steps); the fixed model trained from scratch for the same total spreads "
                   + ", ".join(f"{scratch[n]['spread_ratio']:.2f}" for n, _ in tuned if n in scratch) + ".")
    first = [r for r in results["rows"] if r["kind"] == "first_step"]
    if first:
        trained = [r for r in first if r["class"] is not None]
        out.append(f"**The first step (§5.2).** At t = T the fixed model's x̂0 varies over noise draws by "
                   f"{max(r['x0_brightness_spread'] for r in trained):.3f} of the data's brightness spread at most, and lies "
                   f"{max(r['rms_to_class_mean'] for r in trained):.3f} (RMS) from its class mean at most, where the data's "
                   f"images lie {min(r['rms_of_data_to_class_mean'] for r in trained):.3f} or more from it; the exact "
                   f"denoiser gives the data mean to {first[-1]['rms_to_class_mean']:.1e}.")
    offset = [f"offset_noise_{sp}_{steps}" for sp in ("leading", "trailing")]
    if all(name in rows for name in offset):
        def pair(prefix: str) -> str:
            return " / ".join(f"{rows[f'{prefix}_{sp}_{steps}']['spread_ratio']:.2f}" for sp in ("leading", "trailing"))

        out.append(f"**Offset noise (§5.4).** Spread with leading / trailing steps, x_T from N(0, I): trained "
                   f"{pair('offset_noise')}, exact denoiser {pair('ideal_offset_noise')}; x_T with the trained offset: "
                   f"trained {pair('offset_noise_matched')}, exact denoiser {pair('ideal_offset_noise_matched')}.")
    quality = [r for r in results["rows"] if r["kind"] == "quality" and "quality" in r]  # the yardstick: shapes only
    if quality:
        def mean(model: str, s: int, guided: bool, key: str) -> float:
            values = [r["quality"][key] for r in quality if r["model"] == model and r["steps"] == s
                      and (r["guidance"] > 1) == guided]
            return sum(values) / len(values)

        s = max(r["steps"] for r in quality)
        out.append(f"**Quality (Table 3), S = {s}.** Feature-distance ratio, baseline against fixed: "
                   f"{mean('baseline', s, False, 'fd_ratio'):.1f} against {mean('fixed', s, False, 'fd_ratio'):.1f} "
                   f"unguided, {mean('baseline', s, True, 'fd_ratio'):.1f} against {mean('fixed', s, True, 'fd_ratio'):.1f} "
                   f"guided; class accuracy {mean('baseline', s, False, 'class_accuracy'):.2f} against "
                   f"{mean('fixed', s, False, 'class_accuracy'):.2f} unguided, {mean('baseline', s, True, 'class_accuracy'):.2f} "
                   f"against {mean('fixed', s, True, 'class_accuracy'):.2f} guided.")
    return out


def table(results: dict) -> str:
    """The brightness rows in one table: the ideal rows, and the trained rows as mean ± std over seeds."""
    def cell(e: dict, key: str, digits: int) -> str:
        return f"{e[key]['mean']:.{digits}f} ± {e[key]['std']:.{digits}f}" if e["seeds"] > 1 else f"{e[key]['mean']:.{digits}f}"

    lines = ["| row | spacing, steps | spread | W1 | < 0.1 | > 0.9 | HF ratio |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if r["kind"] == "ideal":
            lines.append(f"| exact denoiser: {r['model'].removeprefix('ideal_').replace('_', ' ')} | {r['spacing']} {r['steps']} | "
                         f"{r['spread_ratio']:.2f} | {r['w1']:.3f} | {r['frac_dark']:.3f} | {r['frac_bright']:.3f} | {r['hf_ratio']:.2f} |")
    for e in results["over_seeds"]:
        seeds = f" ({e['seeds']} seeds)" if e["seeds"] > 1 else ""
        lines.append(f"| trained: {e['model'].replace('_', ' ')}{seeds} | {e['spacing']} {e['steps']} | "
                     f"{cell(e, 'spread_ratio', 2)} | {cell(e, 'w1', 3)} | {cell(e, 'frac_dark', 3)} | {cell(e, 'frac_bright', 3)} | "
                     f"{cell(e, 'hf_ratio', 2)} |")
    return "\n".join(lines)


def block(results: dict) -> str:
    """The README's block: the table and the sentences, between the markers."""
    return "\n".join([BEGIN, table(results), "", *(f"- {s}" for s in sentences(results)), END])


def main() -> int:
    print(block(json.loads(Path(sys.argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
