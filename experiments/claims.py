"""The paper's claims beyond Fig. 1-3, each a part of the brightness experiment (see brightness.py):

- steps:      sample steps (§3.3, Table 2, Fig. 4): S × {leading, linspace, trailing}, rectified flow included
- guidance:   rescaled guidance (§3.4, Fig. 6): w × φ on the zero-SNR v-prediction model
- finetune:   fine-tuning a trained baseline to zero SNR + v (§4), against training from scratch
- first_step: at t = T a zero-SNR model predicts the class mean whatever the noise (§5.2)
- quality:    baseline against fixed with the yardstick, with and without guidance (Table 3)
- leak:       why the flawed schedule squeezes brightness: does the sample follow x_T's channel means?

Each part is two functions: `*_rows` lists its rows (each a `Row`, cached under rows/ like the brightness
table's) at every training seed, and the other computes them; brightness.py groups them over seeds and
draws the figures from the groups.
"""
import shutil
import statistics
from pathlib import Path

import torch
from torch import Tensor

from diffusion import SPACINGS, Schedule, predict_x0_eps
from evaluation.metrics import brightness, first_step_gain, leak_prediction, mean_correlation, slope
from experiments.common import (IDEAL, MODELS, Row, Setup, cached, copy_run, is_cached, model_dir, row_model, run_row, seed_suffix, side_by_side, train_run,
                                train_models, train_settings, trained_model, trained_otherwise, YARDSTICK)
from experiments.figures import pyplot, save
from models.checkpoint import checkpoint_schedule, load_training_checkpoint
from train_config import RESUMABLE


def steps_rows(s: Setup, seeds: int) -> list[Row]:
    """Brightness and quality against the number of sample steps, for each spacing, for the ideal
    denoiser of each path and the trained baseline, fixed and flow models (each training seed)."""
    models = [("ideal_baseline", 0), ("ideal_fixed", 0), ("ideal_flow", 0)]
    models += [(name, seed) for seed in range(seeds) for name in ("baseline", "fixed", "flow")]
    return [Row("steps", name, spacing, steps, seed) for name, seed in models for spacing in SPACINGS for steps in s.p.sweep_steps]


def steps_sweep(s: Setup, rows: list[Row]) -> list[dict]:
    """The ideal denoisers draw without a class (they know none), the trained models with the reference's."""
    return [run_row(s, row, None if row.model in IDEAL else s.labels) for row in rows]


def guidance_grid_rows(s: Setup, seeds: int) -> list[Row]:
    """The fixed (zero-SNR, v) model under classifier-free guidance w and rescale φ, same noise in every cell.
    w = 1 is the conditional model alone, which φ cannot change: drawn once, as φ = 0."""
    if s.labels is None:
        return []
    return [Row("guidance_grid", "fixed", "trailing", s.p.step_counts[0], seed, guidance=w, rescale=phi)
            for seed in range(seeds) for w in s.p.guidance_weights for phi in s.p.guidance_rescales if w != 1 or phi == 0]


def guidance_grid(s: Setup, rows: list[Row]) -> list[dict]:
    return [run_row(s, row, s.labels) for row in rows]


def finetune_rows(s: Setup, seeds: int) -> list[Row]:
    """Each fine-tuning step count N, for both arms (the fine-tuned baseline and the fixed model trained as
    long from scratch) at every training seed."""
    p = s.p
    return [Row("finetune", arm, "trailing", p.step_counts[0], seed, finetune_steps=n, total_steps=p.train_steps + n)
            for seed in range(seeds) for n in sorted(p.finetune_steps) for arm in ("finetuned", "scratch")]


def finetune(s: Setup, rows: list[Row]) -> list[dict]:
    """The trained baseline (ε, flawed schedule) fine-tuned to zero SNR + v for N steps, beside the
    fixed model trained from scratch for the same total number of steps (its run continued). At a constant
    rate a run continued is the same as one trained that long, so each N continues the run of the N before
    it; the two arms' chains of runs, at each seed, train side by side."""
    p, counts = s.p, sorted(s.p.finetune_steps)

    def run_dir(arm: str, seed: int, n: int) -> Path:
        name = f"finetune_{n}" if arm == "finetuned" else f"scratch_{p.train_steps + n}"
        return s.out / "models" / f"{name}{seed_suffix(seed)}"

    def trained(arm: str, seed: int, n: int, threads: int | None = None) -> tuple[torch.nn.Module, dict]:
        """The arm's run at N = n, trained or read back: the run at the N before continued; the first
        fine-tuning starts from the baseline's weights, the first scratch run continues the fixed model."""
        before = max((m for m in counts if m < n), default=None)
        steps = n if arm == "finetuned" else p.train_steps + n  # the run's own count
        if before is not None:
            return continued(run_dir(arm, seed, before), run_dir(arm, seed, n), steps, threads)
        if arm == "scratch":
            trained_model(s, "fixed", seed, threads)
            return continued(model_dir(s, "fixed", seed), run_dir(arm, seed, n), steps, threads)
        trained_model(s, "baseline", seed, threads)
        settings = {**train_settings(s, MODELS["fixed"], seed, n), "init_from": str(model_dir(s, "baseline", seed) / "checkpoint.pt")}
        return train_run(run_dir(arm, seed, n), settings, n, threads)

    needed = list(dict.fromkeys((row.model, row.seed) for row in rows if not is_cached(s, row)))
    side_by_side(s, [lambda threads, arm=arm, seed=seed: [trained(arm, seed, n, threads) for n in counts]
                     for arm, seed in needed])

    def load(row: Row) -> tuple[torch.nn.Module, Schedule, str]:
        model, state = trained(row.model, row.seed, row.finetune_steps)  # trained above: read back
        return model, checkpoint_schedule(state), state["config"]["prediction"]

    return [run_row(s, row, s.labels, load=lambda row=row: load(row)) for row in rows]


def continued(source: Path, run_dir: Path, steps: int, threads: int | None = None) -> tuple[torch.nn.Module, dict]:
    """A copy of a trained run, continued to `steps`: at a constant rate, the same as training that long.
    A copy made from another run than the source is now (retrained since, or at another rate) is made
    again, and so is one that has no checkpoint yet."""
    source_config = load_training_checkpoint(source / "checkpoint.pt")["config"]
    if source_config["lr_schedule"] != "constant":
        raise ValueError(f"{source.name} decays its rate: continuing it is not the same as training it longer")
    # what a resume may change but a copy must share: the rate and the clipping change the weights
    shared = {k: v for k, v in source_config.items() if k not in RESUMABLE or k in ("lr", "grad_clip")}
    path = run_dir / "checkpoint.pt"
    if run_dir.exists() and (not path.exists() or trained_otherwise(load_training_checkpoint(path), shared)):
        shutil.rmtree(run_dir)
    if not run_dir.exists():
        copy_run(source, run_dir)
    return train_run(run_dir, {}, steps, threads)  # resumes: the copy's own config


@torch.no_grad()
def first_x0(s: Setup, row: Row, x_T: Tensor, labels: Tensor | None) -> Tensor:
    """The row's model's x̂0 at t = T, the first step of trailing spacing."""
    model, schedule, prediction = row_model(s, row)
    t = torch.full((len(x_T),), schedule.num_train_steps - 1)
    return predict_x0_eps(x_T, model(x_T, t, labels).float(), schedule.alpha_bar_at(t, x_T), prediction)[0]


def classes_of(s: Setup) -> list[int | None]:
    """The classes of the reference, or [None] for data without classes."""
    return sorted(set(s.labels.tolist())) if s.labels is not None else [None]


def first_step_rows(s: Setup, seeds: int) -> list[Row]:
    """The fixed model's first x̂0 per class at every training seed, then the ideal denoiser's."""
    return [Row("first_step", "fixed", seed=seed, label=c) for seed in range(seeds) for c in classes_of(s)] + [
        Row("first_step", "ideal_fixed")]


def first_step(s: Setup, rows: list[Row]) -> list[dict]:
    """x̂0 at t = T over many noise draws: a zero-SNR model sees nothing of the image there, so it
    should give the (class-conditional) data mean whatever the noise; variation comes later."""
    n, classes = s.p.first_step_draws, classes_of(s)
    data_spread = brightness(s.data).std().item()

    def measure(row: Row) -> dict:
        # The same draws at every training seed, other draws per class and for the ideal denoiser.
        draws = len(classes) if row.model in IDEAL else classes.index(row.label)
        x_T = torch.randn((n, *s.data.shape[1:]), generator=torch.Generator().manual_seed(draws))
        x0 = first_x0(s, row, x_T, None if row.label is None else torch.full((n,), row.label))
        members = s.known if row.model in IDEAL else s.data if row.label is None else s.data[s.labels == row.label]
        mean = members.mean(0)
        return {"x0_brightness_spread": brightness(x0).std().item() / data_spread,
                "rms_to_class_mean": (x0 - mean).pow(2).mean().sqrt().item(),
                "rms_of_data_to_class_mean": (members - mean).pow(2).mean().sqrt().item()}

    return [cached(s, row, lambda row=row: measure(row)) for row in rows]


def quality_rows(s: Setup, seeds: int) -> list[Row]:
    """Baseline (its own leading steps, plain CFG) against fixed (trailing, rescaled CFG) with the yardstick,
    at each of the preset's quality step counts, without guidance and with the preset's weight."""
    if s.labels is None:
        return []
    return [Row("quality", name, spacing, steps, seed, guidance=w, rescale=rescale if w != 1 else 0.0)
            for seed in range(seeds) for name, spacing, rescale in (("baseline", "leading", 0.0), ("fixed", "trailing", 0.7))
            for steps in s.p.quality_steps for w in (1.0, s.p.guidance)]


def quality(s: Setup, rows: list[Row]) -> list[dict]:
    return [run_row(s, row, s.labels) for row in rows]


LEAK_SHIFTS = (-0.2, -0.1, 0.0, 0.1, 0.2)  # δ, in units of the noise std of a channel mean, 1/√(HW)
LEAK_MODELS = ("baseline", "fixed", "offset_noise", "flow")
LEAK_IDEAL = ("ideal_baseline", "ideal_fixed", "ideal_flow")


def leak_rows(s: Setup, seeds: int) -> list[Row]:
    """Per model (the ideal denoisers, then each trained model at every training seed), trailing steps for
    each so that the schedule alone differs: the first x̂0's correlation and gain, the samples at each shift
    δ of x_T's channel means, and the samples with the leak put back."""
    models = [(name, 0) for name in LEAK_IDEAL] + [(name, seed) for seed in range(seeds) for name in LEAK_MODELS]
    steps = s.p.step_counts[0]
    return [row for name, seed in models for row in (
        Row("leak_first", name, seed=seed), Row("first_step_gain", name, seed=seed),
        *(Row("leak", name, "trailing", steps, seed, delta=delta) for delta in LEAK_SHIFTS),
        Row("leak_intervention", name, "trailing", steps, seed), Row("leak_everaert", name, "trailing", steps, seed))]


def leak(s: Setup, rows: list[Row]) -> list[dict]:
    """Why the flawed schedule squeezes brightness (paper §3; Everaert et al., WACV 2024): does the
    sample follow the lowest frequency of its starting noise? For each model, the same x_T for every
    row: the correlation between x_T's per-image, per-channel means and the sample's (δ = 0), and the
    sample's mean brightness with those means of x_T shifted by δ·σ_m, σ_m = 1/√(HW) their own std
    (the dose-response; its slope is read off over δ); and the leak itself, the correlation of x_T's
    means with those of the first x̂0 at t = T."""
    size = s.data.shape[1:]
    x_T = torch.randn(len(s.data), *size, generator=torch.Generator().manual_seed(0))
    sigma_m = 1 / (size[1] * size[2]) ** 0.5
    train_models(s, rows)
    # The leak put back at sampling time, from the same noise: a held-out image x0 (the positive control;
    # the samples' brightness should follow x0's), or channel means drawn from the data's (Everaert et al.).
    signals = {"leak_intervention": s.data, "leak_everaert": leak_from_statistics(s.known, len(s.data))}

    def measure(row: Row) -> dict:
        labels = None if row.model in IDEAL else s.labels
        if row.kind == "leak_first":
            return cached(s, row, lambda: {"correlation": mean_correlation(x_T, first_x0(s, row, x_T, labels))})
        if row.kind == "first_step_gain":
            return cached(s, row, lambda: leak_as_trained(s, row, labels))
        if row.kind == "leak":
            extra = (lambda images: {"correlation": mean_correlation(x_T, images)}) if row.delta == 0 else None
            return run_row(s, row, labels, x_T=x_T + row.delta * sigma_m, extra=extra)
        leaky = None if is_cached(s, row) else leaky_x_T(row_model(s, row)[1].alpha_bar[-1].item(), signals[row.kind], x_T)
        return run_row(s, row, labels, x_T=leaky, extra=lambda images: {"correlation_with_x0": mean_correlation(s.data, images)})

    return [measure(row) for row in rows]


def leaky_x_T(alpha_bar_T: float, signal: Tensor, noise: Tensor) -> Tensor:
    """x_T = √ᾱ_T·signal + √(1 − ᾱ_T)·ε: the last timestep's input as training saw it, the leak included.
    At zero terminal SNR (ᾱ_T = 0) it is the noise alone."""
    return alpha_bar_T**0.5 * signal + (1 - alpha_bar_T) ** 0.5 * noise


def leak_from_statistics(images: Tensor, n: int) -> Tensor:
    """Everaert et al. (WACV 2024, "Exploiting the signal-leak bias"), at its coarsest: n signals that hold
    per-image channel means m ~ N(μ, Σ) at every pixel, μ and Σ the mean and covariance of the channel
    means of `images`. No image is needed, only the data's statistics of brightness and colour."""
    means = images.double().mean((2, 3))  # (N, C)
    cholesky = torch.linalg.cholesky(torch.cov(means.T) + 1e-9 * torch.eye(means.shape[1], dtype=torch.float64))
    m = means.mean(0) + torch.randn(n, means.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64) @ cholesky.T
    return m.float()[:, :, None, None].expand(n, *images.shape[1:]).clone()


def leak_as_trained(s: Setup, row: Row, labels: Tensor | None) -> dict:
    """The leak where it acts: x̂0 at t = T from x_T = √ᾱ_T·x0 + √(1 − ᾱ_T)·ε with held-out images x0, as
    training draws it. The slope of x̂0's mean on x_T's (`first_step_gain`) beside what the data predicts
    of an ideal denoiser (`leak_prediction`); both 0 at zero SNR for the ideal denoiser, and a trained
    model's is measured, with its interval."""
    alpha_bar = row_model(s, row)[1].alpha_bar[-1].item()
    x_T = leaky_x_T(alpha_bar, s.data, torch.randn(s.data.shape, generator=torch.Generator().manual_seed(1)))
    return {"gain": first_step_gain(x_T, first_x0(s, row, x_T, labels)), "predicted": leak_prediction(s.data, alpha_bar)}


def leak_summary(rows: list[dict]) -> list[dict]:
    """Per model of the leak part: the correlation r at δ = 0 and the dose-response slope (mean brightness
    in [0, 1] per unit δ), each as mean ± std over training seeds, with seed 0's 95% interval of r."""
    runs: dict[tuple, dict[float, dict]] = {}
    for r in rows:
        if r["kind"] == "leak":
            runs.setdefault((r["model"], r["seed"]), {})[r["delta"]] = r
    per_model: dict[str, list[dict]] = {}
    for (model, seed), by_delta in sorted(runs.items(), key=lambda item: item[0][1]):
        deltas = sorted(by_delta)
        per_model.setdefault(model, []).append({
            "r": by_delta[0.0]["correlation"], "slope": slope(deltas, [by_delta[d]["mean"] for d in deltas]),
            "means": [by_delta[d]["mean"] for d in deltas], "deltas": deltas, "spread": by_delta[0.0]["spread_ratio"]})
    summary = []
    for model, seeds in per_model.items():
        entry = {"model": model, "seeds": len(seeds), "deltas": seeds[0]["deltas"], "r_low": seeds[0]["r"]["low"],
                 "r_high": seeds[0]["r"]["high"]}
        first = [r["correlation"] for r in rows if r["kind"] == "leak_first" and r["model"] == model]
        if first:  # the first x̂0's correlation, over seeds, with seed 0's interval
            values = [c["r"] for c in first]
            entry["r_first"] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
            entry["r_first_low"], entry["r_first_high"] = first[0]["low"], first[0]["high"]
        gains = [r for r in rows if r["kind"] == "first_step_gain" and r["model"] == model]
        if gains:  # the first step's gain, over seeds, with seed 0's interval, and the ideal denoiser's prediction
            values = [g["gain"]["gain"] for g in gains]
            entry["gain"] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
            entry["gain_low"], entry["gain_high"] = gains[0]["gain"]["low"], gains[0]["gain"]["high"]
            predicted = gains[0]["predicted"]
            entry["predicted_gain"] = predicted["exact_gain"]
            # the squeeze the data predicts: of x_T's mean against training's, and of the first x̂0's brightness
            entry["predicted_squeeze"], entry["leak_only_spread"] = predicted["x_T_std_ratio"], predicted["leak_only_spread"]
        for key, values in (("r", [x["r"]["r"] for x in seeds]), ("slope", [x["slope"] for x in seeds]),
                            ("spread_ratio", [x["spread"] for x in seeds])):
            entry[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        for kind in ("leak_intervention", "leak_everaert"):  # the leak put back at sampling time, over seeds
            put_back = [r for r in rows if r["kind"] == kind and r["model"] == model]
            for key, values in (("spread_ratio", [r["spread_ratio"] for r in put_back]),
                                ("r_x0", [r["correlation_with_x0"]["r"] for r in put_back])):
                if values:
                    entry[f"{kind}.{key}"] = {"mean": statistics.fmean(values),
                                              "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        entry["means"] = [statistics.fmean(x["means"][i] for x in seeds) for i in range(len(entry["deltas"]))]
        summary.append(entry)
    return summary


def plot_leak(s: Setup, entries: list[dict]) -> None:
    """Left: the correlation of x_T's channel means with the sample's, with seed 0's interval. Right: the
    samples' mean brightness against the shift δ of x_T's channel means (mean over training seeds)."""
    plt = pyplot()
    if plt is None or not entries:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [e["model"].replace("ideal_", "exact ").replace("_", " ") for e in entries]
    left.errorbar(range(len(entries)), [e["r"]["mean"] for e in entries],
                  yerr=[[e["r"]["mean"] - e["r_low"] for e in entries], [e["r_high"] - e["r"]["mean"] for e in entries]],
                  fmt="o", capsize=3)
    left.axhline(0, color="gray", lw=0.8)
    left.set_xticks(range(len(entries)), names, rotation=30, fontsize=7)
    left.set_ylabel("r (x_T channel mean, sample channel mean)")
    for i, e in enumerate(entries):
        right.plot(e["deltas"], e["means"], marker="o", color=f"C{i % 10}", label=names[i],
                   linestyle="--" if e["model"].startswith("ideal") else "-")
    right.set_xlabel("shift δ of x_T's channel means (units of their std 1/√(HW))")
    right.set_ylabel("mean brightness of the samples")
    right.legend(fontsize=6)
    fig.suptitle("Does the sample follow the mean of its starting noise? (trailing steps; trained: mean over seeds)",
                 fontsize=10)
    save(fig, s.out / "leak.png")


def plot_lines(s: Setup, entries: list[dict], x_key: str, x_label: str, file: str, title: str, line_of, log_x: bool) -> None:
    """One panel per metric, one line per `line_of(entry)`: the mean over training seeds, the std as error bars."""
    plt = pyplot()
    if plt is None or not entries:
        return
    metrics = [("spread_ratio", "brightness spread (1 = data)"), ("w1", "brightness W1 to data (0 = data)")]
    if YARDSTICK + "fd_ratio" in entries[0]:
        metrics += [(YARDSTICK + "fd_ratio", "feature distance ratio, yardstick (1 = data)"),
                    ("hf_ratio", "high-frequency ratio (1 = data)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.3 * len(metrics), 3.6))
    models = list(dict.fromkeys(e["model"] for e in entries))
    spacings = list(dict.fromkeys(e["spacing"] for e in entries))
    for ax, (key, label) in zip(axes, metrics):
        for line in dict.fromkeys(line_of(e) for e in entries):
            chosen = sorted((e for e in entries if line_of(e) == line), key=lambda e: e[x_key])
            # colour: the model; line style: the spacing
            ax.errorbar([e[x_key] for e in chosen], [e[key]["mean"] for e in chosen], yerr=[e[key]["std"] for e in chosen],
                        marker="o", capsize=2, label=line, color=f"C{models.index(chosen[0]['model']) % 10}",
                        linestyle=("-", "--", ":")[spacings.index(chosen[0]["spacing"]) % 3])
        if log_x:
            ax.set_xscale("log")
            ax.minorticks_off()
        xs = sorted({e[x_key] for e in entries})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(x_label)
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=6)
    seeds = max(e["seeds"] for e in entries)
    fig.suptitle(title + (f" (trained: mean ± std over {seeds} training seeds)" if seeds > 1 else ""), fontsize=11)
    save(fig, s.out / file)


def plot_guidance(s: Setup, entries: list[dict]) -> None:
    """Heat maps of clipping, contrast, class accuracy and spread over (w, φ) (means over training seeds),
    and one labelled image grid of the first seed: rows φ, columns w, the same noise and class in every cell."""
    plt = pyplot()
    if plt is None or not entries:
        return
    ws, phis = s.p.guidance_weights, s.p.guidance_rescales
    found = {(e["guidance"], e["rescale"]): e for e in entries}
    cell = {(w, phi): found[w, phi if w != 1 else 0.0] for w in ws for phi in phis}  # w = 1: one row for every φ
    panels = [("clip_fraction", "fraction of clipped pixels"), ("contrast_ratio", "per-image contrast / data's"),
              (YARDSTICK + "class_accuracy", "class accuracy (yardstick)"), ("spread_ratio", "brightness spread / data's")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, label) in zip(axes, panels):
        values = [[cell[w, phi].get(key, {"mean": float("nan")})["mean"] for w in ws] for phi in phis]
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_xticks(range(len(ws)), [f"{w:g}" for w in ws])
        ax.set_yticks(range(len(phis)), [f"{phi:g}" for phi in phis])
        ax.set_xlabel("guidance weight w")
        ax.set_ylabel("rescale φ")
        ax.set_title(label, fontsize=10)
        fig.colorbar(image, ax=ax)
    seeds = max(e["seeds"] for e in entries)
    fig.suptitle("Rescaled classifier-free guidance on the zero-SNR v-prediction model"
                 + (f" (means over {seeds} training seeds)" if seeds > 1 else ""), fontsize=11)
    save(fig, s.out / "guidance.png")
    samples = {key: s.out / "rows" / f"{entry['rows'][0]}.pt" for key, entry in cell.items()}
    if not all(path.exists() for path in samples.values()):  # read back from results.json: no images to draw
        print("guidance_grid.png not redrawn: the guidance grid's samples are not in rows/")
        return
    fig, axes = plt.subplots(len(phis), len(ws), figsize=(1.6 * len(ws), 1.6 * len(phis)), squeeze=False)
    for i, phi in enumerate(phis):
        for j, w in enumerate(ws):
            image = torch.load(samples[w, phi])[0]
            axes[i][j].imshow(((image + 1) / 2).permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            if i == len(phis) - 1:
                axes[i][j].set_xlabel(f"w = {w:g}")
            if j == 0:
                axes[i][j].set_ylabel(f"φ = {phi:g}")
    fig.suptitle("Same noise, same class: rows φ, columns w", fontsize=9)
    save(fig, s.out / "guidance_grid.png")
