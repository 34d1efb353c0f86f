"""The brightness experiment's findings as sentences, generated from its results.json, so that every
number the README states about them is the one the run measured.

    python -m experiments.summary docs/brightness/results.json            # prints the sentences
    python -m experiments.summary docs/brightness/results.json docs/brightness-shapes32/results.json --write

The first results are the page's; any others are the same experiment at another resolution, whose leak
sentences follow, with the squeeze set beside the first's. `--write` rewrites docs/brightness.md between
`<!-- summary:begin -->` and `<!-- summary:end -->` and the README's headline table between
`<!-- headline:begin -->` and `<!-- headline:end -->`; a test checks that both still match the committed results.
"""
import json
import sys
from pathlib import Path

from experiments.common import HF_CONVERGED, YARDSTICK

BEGIN, END = "<!-- summary:begin -->", "<!-- summary:end -->"


def markdown(header: list[str], lines: list[list]) -> str:
    """A Markdown table: the one table writer of the experiments."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(v) for v in line) + " |" for line in lines])


def find(results: dict, kind: str, x_T_offset: float = 0.0, **settings) -> dict | None:
    """The group of rows (over training seeds) of this kind with these settings, its x_T from N(0, I) unless
    `x_T_offset` is given (None: any)."""
    return next((e for e in results["over_seeds"] if e["kind"] == kind and all(e.get(k) == v for k, v in settings.items())
                 and x_T_offset in (None, e.get("x_T_offset", 0.0))), None)


def label(row: dict) -> str:
    """A row's model in words, "matched" where its x_T carried the offset noise it was trained on."""
    return row["model"].removeprefix("ideal_").replace("_", " ") + (" matched" if row.get("x_T_offset") else "")


def num(entry: dict | None, key: str = "spread_ratio", digits: int = 2, scale: float = 1, missing: str = "?") -> str:
    """A number as mean ± std over training seeds (the value alone for one seed; `missing` where absent)."""
    if entry is None or key not in entry:
        return missing
    mean, std = scale * entry[key]["mean"], scale * entry[key]["std"]
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if entry["seeds"] > 1 else f"{mean:.{digits}f}"


def ideal(results: dict, model: str, spacing: str, steps: int, matched: bool = False) -> str:
    """The spread of an ideal denoiser's row."""
    return next(f"{r['spread_ratio']:.2f}" for r in results["rows"] if r["kind"] == "ideal" and r["model"] == model
                and r["spacing"] == spacing and r["steps"] == steps and bool(r.get("x_T_offset")) == matched)


def brightness_claim(results: dict, steps: int) -> list[str]:
    baseline = find(results, "trained", model="baseline", spacing="leading", steps=steps)
    fixed = find(results, "trained", model="fixed", spacing="trailing", steps=steps)
    if not (baseline and fixed):
        return []
    return [f"**Brightness (Fig. 1-3).** Over {baseline['seeds']} training seeds, the baseline (ε, flawed schedule, "
            f"leading {steps} steps) spreads {num(baseline)} of the data's brightness; the fixed model (zero SNR, v, "
            f"trailing) {num(fixed)}, and x0 at zero SNR "
            f"{num(find(results, 'trained', model='fixed_x0', spacing='trailing', steps=steps))}. The ideal denoiser, free "
            f"of training error, gives {ideal(results, 'ideal_baseline', 'leading', steps)} and "
            f"{ideal(results, 'ideal_fixed', 'trailing', steps)}."]


def steps_claim(results: dict) -> list[str]:
    counts = {e["steps"] for e in results["over_seeds"] if e["kind"] == "steps"}
    if not counts:
        return []
    few, many = 5 if 5 in counts else min(counts), max(counts)  # the paper shows S = 5
    out = []
    for model in ("ideal_baseline", "baseline", "fixed"):
        def at(n: int) -> str:
            return " / ".join(num(find(results, "steps", model=model, spacing=sp, steps=n))
                              for sp in ("trailing", "linspace", "leading"))

        out.append(f"**Sample steps (Table 2, Fig. 4), {model.replace('_', ' ')}.** Spread with trailing / linspace / "
                   f"leading steps: {at(few)} at S = {few}, {at(many)} at S = {many}.")
    return out


def guidance_claim(results: dict) -> list[str]:
    grid = {(e["guidance"], e["rescale"]): e for e in results["over_seeds"] if e["kind"] == "guidance_grid"}
    if not grid:
        return []
    w = max(w for w, _ in grid)
    phis = sorted(p for g, p in grid if g == w)
    unguided = grid[min(g for g, _ in grid), phis[0]]

    def across(key: str, digits: int = 2, scale: float = 1) -> str:
        return " / ".join(num(grid[w, p], key, digits, scale) for p in phis)

    return [f"**Rescaled guidance (Fig. 6).** At w = {w:g} with φ = {' / '.join(f'{p:g}' for p in phis)}: clipped pixels "
            f"(%) {across('clip_fraction', 1, 100)}; per-image contrast {across('contrast_ratio')} of the data's; class "
            f"accuracy {across(YARDSTICK + 'class_accuracy')}; brightness spread {across('spread_ratio')} (unguided: "
            f"{num(unguided, YARDSTICK + 'class_accuracy')} class accuracy, {num(unguided, 'clip_fraction', 1, 100)} % clipped, spread "
            f"{num(unguided)})."]


def finetune_claim(results: dict, steps: int) -> list[str]:
    groups = [e for e in results["over_seeds"] if e["kind"] == "finetune"]
    tuned = sorted((e["finetune_steps"], e) for e in groups if e["model"] == "finetuned")
    if not tuned:
        return []
    scratch = {e["finetune_steps"]: e for e in groups if e["model"] == "scratch"}
    return ["**Fine-tuning (§4).** The baseline fine-tuned to zero SNR + v spreads "
            + ", ".join(f"{num(e)} after {n} steps" for n, e in tuned)
            + f" (before: {num(find(results, 'trained', model='baseline', spacing='trailing', steps=steps))} with "
            "trailing steps); the fixed model trained from scratch for the same total spreads "
            + ", ".join(num(scratch.get(n)) for n, _ in tuned) + "."]


def first_step_claim(results: dict) -> list[str]:
    trained = [e for e in results["over_seeds"] if e["kind"] == "first_step" and not e["model"].startswith("ideal")]
    exact = find(results, "first_step", model="ideal_fixed")
    if not (trained and exact):
        return []
    widest = max(trained, key=lambda e: e["x0_brightness_spread"]["mean"])
    farthest = max(trained, key=lambda e: e["rms_to_class_mean"]["mean"])
    return [f"**The first step (§5.2).** At t = T the fixed model's x̂0 varies over noise draws by "
            f"{num(widest, 'x0_brightness_spread', 3)} of the data's brightness spread at most (class "
            f"{widest.get('label', 'all')}), and lies {num(farthest, 'rms_to_class_mean', 3)} (RMS) from its class mean at "
            f"most, where the data's images lie {min(e['rms_of_data_to_class_mean']['mean'] for e in trained):.3f} or more "
            f"from it; the ideal denoiser gives the data mean to {exact['rms_to_class_mean']['mean']:.1e}."]


def offset_noise_claim(results: dict, steps: int) -> list[str]:
    offsets = [e["x_T_offset"] for e in results["over_seeds"] if e["model"] == "offset_noise" and e.get("x_T_offset")]
    if not offsets:
        return []

    def trained(offset: float) -> str:
        return " / ".join(num(find(results, "trained", offset, model="offset_noise", spacing=sp, steps=steps))
                          for sp in ("leading", "trailing"))

    def exact(matched: bool) -> str:
        return " / ".join(ideal(results, "ideal_offset_noise", sp, steps, matched) for sp in ("leading", "trailing"))

    return [f"**Offset noise (§5.4).** Spread with leading / trailing steps, x_T from N(0, I): trained "
            f"{trained(0.0)}, ideal denoiser {exact(False)}; x_T with the trained offset: "
            f"trained {trained(offsets[0])}, ideal denoiser {exact(True)}."]


def quality_claim(results: dict) -> list[str]:
    quality = [e for e in results["over_seeds"] if e["kind"] == "quality" and YARDSTICK + "fd_ratio" in e]  # the yardstick: shapes only
    if not quality:
        return []
    s = max(e["steps"] for e in quality)

    def q(model: str, guided: bool, key: str, digits: int) -> str:
        return num(next(e for e in quality if e["model"] == model and e["steps"] == s and (e["guidance"] > 1) == guided),
                   key, digits)

    return [f"**Quality (Table 3), S = {s}.** Feature-distance ratio, baseline against fixed: "
            f"{q('baseline', False, YARDSTICK + 'fd_ratio', 1)} against {q('fixed', False, YARDSTICK + 'fd_ratio', 1)} unguided, "
            f"{q('baseline', True, YARDSTICK + 'fd_ratio', 1)} against {q('fixed', True, YARDSTICK + 'fd_ratio', 1)} guided; class accuracy "
            f"{q('baseline', False, YARDSTICK + 'class_accuracy', 2)} against {q('fixed', False, YARDSTICK + 'class_accuracy', 2)} unguided, "
            f"{q('baseline', True, YARDSTICK + 'class_accuracy', 2)} against {q('fixed', True, YARDSTICK + 'class_accuracy', 2)} guided."]


def leak_claim(results: dict) -> list[str]:
    """The leak where it acts (the first step's gain), the leak put back at sampling time, and the sampler's
    map from noise to image, which every row shares."""
    leak = {e["model"]: e for e in results.get("leak", [])}
    if not leak:
        return []
    ideal, trained = ("ideal_baseline", "ideal_fixed", "ideal_flow"), ("baseline", "fixed", "offset_noise", "flow")

    def each(models: tuple[str, ...], key: str, digits: int = 2, interval: bool = False) -> str:
        def one(m: str) -> str:
            e = leak.get(m)
            if e is None or key not in e:
                return "?"
            return num(e, key, digits) + (f" (seed 0: [{e[key + '_low']:.2f}, {e[key + '_high']:.2f}])" if interval else "")
        return " / ".join(one(m) for m in models)

    sentences = [
        "**The leak, where it acts (§3).** At t = T the correlation of x̂0's channel means with x_T's (with 95% "
        f"intervals) is, for the ideal denoiser, flawed / zero SNR / flow {each(ideal, 'r_first', interval=True)} (0 by "
        "construction on the zero-SNR paths, where the ideal x̂0 is the data mean whatever x_T is); for the trained "
        f"baseline / fixed / offset noise / flow {each(trained, 'r_first', interval=True)}."]
    if "gain" in leak.get("ideal_baseline", {}):
        sentences[0] += (
            " From x_T drawn as in training (√ᾱ_T of a held-out image plus noise), the slope of x̂0's mean brightness "
            f"on x_T's (with 95% intervals): ideal denoiser {each(ideal, 'gain', interval=True)} (predicted from the "
            f"data alone: {leak['ideal_baseline']['predicted_gain']:.2f} / 0 / 0, the zeros by construction); trained "
            f"{each(trained, 'gain', interval=True)}. "
            f"The data also predicts the squeeze: the std of x_T's mean brightness from pure noise is "
            f"{leak['ideal_baseline']['predicted_squeeze']:.2f} of its std in training, and the flawed schedule's first step alone would allow a spread of "
            f"{leak['ideal_baseline']['leak_only_spread']:.2f}; its samples (trailing steps, δ = 0) spread "
            f"{each(('ideal_baseline', 'baseline', 'offset_noise'), 'spread_ratio')} (ideal denoiser / trained baseline / "
            "offset noise).")
    if "leak_intervention.spread_ratio" in leak.get("ideal_baseline", {}):
        still = [m for m in ("ideal_fixed", "ideal_flow", "fixed", "flow") if m in leak
                 and abs(leak[m]["leak_intervention.spread_ratio"]["mean"] - leak[m]["spread_ratio"]["mean"]) < 5e-4]
        flawed = ("ideal_baseline", "baseline", "offset_noise")
        sentences.append(
            "**The leak put back at sampling time (Everaert et al.).** From x_T = √ᾱ_T·signal + √(1 − ᾱ_T)·ε, the "
            f"flawed schedule's spread (ideal denoiser / trained baseline / offset noise) goes from {each(flawed, 'spread_ratio')} "
            f"to {each(flawed, 'leak_intervention.spread_ratio')} when the signal is a held-out image, whose brightness "
            f"the sample then follows (r {each(flawed, 'leak_intervention.r_x0')}), and to "
            f"{each(flawed, 'leak_everaert.spread_ratio')} when it is channel means drawn from the data's statistics, "
            "with no image. " + (f"The zero-SNR and flow rows ({', '.join(still)}) do not move (to three decimals): their x_T is "
                                 "the same noise (ᾱ_T = 0)." if still else ""))
    sentences.append(
        "**The sampler's map from noise to image.** The sample's channel means follow x_T's in every row (r of the "
        f"sample, ideal denoiser flawed / zero SNR / flow {each(ideal, 'r')}, trained baseline / fixed / offset noise / "
        f"flow {each(trained, 'r')}), and shifting x_T's means by δ (in units of their own std, 1/√(HW)) moves the "
        f"brightness by {each(ideal, 'slope', 3)} and {each(trained, 'slope', 3)} per unit δ: a deterministic sampler "
        "carries x_T's mean into the image, leak or not, so these numbers measure that map, not the leak.")
    return sentences


def flow_claim(results: dict, steps: int) -> list[str]:
    flow = find(results, "trained", model="flow", spacing="trailing", steps=steps)
    if flow is None:
        return []
    counts = sorted(e["steps"] for e in results["over_seeds"] if e["kind"] == "steps" and e["model"] == "flow"
                    and e["spacing"] == "trailing")
    few = [n for n in (5, 10, 25, 50) if n in counts]

    def sweep(spacing: str, key: str, digits: int) -> str:
        return " / ".join(num(find(results, "steps", model="flow", spacing=spacing, steps=n), key, digits) for n in few)

    return [f"**Rectified flow (SD3).** Trained with {steps} trailing steps it spreads {num(flow)} of the data's "
            f"brightness (ideal denoiser of its path {ideal(results, 'ideal_flow', 'trailing', steps)}; fixed "
            f"{num(find(results, 'trained', model='fixed', spacing='trailing', steps=steps))}, baseline with leading steps "
            f"{num(find(results, 'trained', model='baseline', spacing='leading', steps=steps))}), W1 {num(flow, 'w1', 3)}."
            + (f" At S = {' / '.join(map(str, few))}: spread {sweep('trailing', 'spread_ratio', 2)} with trailing steps and "
               f"{sweep('leading', 'spread_ratio', 2)} with leading ones; FD ratio {sweep('trailing', YARDSTICK + 'fd_ratio', 1)}, "
               f"class accuracy {sweep('trailing', YARDSTICK + 'class_accuracy', 2)} (trailing)." if few else "")]


def sentences(results: dict) -> list[str]:
    """One sentence per claim that the results hold (a part not run says nothing)."""
    steps = results["preset"]["step_counts"][0]
    return (brightness_claim(results, steps) + steps_claim(results) + guidance_claim(results)
            + finetune_claim(results, steps) + first_step_claim(results) + offset_noise_claim(results, steps)
            + quality_claim(results) + flow_claim(results, steps) + leak_claim(results))


def table(results: dict) -> str:
    """The brightness rows in one table: the ideal rows, and the trained rows as mean ± std over seeds."""
    lines = [[f"ideal denoiser: {label(r)}", f"{r['spacing']} {r['steps']}", f"{r['spread_ratio']:.2f}", f"{r['w1']:.3f}",
              f"{r['frac_dark']:.3f}", f"{r['frac_bright']:.3f}", f"{r['hf_ratio']:.2f}"]
             for r in results["rows"] if r["kind"] == "ideal"]
    lines += [[f"trained: {label(e)}" + (f" ({e['seeds']} seeds)" if e["seeds"] > 1 else ""), f"{e['spacing']} {e['steps']}",
               num(e, "spread_ratio", 2), num(e, "w1", 3), num(e, "frac_dark", 3), num(e, "frac_bright", 3), num(e, "hf_ratio", 2)]
              for e in results["over_seeds"] if e["kind"] == "trained"]
    return markdown(["row", "spacing, steps", "spread", "W1", "< 0.1", "> 0.9", "HF ratio"], lines)


HEADLINE = [("ideal denoiser", "ideal_baseline", "flawed schedule (SD's scaled_linear)", "leading"),
            ("ideal denoiser", "ideal_fixed", "zero terminal SNR", "trailing"),
            ("trained", "v_only", "flawed schedule, v-prediction", "leading"),
            ("trained", "fixed", "zero SNR, v-prediction (the paper's fixes)", "trailing"),
            ("trained", "flow", "rectified flow (SD3)", "trailing")]


def headline(results: dict) -> str:
    """The README's small table: the ideal denoiser of each schedule, then trained rows that the
    experiment's rule calls converged (HF ratio < HF_CONVERGED), as mean ± std over training seeds; under it
    a sentence each on rectified flow and on the leak."""
    steps = results["preset"]["step_counts"][0]
    lines = []
    for kind, model, title, spacing in HEADLINE:
        if kind == "ideal denoiser":
            r = next((r for r in results["rows"] if r["kind"] == "ideal" and r["model"] == model and r["spacing"] == spacing
                      and r["steps"] == steps and not r.get("x_T_offset")), None)
            cells = None if r is None else [f"{r['spread_ratio']:.2f}", f"{r['frac_dark']:.2f} / {r['frac_bright']:.2f}",
                                            f"{r['hf_ratio']:.2f}"]
        else:
            e = find(results, "trained", model=model, spacing=spacing, steps=steps)
            cells = None if e is None or e["hf_ratio"]["mean"] >= HF_CONVERGED else [
                num(e), f"{num(e, 'frac_dark')} / {num(e, 'frac_bright')}", num(e, "hf_ratio")]
        if cells:
            lines.append([kind, title, f"{spacing} {steps}", *cells])
    data = results["data"]
    columns = ["- **brightness spread**: the standard deviation of the samples' per-image mean brightness over the "
               "data's; 1 is as varied as the data.",
               "- **images < 0.1 / > 0.9**: the share of very dark and of very bright images.",
               "- **HF ratio**: the samples' mean |image − its 3×3 box blur| over the data's; 1 is as smooth as the "
               f"data, and a trained row is shown only below {HF_CONVERGED:g}, converged enough for its brightness to count."]
    eps = find(results, "trained", model="baseline", spacing="leading", steps=steps)
    if eps is not None and eps["hf_ratio"]["mean"] >= HF_CONVERGED:
        columns[-1] += (f" Stable Diffusion's own recipe (ε-prediction) reads {num(eps, 'hf_ratio')} at this budget, so the "
                        "flawed schedule's row is its v-prediction twin, whose network differs from the fixed one's in the "
                        "schedule alone.")
    return markdown(["model", "schedule", "steps", "brightness spread (data: 1)", f"images < 0.1 / > 0.9 (data: "
                     f"{data['frac_dark']:.2f} / {data['frac_bright']:.2f})", "HF ratio (data: 1)"], lines) \
        + "\n\n" + "\n".join(columns) \
        + "".join(f"\n\n{s}" for s in headline_flow(results, steps) + headline_leak(results))


def headline_flow(results: dict, steps: int) -> list[str]:
    """Under the README's table: whether rectified flow needs trailing steps (fix 3), read from its rows."""
    flow, fixed = ([find(results, "trained", model=model, spacing=spacing, steps=steps) for spacing in ("leading", "trailing")]
                   for model in ("flow", "fixed"))
    if None in flow + fixed:
        return []
    leading, trailing = flow
    gap = trailing["spread_ratio"]["mean"] - leading["spread_ratio"]["mean"]
    needs = gap > 2 * max(leading["spread_ratio"]["std"], trailing["spread_ratio"]["std"], 0.01)
    return [f"Rectified flow (Stable Diffusion 3's path) reaches zero SNR by construction. With {steps} leading steps, "
            f"which skip its last timestep, it spreads {num(leading)} of the data's brightness, against {num(trailing)} "
            f"with trailing ones (the zero-SNR v model: {num(fixed[0])} against {num(fixed[1])}): of the four fixes, "
            + ("it still needs the trailing steps." if needs else "the step spacing makes no difference to it here.")]


def headline_leak(results: dict) -> list[str]:
    """Under the README's table: the leak measured where it acts, the first step's gain, and what putting the
    leak back at sampling time does to the flawed model's spread."""
    leak = {e["model"]: e for e in results.get("leak", [])}
    if not all("gain" in leak.get(m, {}) for m in ("ideal_baseline", "baseline", "fixed")):
        return []
    ideal, eps, fixed = leak["ideal_baseline"], leak["baseline"], leak["fixed"]
    text = ("The leak, measured where it acts: at t = T, with x_T drawn as in training, the slope of x̂0's mean "
            f"brightness on x_T's is {num(ideal, 'gain')} for the flawed schedule's ideal denoiser (predicted from the "
            f"data alone: {ideal['predicted_gain']:.2f}), {num(eps, 'gain')} for the trained ε baseline and "
            f"{num(fixed, 'gain')} for the trained zero-SNR model.")
    if "leak_intervention.spread_ratio" in eps and "leak_intervention.spread_ratio" in fixed:
        text += (" Sampled with the leak it was trained on (x_T holding √ᾱ_T of a held-out image), the ε baseline's "
                 f"spread goes from {num(eps)} to {num(eps, 'leak_intervention.spread_ratio')}, and with a leak drawn from "
                 f"the data's statistics alone (Everaert et al.) to {num(eps, 'leak_everaert.spread_ratio')}; the zero-SNR "
                 f"model's stays at {num(fixed, 'leak_intervention.spread_ratio')} (docs/brightness.md).")
    return [text]


def squeeze_by_resolution(runs: list[dict]) -> list[str]:
    """The squeeze the data predicts against the one measured, at each resolution of `runs`: the noise in x_T's
    mean brightness shrinks as 1/√(HW) and the signal's does not, so the leak, and the squeeze, grow with HW.
    The verdict compares the direction of the first-step-only spread with that of the ideal denoiser's
    (the trained baseline's is shown beside it)."""
    leaks = sorted((r["preset"]["image_size"], {e["model"]: e for e in r.get("leak", [])}) for r in runs)
    leaks = [(px, leak) for px, leak in leaks if "predicted_squeeze" in leak.get("ideal_baseline", {})]
    if len(leaks) < 2:
        return []

    def listed(values: list[float]) -> str:
        return " / ".join(f"{x:.2f}" for x in values)

    def spread_at_each_size(model: str) -> str:
        return " / ".join(num(leak.get(model), "spread_ratio") for _, leak in leaks)

    x_T_std_ratio = [leak["ideal_baseline"]["predicted_squeeze"] for _, leak in leaks]
    leak_only = [leak["ideal_baseline"]["leak_only_spread"] for _, leak in leaks]
    measured = [leak["ideal_baseline"]["spread_ratio"]["mean"] for _, leak in leaks]
    shrinks = [all(b < a for a, b in zip(values, values[1:])) for values in (leak_only, measured)]
    return [f"**The squeeze by resolution (§3).** At {' / '.join(str(px) for px, _ in leaks)} px the data predicts "
            f"x_T's mean brightness, drawn from pure noise, to spread {listed(x_T_std_ratio)} of its spread in training "
            f"and the flawed schedule's first step alone to allow a spread of {listed(leak_only)}; the samples spread "
            f"{spread_at_each_size('ideal_baseline')} (ideal denoiser) and {spread_at_each_size('baseline')} (trained "
            "baseline), trailing steps, δ = 0: "
            + ("the squeeze grows with resolution, as the prediction says (in direction: the later steps add range to "
               "the first step's)." if all(shrinks) else
               "the measured squeeze does not follow the prediction across resolutions.")]


def block(results: dict, others: tuple[dict, ...] = ()) -> str:
    """The page's block: the table and the sentences, between the markers; then, for the same experiment at
    other resolutions, the squeeze beside this one's and their leak sentences."""
    lines = sentences(results) + squeeze_by_resolution([results, *others])
    for other in others:
        lines += [f"At {other['preset']['image_size']} px: {s}" for s in leak_claim(other)]
    return "\n".join([BEGIN, table(results), "", *(f"- {s}" for s in lines), END])


def replace_between(path: Path, begin: str, end: str, text: str) -> None:
    """Put `text` between the markers `begin` and `end` of the page at `path`."""
    page = path.read_text()
    before, rest = page.split(begin, 1)
    path.write_text(before + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main() -> int:
    results, *others = [json.loads(Path(arg).read_text()) for arg in sys.argv[1:] if arg != "--write"]
    if "--write" not in sys.argv:
        print(block(results, tuple(others)))
        return 0
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "brightness.md").read_text()
    (root / "docs" / "brightness.md").write_text(page[:page.index(BEGIN)] + block(results, tuple(others))
                                                 + page[page.index(END) + len(END):])
    replace_between(root / "README.md", "<!-- headline:begin -->", "<!-- headline:end -->", headline(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
