"""The paper's brightness experiment and its other claims, on the embedded shapes (or your images).

    python -m experiments.brightness --preset headline --page README.md   # the README's figure and table
    python -m experiments.brightness --page docs/results.md               # every claim, 3 training seeds
    python -m experiments.brightness --parts table steps                  # some parts only

Every row draws samples with the same noise and measures their per-image brightness against held-out images, from
the ideal denoiser of the data (no training error: what squeezes its brightness is the schedule and the steps) or
from small UNets trained by `python train.py` at several seeds; each row is computed once, into WORK/rows.jsonl.
"""
import json
import time
from collections import namedtuple
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import mean

import torch
from torch import Tensor

from cli import Parser, UsageError, amp_dtype, pick_device, run
from data import DATASETS, hold_out, load_dataset
from diffusion import (Guidance, IdealDenoiser, SamplingSettings, Schedule, flow_schedule, get_timesteps, make_schedule,
                       predict_x0_eps, sample_in_batches, spacing_offset)
from evaluation.metrics import brightness, first_step_gain, leak_from_statistics, leak_prediction, leaky_x_T, row_metrics
from evaluation.yardstick import shapes_quality
from experiments.common import (EARLIER_RECIPE, Results, Row, command, continue_run, markdown, matches, mean_std,
                                publish, pyplot, save, seeds_of, side_by_side, train)
from models import unet_config
from models.checkpoint import checkpoint_schedule

# The trained models: Stable Diffusion's recipe, then one change at a time, and rectified flow (SD3).
MODELS = {
    "baseline": dict(zero_snr=False, prediction="eps"),  # Stable Diffusion's recipe
    "v_only": dict(zero_snr=False, prediction="v"),  # the flawed schedule with v-prediction
    "fixed": dict(zero_snr=True, prediction="v"),  # the paper's fixes: train.py's default
    "fixed_x0": dict(zero_snr=True, prediction="x0"),
    "offset_noise": dict(zero_snr=False, prediction="eps", offset_noise=0.1),  # the older workaround
    "flow": dict(objective="flow"),  # zero terminal SNR by construction
}
# The ideal denoiser of each path: ε or v makes no difference to an exact model; offset noise changes its noise.
IDEAL = {"ideal_baseline": dict(zero_snr=False), "ideal_fixed": dict(zero_snr=True),
         "ideal_offset_noise": dict(zero_snr=False, offset_noise=0.1), "ideal_flow": dict(objective="flow")}
WORDS = {"ideal_baseline": "flawed schedule (Stable Diffusion's)", "ideal_fixed": "zero terminal SNR (the paper)",
         "ideal_offset_noise": "flawed schedule, offset noise 0.1", "ideal_flow": "rectified flow (SD3)",
         "baseline": "flawed schedule, ε (Stable Diffusion)", "v_only": "flawed schedule, v",
         "fixed": "zero terminal SNR, v (the paper)", "fixed_x0": "zero terminal SNR, x0",
         "offset_noise": "flawed schedule, ε, offset noise 0.1", "flow": "rectified flow (SD3)"}
NAMES = {m: ("ideal denoiser: " if m in IDEAL else "trained: ") + words for m, words in WORDS.items()}  # in the tables
HF_CONVERGED = 2.0  # at twice the data's high-frequency residual a row is still noisy: its brightness is no evidence


@dataclass(frozen=True)
class Preset:
    """The size of one run: data, UNet (a `models.PRESETS` name), budget, and which rows."""

    dataset: str = "shapes"
    image_size: int = 16
    unet: str = "tiny"
    num_samples: int = 1000  # per row, and the held-out images they are measured against
    ideal_data: int = 1000  # images the ideal denoiser knows
    train_steps: int = 2000
    batch_size: int = 64
    seeds: int = 3  # training seeds of every trained model
    models: tuple[str, ...] = tuple(MODELS)
    ideal: tuple[str, ...] = tuple(IDEAL)
    parts: tuple[str, ...] | None = None  # which parts (None: every one, in the paper's order)
    steps: int = 25  # sampling steps of every row but the steps sweep
    sweep_steps: tuple[int, ...] = (1, 2, 3, 5, 10, 25, 50)
    guidance: float = 6.0  # a weight high enough to over-expose
    guidance_weights: tuple[float, ...] = (1, 2, 4, 7.5)
    guidance_rescales: tuple[float, ...] = (0, 0.25, 0.5, 0.7, 0.75, 1)
    finetune_steps: tuple[int, ...] = (100, 300, 1000)
    first_step_draws: int = 256  # noise draws per class at t = T
    quality_steps: tuple[int, ...] = (25, 50)
    data_dir: str = "datasets"


PRESETS = {
    "headline": Preset(seeds=1, models=("v_only", "fixed"), ideal=("ideal_baseline", "ideal_fixed"), parts=("table",)),
    "shapes16": Preset(),
    "smoke": Preset(num_samples=64, ideal_data=64, train_steps=4, batch_size=8, seeds=2, steps=5, sweep_steps=(1, 3),
                    guidance_weights=(1, 4), guidance_rescales=(0, 0.7), finetune_steps=(2, 4), first_step_draws=8,
                    quality_steps=(5,)),
    "cifar10-gpu": Preset(dataset="cifar10", image_size=32, unet="cifar10", num_samples=10_000, ideal_data=10_000,
                          train_steps=200_000, batch_size=128, seeds=1, finetune_steps=(1000, 5000, 20_000)),
}


@dataclass
class Setup:
    """One invocation: the preset, the held-out reference, the images the ideal denoiser knows, the results."""

    p: Preset
    work: Path  # the trained models and rows.jsonl
    data: Tensor  # the held-out reference
    labels: Tensor | None  # a class per sample, in turn (None: the data has no classes)
    known: Tensor
    device: torch.device
    split_seed: int
    results: Results
    models: dict = field(default_factory=dict)  # (name, seed) -> (EMA model, checkpoint)


def train_settings(s: Setup, name: str, seed: int) -> dict:
    p = s.p
    settings = {"dataset": p.dataset, "image_size": p.image_size, "model": p.unet, "batch_size": p.batch_size,
                "steps": p.train_steps, "seed": seed, "hold_out": len(s.data), "hold_out_seed": s.split_seed,
                "ckpt_every": max(p.train_steps // 4, min(p.train_steps, 100)), **EARLIER_RECIPE, **MODELS[name]}
    return settings if p.dataset == "shapes" else {**settings, "data_dir": p.data_dir}


def run_dir(s: Setup, name: str, seed: int) -> Path:
    return s.work / "models" / (name + (f"_seed{seed}" if seed else ""))


def trained(s: Setup, name: str, seed: int, threads: int | None = None) -> tuple[torch.nn.Module, dict]:
    if (name, seed) not in s.models:
        s.models[name, seed] = train(run_dir(s, name, seed), train_settings(s, name, seed), threads)
    return s.models[name, seed]


def train_all(s: Setup, rows: list[Row]) -> None:
    """The models these rows need and whose numbers are not known yet, trained side by side first."""
    needed = sorted({(r.model, r.seed) for r in rows if r.model in MODELS and r.name not in s.results.rows})
    side_by_side([lambda threads, n=n, seed=seed: trained(s, n, seed, threads) for n, seed in needed], s.device)


def row_model(s: Setup, row: Row) -> tuple[torch.nn.Module, Schedule, str]:
    """The row's model, its schedule and what it predicts."""
    if row.model in IDEAL:
        kind = IDEAL[row.model]
        schedule = flow_schedule() if "objective" in kind else make_schedule("scaled_linear", zero_snr=kind["zero_snr"])
        return IdealDenoiser(s.known, schedule, "v", offset_noise=kind.get("offset_noise", 0.0)), schedule, "v"
    model, state = trained(s, row.model, row.seed)
    return model, checkpoint_schedule(state), state["config"]["prediction"]


def sampled(s: Setup, row: Row, labels: Tensor | None = None, model=None, x_T: Tensor | None = None) -> dict:
    """The row's samples (the same noise for every row, seed 0, unless `x_T` is given) and their numbers."""
    def compute() -> dict:
        tic = time.perf_counter()
        net, schedule, prediction = model or row_model(s, row)
        timesteps = get_timesteps(schedule.num_train_steps, row.steps, row.spacing, spacing_offset(row.spacing))
        settings = SamplingSettings(timesteps, guidance=Guidance(row.guidance, row.rescale), offset_noise=row.x_T_offset,
                                    batch_size=500, amp_dtype=amp_dtype(s.device))
        images = sample_in_batches(net.to(s.device), (len(s.data), *s.data.shape[1:]), schedule, prediction, settings,
                                   labels=labels, x_T=x_T, device=s.device)
        numbers = row_metrics(images, s.data)
        if row.kind == "quality" and s.p.dataset == "shapes":  # the frozen shapes classifier's measures
            numbers["quality"] = shapes_quality(images, labels)
        return {**numbers, "seconds": time.perf_counter() - tic}

    return s.results.get(row, compute)


def sample_part(s: Setup, rows: list[Row]) -> None:
    """Draw each row: the brightness table's and the ideal denoisers' without a class, the others' classes in turn."""
    train_all(s, rows)
    for row in rows:
        sampled(s, row, None if row.kind in ("ideal", "trained") or row.model in IDEAL else s.labels)


# Part 1, Fig. 1-3: brightness of every model, leading against trailing steps (and offset noise, §5.4).
def table_rows(s: Setup) -> list[Row]:
    offsets = lambda settings: (0.0, settings["offset_noise"]) if "offset_noise" in settings else (0.0,)  # noqa: E731
    return ([Row("ideal", name, spacing, s.p.steps, x_T_offset=o)
             for name in s.p.ideal for o in offsets(IDEAL[name]) for spacing in ("leading", "trailing")]
            + [Row("trained", name, spacing, s.p.steps, seed, x_T_offset=o) for seed in range(s.p.seeds)
               for name in s.p.models for o in offsets(MODELS[name]) for spacing in ("leading", "trailing")])


def brightness_table(results: dict) -> str:
    rows, lines = results["rows"], []
    for r in (r for kind in ("ideal", "trained") for r in rows if r["kind"] == kind and r["seed"] == 0):
        settings = {k: r[k] for k in ("kind", "model", "spacing", "steps", "x_T_offset")}
        spread, w1, dark, bright, hf = (seeds_of(rows, k, **settings)
                                        for k in ("spread_ratio", "w1", "frac_dark", "frac_bright", "hf_ratio"))
        lines.append([NAMES[r["model"]] + (", started from its offset noise" if r["x_T_offset"] else ""),
                      f"{r['spacing']} {r['steps']}", len(w1), mean_std(spread), mean_std(w1, 3),
                      f"{mean_std(dark)} / {mean_std(bright)}",
                      mean_std(hf) + (" (noisy)" if mean(hf) >= HF_CONVERGED else "")])
    data = results["data"]
    return markdown(["model", "steps", "seeds", "brightness spread", "W1", "images < 0.1 / > 0.9", "HF ratio"], lines) + (
        f"\n\nHeld-out data: {data['frac_dark']:.2f} / {data['frac_bright']:.2f} images below 0.1 / above 0.9.")


# Part 2, Table 2 and Fig. 4: leading, linspace and trailing steps against the number of steps S.
def steps_rows(s: Setup) -> list[Row]:
    return [Row("steps", m, spacing, n, seed)
            for m in ("ideal_baseline", "ideal_fixed", "ideal_flow", "baseline", "fixed", "flow")
            for seed in range(1 if m in IDEAL else s.p.seeds)
            for spacing in ("leading", "linspace", "trailing") for n in s.p.sweep_steps]


def steps_table(results: dict) -> str:
    rows = [r for r in results["rows"] if r["kind"] == "steps"]
    counts = sorted({r["steps"] for r in rows})
    lines = [[NAMES[m], spacing] + [mean_std(seeds_of(rows, "spread_ratio", model=m, spacing=spacing, steps=n))
                                    for n in counts]
             for m in dict.fromkeys(r["model"] for r in rows) for spacing in ("leading", "linspace", "trailing")]
    return markdown(["model", "spacing", *(f"S = {n}" for n in counts)], lines)


# Part 3, Fig. 6: classifier-free guidance with the rescale φ, on the fixed model.
def guidance_rows(s: Setup) -> list[Row]:
    return [Row("guidance_grid", "fixed", "trailing", s.p.steps, seed, guidance=w, rescale=phi) for seed in range(s.p.seeds)
            for w in s.p.guidance_weights for phi in s.p.guidance_rescales if w != 1 or phi == 0] if s.labels is not None else []


def guidance_table(results: dict) -> str:
    rows = [r for r in results["rows"] if r["kind"] == "guidance_grid"]
    lines = [[f"{w:g}", f"{phi:g}"] + [mean_std([100 * v for v in seeds_of(rows, "clip_fraction", guidance=w, rescale=phi)], 1)]
             + [mean_std(seeds_of(rows, k, guidance=w, rescale=phi)) for k in ("contrast_ratio", "spread_ratio")]
             for w, phi in dict.fromkeys((r["guidance"], r["rescale"]) for r in rows)]
    return markdown(["w", "φ", "clipped pixels (%)", "contrast (data: 1)", "brightness spread"], lines)


# Part 4, §4: the ε baseline fine-tuned to zero SNR + v for N steps, against the fixed model trained as long.
def finetune_rows(s: Setup) -> list[Row]:
    return [Row("finetune", arm, "trailing", s.p.steps, seed, finetune_steps=n) for seed in range(s.p.seeds)
            for n in s.p.finetune_steps for arm in ("finetuned", "scratch")]


def finetune_part(s: Setup, rows: list[Row]) -> None:
    """Each N continues the run of the N before it (at a constant rate, the same as training that long)."""
    counts = sorted(s.p.finetune_steps)

    def chain(arm: str, seed: int, threads: int | None) -> list:
        trained(s, "fixed" if arm == "scratch" else "baseline", seed, threads)
        runs, before = [], run_dir(s, "fixed", seed) if arm == "scratch" else None
        for n in counts:
            folder = s.work / "models" / f"{arm}_{n}{f'_seed{seed}' if seed else ''}"
            if before is None:  # the baseline's weights, trained on as the fixed model
                runs.append(train(folder, {**train_settings(s, "fixed", seed), "steps": n,
                                           "init_from": str(run_dir(s, "baseline", seed) / "checkpoint.pt")}, threads))
            else:
                runs.append(continue_run(before, folder, n if arm == "finetuned" else s.p.train_steps + n, threads))
            before = folder
        return [(model, checkpoint_schedule(state), state["config"]["prediction"]) for model, state in runs]

    needed = sorted({(r.model, r.seed) for r in rows if r.name not in s.results.rows})
    chains = {}
    side_by_side([lambda threads, arm=arm, seed=seed: chains.__setitem__((arm, seed), chain(arm, seed, threads))
                  for arm, seed in needed], s.device)
    for row in rows:  # a row known already is read back: it needs no model
        runs = chains.get((row.model, row.seed))
        sampled(s, row, model=runs[counts.index(row.finetune_steps)] if runs else None)


def finetune_table(results: dict) -> str:
    rows = [r for r in results["rows"] if r["kind"] == "finetune"]
    return markdown(["fine-tuning steps N", "brightness spread: the ε baseline fine-tuned to zero SNR + v",
                     "the fixed model, trained N steps more"],
                    [[n] + [mean_std(seeds_of(rows, "spread_ratio", model=arm, finetune_steps=n)) for arm in ("finetuned", "scratch")]
                     for n in sorted({r["finetune_steps"] for r in rows})])


# Part 5, §5.2: at t = T a zero-SNR model can only predict the (class) mean, whatever the noise.
@torch.no_grad()
def first_x0(s: Setup, row: Row, x_T: Tensor, labels: Tensor | None) -> Tensor:
    """The row's model's x̂0 at t = T, the first step of trailing spacing."""
    model, schedule, prediction = row_model(s, row)
    t = torch.full((len(x_T),), schedule.num_train_steps - 1)
    return predict_x0_eps(x_T, model(x_T, t, labels).float(), schedule.alpha_bar_at(t, x_T), prediction)[0]


def first_step_rows(s: Setup) -> list[Row]:
    label_set = sorted(set(s.labels.tolist())) if s.labels is not None else [None]
    return [Row("first_step", "fixed", seed=seed, label=c) for seed in range(s.p.seeds) for c in label_set] + [
        Row("first_step", "ideal_fixed")]


def first_step_part(s: Setup, rows: list[Row]) -> None:
    train_all(s, rows)
    n, label_set = s.p.first_step_draws, sorted({r.label for r in rows if r.model in MODELS}, key=str)

    def measure(row: Row) -> dict:
        # the same draws at every training seed, other draws per class and for the ideal denoiser
        draw = len(label_set) if row.model in IDEAL else label_set.index(row.label)
        x_T = torch.randn((n, *s.data.shape[1:]), generator=torch.Generator().manual_seed(draw))
        x0 = first_x0(s, row, x_T, None if row.label is None else torch.full((n,), row.label))
        members = s.known if row.model in IDEAL else s.data if row.label is None else s.data[s.labels == row.label]
        mean = members.mean(0)
        return {"x0_brightness_spread": brightness(x0).std().item() / brightness(s.data).std().item(),
                "rms_to_class_mean": (x0 - mean).pow(2).mean().sqrt().item(),
                "rms_of_data_to_class_mean": (members - mean).pow(2).mean().sqrt().item()}

    for row in rows:
        s.results.get(row, lambda row=row: measure(row))


def first_step_table(results: dict) -> str:
    rows = [r for r in results["rows"] if r["kind"] == "first_step"]
    keys = ("x0_brightness_spread", "rms_to_class_mean", "rms_of_data_to_class_mean")
    return markdown(["model", "class", "spread of x̂0's brightness over noise draws (data: 1)", "RMS of x̂0 to the class mean",
                     "RMS of the data to the class mean"],
                    [[NAMES[r["model"]], "all" if r["label"] is None else r["label"]]
                     + [mean_std(seeds_of(rows, k, model=r["model"], label=r["label"]), 3) for k in keys]
                     for r in rows if r["seed"] == 0])


# Part 6, Table 3: the baseline (leading steps, plain guidance) against the fixed model (trailing, rescaled).
def quality_rows(s: Setup) -> list[Row]:
    return [Row("quality", name, spacing, n, seed, guidance=w, rescale=phi if w != 1 else 0.0) for seed in range(s.p.seeds)
            for name, spacing, phi in (("baseline", "leading", 0.0), ("fixed", "trailing", 0.7))
            for n in s.p.quality_steps for w in (1.0, s.p.guidance)] if s.labels is not None else []


def quality_table(results: dict) -> str:
    rows = [r for r in results["rows"] if r["kind"] == "quality"]
    lines = []
    for r in (r for r in rows if r["seed"] == 0):
        settings = {k: r[k] for k in ("model", "spacing", "steps", "guidance", "rescale")}
        yardstick = [x["quality"] for x in rows if matches(x, **settings)]
        lines.append([WORDS[r["model"]], f"{r['spacing']} {r['steps']}", f"{r['guidance']:g}", f"{r['rescale']:g}",
                      mean_std([q["fd_ratio"] for q in yardstick], 1), mean_std([q["class_accuracy"] for q in yardstick]),
                      mean_std(seeds_of(rows, "hf_ratio", **settings)), mean_std(seeds_of(rows, "spread_ratio", **settings))])
    return markdown(["model", "steps", "w", "φ", "feature distance ratio (data: 1)", "class accuracy", "HF ratio",
                     "brightness spread"], lines)


# Part 7, §3: where the leak acts. At t = T, with x_T drawn as in training, how much does x̂0's brightness follow
# x_T's? And from pure noise, does putting the leak back into x_T give the brightness back?
def leak_rows(s: Setup) -> list[Row]:
    return [Row(kind, m, *(("trailing", s.p.steps) if kind != "first_step_gain" else ()), seed=seed)
            for m in ("ideal_baseline", "ideal_fixed", "ideal_flow", "baseline", "fixed", "offset_noise", "flow")
            for seed in range(1 if m in IDEAL else s.p.seeds)
            for kind in ("first_step_gain", "leak", "leak_intervention", "leak_everaert")]


def leak_part(s: Setup, rows: list[Row]) -> None:
    train_all(s, rows)
    x_T = torch.randn(len(s.data), *s.data.shape[1:], generator=torch.Generator().manual_seed(0))  # sampled()'s noise
    signals = {"leak_intervention": s.data, "leak_everaert": leak_from_statistics(s.known, len(s.data))}
    for row in rows:
        labels = None if row.model in IDEAL else s.labels
        if row.name in s.results.rows:
            continue
        alpha_bar_T = row_model(s, row)[1].alpha_bar[-1].item()
        if row.kind == "first_step_gain":  # x̂0 at t = T from x_T = √ᾱ_T·x0 + √(1 − ᾱ_T)·ε, x0 held out
            trained_x_T = leaky_x_T(alpha_bar_T, s.data, torch.randn(s.data.shape, generator=torch.Generator().manual_seed(1)))
            s.results.get(row, lambda: {"gain": first_step_gain(trained_x_T, first_x0(s, row, trained_x_T, labels)),
                                        "predicted": leak_prediction(s.data, alpha_bar_T)})
        else:
            sampled(s, row, labels, x_T=x_T if row.kind == "leak" else leaky_x_T(alpha_bar_T, signals[row.kind], x_T))


def leak_table(results: dict) -> str:
    rows, lines = results["rows"], []
    for r in (r for r in rows if r["kind"] == "first_step_gain" and r["seed"] == 0):
        gains = [g["gain"] for g in seeds_of(rows, "gain", kind="first_step_gain", model=r["model"])]
        predicted = r["predicted"]["exact_gain"]
        spreads = [mean_std(seeds_of(rows, "spread_ratio", kind=k, model=r["model"]))
                   for k in ("leak", "leak_intervention", "leak_everaert")]
        lines.append([NAMES[r["model"]], f"{mean_std(gains)} [{r['gain']['low']:.2f}, {r['gain']['high']:.2f}]",
                      (f"{predicted:.2f}" if predicted else "0 (ᾱ_T = 0: no leak)") if r["model"] in IDEAL else "",
                      *spreads])
    return markdown(["model", "gain of x̂0's brightness on x_T's at t = T (over seeds) [seed 0's 95% interval]",
                     "predicted from the data alone", "spread from plain noise", "with a held-out image's leak",
                     "with a leak from the data's statistics"], lines)


# One claim of the paper: its rows (Setup -> [Row]), how they are computed, its table, and the row kinds it reads.
Part = namedtuple("Part", "rows compute table kinds")
PARTS = {"table": Part(table_rows, sample_part, brightness_table, ("ideal", "trained")),
         "steps": Part(steps_rows, sample_part, steps_table, ("steps",)),
         "guidance": Part(guidance_rows, sample_part, guidance_table, ("guidance_grid",)),
         "finetune": Part(finetune_rows, finetune_part, finetune_table, ("finetune",)),
         "first_step": Part(first_step_rows, first_step_part, first_step_table, ("first_step",)),
         "quality": Part(quality_rows, sample_part, quality_table, ("quality",)),
         "leak": Part(leak_rows, leak_part, leak_table, ("first_step_gain", "leak", "leak_intervention", "leak_everaert"))}


def plot_histograms(plt, results: dict, path: Path) -> None:
    """The headline: the data's brightness, the flawed schedule's (leading steps) and zero SNR's (trailing), seed 0."""
    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    bins = torch.linspace(0, 1, 26).tolist()
    for ax, kind, (flawed, fixed) in zip(axes, ("ideal", "trained"), (("ideal_baseline", "ideal_fixed"), ("v_only", "fixed"))):
        ax.hist(results["data"]["brightness"], bins=bins, color="lightgray", label="held-out data")
        for model, spacing, color, label in ((flawed, "leading", "C3", "flawed schedule, leading steps"),
                                             (fixed, "trailing", "C0", "zero terminal SNR, trailing steps")):
            row = next(r for r in rows if matches(r, kind=kind, model=model, spacing=spacing, seed=0))
            ax.hist(row["brightness"], bins=bins, histtype="step", lw=2, color=color,
                    label=f"{label} (spread {row['spread_ratio']:.2f})")
        ax.set_title("ideal denoiser (no training error)" if kind == "ideal" else "trained UNet, v-prediction", fontsize=10)
        ax.set_xlabel("per-image mean brightness")
        ax.legend(fontsize=7, loc="upper center")
    axes[0].set_ylim(0, 1.4 * axes[0].get_ylim()[1])  # room for the legends above the bars
    save(fig, path)


def plot_steps(plt, results: dict, path: Path) -> None:
    """Brightness spread against the number of sampling steps, one line per model and spacing (mean over seeds)."""
    rows = [r for r in results["rows"] if r["kind"] == "steps"]
    counts = sorted({r["steps"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for spacing, style in (("leading", ":"), ("linspace", "--"), ("trailing", "-")):
            means = [mean(seeds_of(rows, "spread_ratio", model=model, spacing=spacing, steps=n)) for n in counts]
            ax.plot(counts, means, style, marker="o", color=f"C{i}", label=f"{model.replace('_', ' ')}, {spacing}")
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set(xlabel="sampling steps S", ylabel="brightness spread (data: 1)")
    ax.legend(fontsize=6, ncol=2)
    save(fig, path)


def report(results: dict, out: Path, page: str | None) -> None:
    """results.json, the figures, and one table per part: printed, and between the page's markers."""
    (out / "results.json").write_text(json.dumps(results))
    kinds = {r["kind"] for r in results["rows"]}  # the parts the results file holds rows of
    tables = {name: part.table(results) for name, part in PARTS.items() if kinds & set(part.kinds)}
    publish(page, tables, "brightness.")
    figures = {"table": (plot_histograms, "histograms.png"), "steps": (plot_steps, "steps.png")}
    if (drawn := tables.keys() & figures) and (plt := pyplot()):  # matplotlib only where a part has a figure
        for part in drawn:
            figures[part][0](plt, results, out / figures[part][1])


def main() -> int:
    parser = Parser(description="Reproduce the paper's brightness experiment with ideal denoisers and trained models.")
    parser.add_argument("--preset", default="shapes16", choices=PRESETS, help="the run's size: headline (the README's "
                        "figure and table, 1 training seed), shapes16 (every claim, 3 seeds), smoke (tests), cifar10-gpu")
    parser.add_argument("--parts", nargs="+", choices=PARTS, help="which parts (default: the preset's)")
    parser.add_argument("--out", help="folder of results.json and the figures (default: docs/brightness, "
                        "docs/headline for --preset headline, runs/brightness-PRESET for the others)")
    parser.add_argument("--work", help="folder of the trained models and rows.jsonl (default: runs/brightness-PRESET)")
    parser.add_argument("--page", help="also put each part's table between this page's <!-- brightness.PART:begin/end --> markers")
    parser.add_argument("--report-only", action="store_true", help="write the tables and figures from OUT/results.json")
    parser.add_argument("--dataset", choices=DATASETS, help="the data (default: the preset's; shapes is embedded)")
    parser.add_argument("--data-dir", help="where cifar10/celeba live, or the image folder's root")
    parser.add_argument("--image-size", type=int, help="image side in pixels (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split (default: 0)")
    a = parser.parse_args()
    p = replace(PRESETS[a.preset], **{k: v for k, v in {"dataset": a.dataset, "data_dir": a.data_dir,
                                                         "image_size": a.image_size}.items() if v is not None})
    p = replace(p, parts=tuple(a.parts or p.parts or PARTS))
    try:
        unet_config(p.unet, p.image_size)  # a size the UNet cannot take is refused before any work
    except ValueError as e:
        raise UsageError(f"--image-size {p.image_size}: {e}") from None
    out = Path(a.out or {"headline": "docs/headline", "shapes16": "docs/brightness"}.get(a.preset, f"runs/brightness-{a.preset}"))
    work, page = Path(a.work or f"runs/brightness-{a.preset}"), a.page
    out.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        try:
            results = json.loads((out / "results.json").read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{out / 'results.json'} cannot be read ({e})") from None
        report(results, out, page)
        return 0
    tic = time.perf_counter()
    (work / "models").mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(p.dataset, p.data_dir, p.image_size, seed=a.seed)
    num_reference = min(p.num_samples, len(dataset) // 2)  # a small dataset gives the reference half at most
    reference, train_set = hold_out(dataset, num_reference, a.seed)
    data = torch.stack([image for image, _ in reference])
    known = torch.stack([train_set[i][0] for i in range(min(p.ideal_data, len(train_set)))])
    labels = torch.arange(len(data)) % len(dataset.classes) if dataset.classes else None
    s = Setup(p, work, data, labels, known, pick_device("auto"), a.seed, Results(work / "rows.jsonl"))
    print(f"{len(dataset)} {p.dataset} images at {p.image_size}px: {num_reference} held out, {len(known)} known to the "
          f"ideal denoiser; parts {', '.join(p.parts)}")
    for part in p.parts:
        PARTS[part].compute(s, PARTS[part].rows(s))
    # every row of the preset known so far, this run's and those of OUT/results.json from another run of it
    wanted = {row.name for part in PARTS.values() for row in part.rows(s)}
    rows = {name: r for name, r in s.results.rows.items() if name in wanted}
    before = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {"rows": []}
    if {**before.get("preset", {}), "parts": None} == json.loads(json.dumps({**asdict(p), "parts": None})):
        rows = {**{r["name"]: r for r in before["rows"]}, **rows}
    results = {"command": command(), "minutes": (time.perf_counter() - tic) / 60, "preset": asdict(p),
               "data": row_metrics(data, data), "rows": list(rows.values())}
    report(results, out, page)
    print(f"wrote {out / 'results.json'} in {results['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    run(main)
