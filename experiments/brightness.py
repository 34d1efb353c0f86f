"""The paper's brightness experiment and its other claims, at sizes for a CPU (shapes16, shapes32) or a GPU.

    python -m experiments.brightness --ideal-only      # ideal-denoiser rows only
    python -m experiments.brightness                   # everything (--preset shapes16: 16 px, 3 training seeds)
    python -m experiments.brightness --parts table steps   # some parts only (resumable: a rerun skips what is done)
    python -m experiments.brightness --preset shapes32 --ideal-only   # ideal rows at 32×32
    python -m experiments.brightness --dataset folder --data-dir DIR --image-size 32 --ideal-only   # your images

The preset sets the model size and the budget; --dataset, --data-dir and --image-size choose the
data. The reference images every row is measured against are held out (a seeded split): neither
the trained models nor the ideal denoiser ever see them.

Claim under test (paper §3, Fig. 1): with a schedule whose terminal SNR is not zero and
steps that skip the last timestep, generated images cannot be very dark or very bright;
zero terminal SNR + v-prediction + trailing steps restores the data's brightness range.

Two kinds of evidence, both on per-image mean brightness:
1. the ideal denoiser of the data (diffusion/ideal.py): no training error, so any squeeze
   of the brightness range comes from the schedule and the step spacing alone;
2. trained models, same architecture, data and budget, each at several training seeds (--seeds):
   the baseline (scaled_linear, ε), v_only (the same flawed schedule, v-prediction), fixed (zero
   SNR, v), fixed_x0 (zero SNR, x0) and offset noise (baseline + 0.1, sampled
   from N(0, I) and from the offset noise it was trained on); plus guidance rows on the fixed model.

The parts (`--parts`): table (the rows above), and the claims of experiments/claims.py: steps,
guidance, finetune, first_step, quality, each at every training seed; the tables and figures give
the mean ± std over seeds. Each row is a `Row` (experiments/common.py): its fields are its settings,
and its cache file under rows/ is named by them, so the command is resumable and idempotent, and a
changed setting is computed anew. Each trained model is a `python train.py` run in models/NAME/
with the reference held out (`--hold-out`). Outputs: RESULTS.md, results.json, SUMMARY.md (the findings in
sentences, experiments/summary.py) and the figures.
"""
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from cli import Parser, UsageError, add_flags, flag, pick_device, run
from data import DATASETS, hold_out, load_dataset
from evaluation.metrics import brightness
from experiments import claims
from experiments.common import (EXPERIMENT_PRESETS, HF_CONVERGED, IDEAL, MODELS, Preset, Progress, Row, Setup, finished_rows,
                                is_cached, row_metrics, run_row, train_models, YARDSTICK)
from experiments.figures import pyplot, save
from experiments.summary import block as summary_block, markdown, num
from models import unet_config

ROW_FIELDS = tuple(f.name for f in fields(Row))
TABLE_SPACINGS = ("leading", "trailing")
SUMMARY_KEYS = ("spread_ratio", "w1", "hf_ratio", "frac_dark", "frac_bright")
# The row's own numbers averaged over training seeds, against the experiment's held-out reference; the
# yardstick's (against its own generated shapes) come beside them under YARDSTICK + their name.
NUMBERS = SUMMARY_KEYS + ("contrast_ratio", "clip_fraction", "x0_brightness_spread", "rms_to_class_mean",
                          "rms_of_data_to_class_mean")


def x_T_offsets(settings: dict) -> tuple[float, ...]:
    """An offset-noise model is sampled both from N(0, I) and from the offset noise it was trained on."""
    return (0.0, settings["offset_noise"]) if settings.get("offset_noise") else (0.0,)


def ideal_rows(s: Setup) -> list[Row]:
    return [Row("ideal", name, spacing, steps, x_T_offset=offset)
            for name, settings in IDEAL.items() for offset in x_T_offsets(settings)
            for spacing in TABLE_SPACINGS for steps in s.p.step_counts]


def table_rows(s: Setup, seeds: int) -> list[Row]:
    """Every model of MODELS at every training seed (seeds beyond the first at the first step count only),
    and the fixed model under plain and rescaled guidance."""
    rows = [Row("trained", name, spacing, steps, seed, x_T_offset=offset)
            for seed in range(seeds) for name, settings in MODELS.items() for offset in x_T_offsets(settings)
            for spacing in TABLE_SPACINGS for steps in (s.p.step_counts if seed == 0 else s.p.step_counts[:1])]
    if s.labels is not None:  # guidance needs classes
        rows += [Row("guidance", "fixed", "trailing", s.p.step_counts[0], guidance=s.p.guidance, rescale=rescale)
                 for rescale in (0.0, 0.7)]
    return rows


def trained_rows(s: Setup, rows: list[Row]) -> list[dict]:
    """The table's models, trained side by side first; the guidance rows draw with the reference's classes."""
    train_models(s, rows)
    return [run_row(s, row, s.labels if row.kind == "guidance" else None) for row in rows]


class Part(NamedTuple):
    rows: Callable[[Setup, int], list[Row]]  # the part's rows at so many training seeds
    run: Callable[[Setup, list[Row]], list[dict]]  # their numbers, each computed once (its models trained first)


PARTS = {"table": Part(table_rows, trained_rows), "steps": Part(claims.steps_rows, claims.steps_sweep),
         "guidance": Part(claims.guidance_grid_rows, claims.guidance_grid),
         "finetune": Part(claims.finetune_rows, claims.finetune),
         "first_step": Part(claims.first_step_rows, claims.first_step),
         "quality": Part(claims.quality_rows, claims.quality), "leak": Part(claims.leak_rows, claims.leak)}


def over_seeds(rows: list[dict]) -> list[dict]:
    """Every row but the ideal table's grouped over training seeds: per group, the mean and standard
    deviation of each number. A group is a row's settings, all but its seed. The row's own numbers keep
    their names; the yardstick's, measured against another reference, are named YARDSTICK + key, so that
    its spread or W1 never stands in for the row's."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] not in ("ideal", "data"):
            groups.setdefault(Row(**{f: r[f] for f in ROW_FIELDS}).settings(), []).append(r)
    summary = []
    for settings, group in groups.items():
        entry = {**{k: v for k, v in settings if v is not None}, "seeds": len(group), "rows": [r["key"] for r in group]}
        numbers = [{**{k: r[k] for k in NUMBERS if k in r}, **{YARDSTICK + k: v for k, v in r.get("quality", {}).items()}}
                   for r in group]
        # the numbers every row of the group has; per-band lists stay per row
        for key in (k for k, v in numbers[0].items() if not isinstance(v, list) and all(k in n for n in numbers)):
            values = [n[key] for n in numbers]
            entry[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        summary.append(entry)
    return summary


def interval(entry: dict, key: str) -> str:
    low, high = entry.get(f"{key}_low"), entry.get(f"{key}_high")
    return "" if low is None else f"[{low:.3f}, {high:.3f}]"


def status(row: dict) -> str:
    return "ok" if row["hf_ratio"] < HF_CONVERGED else "not converged"


def section(title: str, header: list[str], lines: list[list]) -> str:
    return f"## {title}\n\n{markdown(header, lines)}\n\n"


def report(s: Setup, rows: list[dict], seconds: float, command: str, data_row: dict) -> None:
    """results.json, RESULTS.md and the figures, from every row computed so far."""
    summary, leak = over_seeds(rows), claims.leak_summary(rows)
    results = {"preset": asdict(s.p), "command": command, "seconds": seconds, "data": data_row, "rows": rows,
               "over_seeds": summary, "leak": leak}
    # Four decimals of each image's brightness are plenty, and keep the committed file small.
    compact = [{**r, "brightness": [round(v, 4) for v in r["brightness"]]} if "brightness" in r else r for r in rows]
    (s.out / "results.json").write_text(json.dumps({**results, "rows": compact}))
    table = [[r["name"], r["kind"], r.get("spacing", ""), r.get("steps", ""), f"{r['mean']:.3f}", f"{r['std']:.3f}",
              f"{r['frac_dark']:.3f}", f"{r['frac_bright']:.3f}", f"{r['spread_ratio']:.2f}", f"{r['w1']:.3f}",
              f"{r['hf_ratio']:.2f}", f"{r['clip_fraction']:.3f}", status(r) if r["kind"] != "data" else ""]
             for r in [data_row] + [r for r in rows if "mean" in r]]  # rows of samples: not the first step's
    text = (f"# Brightness experiment on `{s.p.dataset}` at {s.p.image_size}px, {s.p.num_samples} samples a row\n\n"
            f"`{command}`: this invocation took {seconds / 60:.1f} min (rows finished before are reused, not timed "
            "again). Per-image mean brightness in [0, 1]; spread = std(samples)/std(data); W1 against the data; HF "
            f"ratio = high-frequency residual against the data's (≥ {HF_CONVERGED}: not converged, so its brightness is "
            "no evidence).\n\n")
    text += section("Every row", ["row", "kind", "spacing", "steps", "mean", "std", "< 0.1", "> 0.9", "spread", "W1",
                                   "HF ratio", "clipped", "status"], table)
    trained = [e for e in summary if e["kind"] == "trained"]
    if trained and max(e["seeds"] for e in trained) > 1:
        text += section("Trained rows over training seeds (mean ± std)", ["model", "spacing", "steps", "seeds"]
                         + list(SUMMARY_KEYS), [[e["model"], e["spacing"], e["steps"], e["seeds"]]
                                                + [num(e, k, 3, missing="") for k in SUMMARY_KEYS] for e in trained])
    text += claims_tables(summary, rows)
    gains = [e for e in leak if "gain" in e]
    if gains:
        text += section("The leak where it acts: x̂0 at t = T from x_T drawn as in training (paper §3)",
                         ["model", "seeds", "slope of x̂0's mean on x_T's", "its 95% interval (seed 0)",
                          "ideal denoiser's, predicted from the data (Gaussian)", "predicted squeeze: std of x_T's mean, "
                          "sampling / training", "predicted spread of the first x̂0", "measured spread of the samples"],
                         [[e["model"], e["seeds"], num(e, "gain", 3), interval(e, "gain"), f"{e['predicted_gain']:.3f}",
                           f"{e['predicted_squeeze']:.2f}", f"{e['leak_only_spread']:.2f}", num(e, "spread_ratio", 2)]
                          for e in gains])
    if leak:
        text += section("The sampler's map from noise to image: does the sample follow x_T's mean? (trailing steps; any "
                        "deterministic sampler carries x_T's mean into the image, leak or not)",
                         ["model", "seeds", "r of x̂0 at t = T", "its 95% interval (seed 0)", "r of the sample",
                          "its 95% interval (seed 0)", "slope: brightness per unit δ", "spread at δ = 0"],
                         [[e["model"], e["seeds"], num(e, "r_first", 3), interval(e, "r_first"), num(e, "r", 3),
                           interval(e, "r"), num(e, "slope", 4), num(e, "spread_ratio", 2)] for e in leak])
    put_back = [e for e in leak if "leak_intervention.spread_ratio" in e]
    if put_back:
        text += section("The leak put back at sampling time: x_T = √ᾱ_T·signal + √(1 − ᾱ_T)·ε, the same ε as the row at "
                        "δ = 0 (signal: a held-out image, or channel means drawn from the data's, after Everaert et al.)",
                         ["model", "seeds", "spread from plain noise", "spread, a held-out image's leak",
                          "r of the sample's mean with that image's", "spread, the data's statistics' leak"],
                         [[e["model"], e["seeds"], num(e, "spread_ratio", 2), num(e, "leak_intervention.spread_ratio", 2),
                           num(e, "leak_intervention.r_x0", 2), num(e, "leak_everaert.spread_ratio", 2)] for e in put_back])
    (s.out / "RESULTS.md").write_text(text)
    (s.out / "SUMMARY.md").write_text(summary_block(results) + "\n")
    plot_histograms(s.out / "histograms.png", data_row, [r for r in rows if r["kind"] in ("ideal", "trained", "guidance")])
    if s.data is not None:  # a report rewritten from results.json has the numbers, not the images
        plot_at_a_glance(s, rows)
    claims.plot_leak(s, leak)
    claims.plot_lines(s, [e for e in summary if e["kind"] == "steps"], "steps", "sample steps S (log scale)", "steps.png",
                      "Brightness against sample steps: ideal denoiser and trained models, three spacings",
                      lambda e: f"{e['model'].replace('_', ' ')}, {e['spacing']}", log_x=True)
    claims.plot_guidance(s, [e for e in summary if e["kind"] == "guidance_grid"])
    claims.plot_lines(s, [e for e in summary if e["kind"] == "finetune"], "finetune_steps", "fine-tuning steps N",
                      "finetune.png", f"Fine-tuning the ε baseline to zero SNR + v, against the fixed model trained "
                      f"{s.p.train_steps} + N steps", lambda e: "fine-tuned baseline" if e["model"] == "finetuned"
                      else "fixed, from scratch", log_x=False)


def claims_tables(summary: list[dict], rows: list[dict]) -> str:
    """One table per claim, each line a setting with its numbers over training seeds; the first step's
    rows one by one."""
    text = ""
    parts = {
        "steps": ("Sample steps (paper Table 2, Fig. 4)", ["model", "spacing", "S"], ["model", "spacing", "steps"]),
        "guidance_grid": ("Rescaled guidance on the fixed model (paper Fig. 6)", ["w", "φ"], ["guidance", "rescale"]),
        "finetune": ("Fine-tuning the baseline to zero SNR + v (paper §4)", ["model", "fine-tuning steps", "total steps"],
                     ["model", "finetune_steps", "total_steps"]),
        "quality": ("Baseline against fixed with the yardstick (paper Table 3)", ["model", "spacing", "S", "w", "φ"],
                    ["model", "spacing", "steps", "guidance", "rescale"]),
    }
    numbers = [("spread_ratio", "spread", 2), ("w1", "W1", 3), ("hf_ratio", "HF ratio", 2), ("contrast_ratio", "contrast", 2),
               ("clip_fraction", "clipped", 3), (YARDSTICK + "class_accuracy", "class acc. (yardstick)", 3),
               (YARDSTICK + "fd_ratio", "FD ratio (yardstick)", 2)]
    for kind, (title, header, keys) in parts.items():
        chosen = [e for e in summary if e["kind"] == kind]
        if chosen:
            text += section(title, header + ["seeds"] + [label for _, label, _ in numbers],
                             [[e[k] for k in keys] + [e["seeds"]] + [num(e, k, d, missing="") for k, _, d in numbers] for e in chosen])
    first = [r for r in rows if r["kind"] == "first_step"]
    if first:
        text += section("The first step at t = T (paper §5.2)", ["row", "model", "seed", "class",
                                                                 "spread of x̂0's brightness / data's", "RMS to the class mean",
                                                                 "RMS of data to the class mean"],
                         [[r["name"], r["model"], r["seed"], "all data" if r["label"] is None else r["label"],
                           f"{r['x0_brightness_spread']:.4f}", f"{r['rms_to_class_mean']:.4f}",
                           f"{r['rms_of_data_to_class_mean']:.4f}"] for r in first])
    return text


def title_of(r: dict) -> str:
    """A row's name in words, for figures."""
    model = r["model"].replace("ideal_", "ideal denoiser, ").replace("_", " ") + (", x_T with offset" if r["x_T_offset"] else "")
    extra = f", w={r['guidance']:g}, φ={r['rescale']:g}" if r["guidance"] != 1 else ""
    return f"{model}: {r['spacing']} {r['steps']} steps{extra}"


def plot_histograms(path: Path, data_row: dict, rows: list[dict]) -> None:
    plt = pyplot()
    if plt is None or not rows:
        return
    cols = 4
    fig, axes = plt.subplots((len(rows) + cols - 1) // cols, cols, figsize=(4.2 * cols, 2.3 * ((len(rows) + cols - 1) // cols)),
                             squeeze=False, sharex=True)
    bins = torch.linspace(0, 1, 41).tolist()
    for ax, r in zip(axes.flat, rows):
        ax.hist(data_row["brightness"], bins=bins, color="lightgray", label="data (held out)")
        ax.hist(r["brightness"], bins=bins, histtype="step", lw=1.5, color="C0" if status(r) == "ok" else "C3",
                label="samples" if status(r) == "ok" else "samples (not converged)")
        ax.set_title(f"{title_of(r)}\nspread {r['spread_ratio']:.2f}", fontsize=7)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("per-image mean brightness")
    fig.suptitle("Brightness of samples against the data's")
    save(fig, path)


def plot_at_a_glance(s: Setup, rows: list[dict]) -> None:
    """The whole claim in one figure: data | the flawed schedule with leading steps | fixed with trailing steps,
    each a grid of samples sorted by brightness. The flawed schedule's model is the v-predicting one, as in the
    README's table: its network is the fixed model's but for the schedule, and it converges at this budget (the
    ε baseline's grain says it has not)."""
    plt = pyplot()
    steps = s.p.step_counts[0]
    keys = {(r["kind"], r["model"], r["spacing"], r["steps"], r["seed"], r["x_T_offset"]): r["key"] for r in rows if "key" in r}
    panels = [("held-out data", s.data[:64]),
              (f"flawed schedule (v), leading {steps} steps", keys.get(("trained", "v_only", "leading", steps, 0, 0.0))),
              (f"fixed (zero SNR, v), trailing {steps} steps", keys.get(("trained", "fixed", "trailing", steps, 0, 0.0)))]
    if plt is None or not all(p is not None for _, p in panels):
        return
    if missing := [p for _, p in panels[1:] if not (s.out / "rows" / f"{p}.pt").exists()]:
        print(f"at_a_glance.png not redrawn: the samples of {', '.join(missing)} are not in rows/")
        return
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, (label, images) in zip(axes, panels):
        images = images if isinstance(images, torch.Tensor) else torch.load(s.out / "rows" / f"{images}.pt")
        images = images[brightness(images).argsort()]
        side = int(len(images) ** 0.5)
        grid = images[:side * side].view(side, side, *images.shape[1:]).permute(0, 3, 1, 4, 2).flatten(0, 1).flatten(1, 2)
        ax.imshow(((grid + 1) / 2).clamp(0, 1).numpy())
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle("Samples sorted by brightness: the flawed schedule cannot make very dark or very bright images; the fix can")
    save(fig, s.out / "at_a_glance.png")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every flag of the experiment (cli.flag, as train.py's TrainConfig)."""

    preset: str = flag("shapes16", "the experiment's size: smoke (tests), shapes16 (16px, 3 training seeds), shapes32 "
                       "(32px, train.py's default model and budget), cifar10-gpu", choices=EXPERIMENT_PRESETS)
    ideal_only: bool = flag(False, "only the ideal-denoiser rows, the leak part's included")
    report_only: bool = flag(False, "rewrite the report (results.json's summaries, RESULTS.md, SUMMARY.md, the figures) "
                             "from the rows of OUT/results.json, sampling nothing")
    parts: tuple[str, ...] = flag(tuple(PARTS), "which parts to run (default: all)", nargs="+", choices=tuple(PARTS), type=str)
    seeds: int | None = flag(None, "training seeds of the trained rows (default: the preset's)", type=int)
    out: str | None = flag(None, "output folder (default: runs/brightness-PRESET)", type=str)
    dataset: str | None = flag(None, "the data (default: the preset's; shapes is embedded)", choices=DATASETS, type=str)
    data_dir: str | None = flag(None, "where cifar10/celeba live, or the image folder's root (one subfolder per class) "
                                "(default: the preset's)", type=str)
    image_size: int | None = flag(None, "image side in pixels (default: the preset's)", type=int)
    seed: int = flag(0, "seed of the split that holds the reference out, from the data and from every trained model "
                     "(the sampling noise is the same for every row)")


def parse_args(argv: list[str] | None = None) -> tuple[ExperimentConfig, Preset]:
    """The flags, checked, and the preset they choose with the data they ask for."""
    parser = Parser(description="Reproduce the paper's brightness experiment (ideal denoiser and trained models).")
    add_flags(parser, ExperimentConfig)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    config = ExperimentConfig(**given)
    if config.image_size is not None and config.image_size < 4:
        raise UsageError(f"--image-size must be at least 4, got {config.image_size}")
    if config.seeds is not None and config.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {config.seeds}")
    chosen = {"dataset": config.dataset, "data_dir": config.data_dir, "image_size": config.image_size}
    p = replace(EXPERIMENT_PRESETS[config.preset], **{k: v for k, v in chosen.items() if v is not None})
    try:
        unet_config(p.model, p.image_size)  # a size the preset's UNet cannot take is refused before any work
    except ValueError as e:
        raise UsageError(str(e)) from None
    return config, p


def rewrite_report(out: Path) -> None:
    """The report again from the rows that `out`/results.json holds, as the experiment would write it."""
    try:
        results = json.loads((out / "results.json").read_text())
        p = Preset(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["preset"].items()})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{out / 'results.json'} cannot be read back ({type(e).__name__}: {e})") from None
    s = Setup(out, p, None, None, None, torch.device("cpu"))
    report(s, results["rows"], results["seconds"], results["command"], results["data"])


def main() -> int:
    args, p = parse_args()
    out = Path(args.out or f"runs/brightness-{args.preset}" + (f"-{args.dataset}" if args.dataset else ""))
    if args.report_only:
        rewrite_report(out)
        print(f"wrote {out / 'RESULTS.md'}")
        return 0
    for sub in ("rows", "grids", "models"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    tic = time.perf_counter()
    dataset = load_dataset(p.dataset, p.data_dir, p.image_size, seed=args.seed)
    # The reference is held out from everything that learns; a small dataset gives each part half at most.
    num_reference = min(p.num_samples, len(dataset) // 2)
    reference, train_set = hold_out(dataset, num_reference, args.seed)
    p = replace(p, num_samples=num_reference, ideal_data=min(p.ideal_data, len(train_set)))
    data = torch.stack([image for image, _ in reference])
    classes = len(dataset.classes)
    s = Setup(out, p, data, torch.arange(len(data)) % classes if classes else None,
              torch.stack([train_set[i][0] for i in range(p.ideal_data)]), pick_device("auto"), split_seed=args.seed,
              finished=finished_rows(out))
    print(f"{len(dataset)} {p.dataset} images at {p.image_size}px: {num_reference} held out as the reference, "
          f"{p.ideal_data} known to the ideal denoiser, {len(train_set)} to train on")
    # --ideal-only: the ideal-denoiser rows of the table and of the leak part
    seeds, parts = (0, ("leak",)) if args.ideal_only else (args.seeds or p.seeds, args.parts)
    ideal, plans = ideal_rows(s), {part: PARTS[part].rows(s, seeds) for part in parts}
    every = ideal + [row for rows in plans.values() for row in rows]
    s.progress = Progress(total=len(every), to_compute=sum(not is_cached(s, row) for row in every), tic=tic)
    print(f"{s.progress.to_compute} of {s.progress.total} rows to compute")
    s.progress.part = "ideal"
    rows = [run_row(s, row) for row in ideal]
    for i, (part, planned) in enumerate(plans.items(), 1):
        s.progress.part = f"part {i} of {len(plans)}, {part}"
        print(s.progress.line())
        rows += PARTS[part].run(s, planned)
    command = " ".join(["python -m experiments.brightness", *sys.argv[1:]])
    report(s, rows, time.perf_counter() - tic, command, {"name": "data", "kind": "data", **row_metrics(data, data)})
    print(f"wrote {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    run(main)
