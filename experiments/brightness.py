"""The paper's brightness experiment, at a size that runs on a laptop CPU.

    python -m experiments.brightness --ideal-only      # closed-form denoiser rows, about a minute
    python -m experiments.brightness                   # + four trained models (--preset cpu)
    python -m experiments.brightness --preset cpu32 --ideal-only   # ideal rows at 32×32, about 3 min
    python -m experiments.brightness --preset cifar10  # the same pipeline at GPU sizes
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
2. trained models, same architecture, data, seed and budget: the baseline (scaled_linear,
   ε), v_only (the same flawed schedule, v-prediction), fixed (zero SNR, v), fixed_x0 (zero
   SNR, x0: the main job's recipe) and offset noise (baseline + 0.1); plus guidance rows on
   the fixed model, plain CFG against rescaled CFG.

Each trained row is a `python train.py` run in models/NAME/, with the reference held out
(`--hold-out`): a killed run resumes where its last checkpoint left it. Every stage writes its
result under --out and is skipped when run again, so the command is resumable and idempotent.
Outputs: RESULTS.md, results.json, histograms.png, grids/.
"""
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torchvision.utils import save_image

from cli import Parser, amp_dtype, pick_device, run
from data import DATASETS, hold_out, load_dataset
from diffusion import IdealDenoiser, get_timesteps, make_schedule, sample_in_batches
from evaluation.metrics import brightness, clip_fraction, hf_residual, spread_ratio, summarize, wasserstein1
from experiments.figures import pyplot, save
from models import UNet, unet_config
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# A trained row counts as evidence only if its samples are about as smooth as the data: at twice
# the data's high-frequency residual or more it is still noise, and marked "not converged". Not
# tighter, because mid-brightness images have more contrast than near-solid ones: a row squeezed
# toward the middle has more of them, and even the exact ideal model reaches 1.3 there.
HF_CONVERGED = 2.0


@dataclass(frozen=True)
class Preset:
    """The size of one run of the experiment: data, UNet (a `models.PRESETS` name) and budget."""

    dataset: str
    image_size: int
    model: str
    num_samples: int  # per row, and the number of data images they are compared with
    ideal_data: int  # images the ideal denoiser knows
    train_steps: int
    batch_size: int
    lr: float
    guidance: float  # a CFG weight high enough to over-expose
    step_counts: tuple[int, ...] = (25, 100)
    data_dir: str = "datasets"


# Named by the experiment's size; each names the UNet preset it trains (tiny for `cpu`, cpu for `cpu32`).
EXPERIMENT_PRESETS = {
    "tiny": Preset("shapes", 16, "tiny", num_samples=64, ideal_data=64, train_steps=4, batch_size=8, lr=1e-3,
                   guidance=6.0, step_counts=(5,)),
    "cpu": Preset("shapes", 16, "tiny", num_samples=1000, ideal_data=1000, train_steps=2000, batch_size=64, lr=2e-3,
                  guidance=6.0),
    # The main job's size: the ideal rows in about 3 min, everything in well over an hour on 2 cores.
    "cpu32": Preset("shapes", 32, "cpu", num_samples=1000, ideal_data=2048, train_steps=1800, batch_size=64, lr=2e-3,
                    guidance=6.0),
    "cifar10": Preset("cifar10", 32, "cifar10", num_samples=10_000, ideal_data=10_000, train_steps=200_000,
                      batch_size=128, lr=2e-4, guidance=6.0),
}

# The trained rows: Stable Diffusion's recipe, then one change at a time.
MODELS = {
    "baseline": dict(zero_snr=False, prediction="eps"),
    "v_only": dict(zero_snr=False, prediction="v"),  # fix #2 alone: the flawed schedule, v-prediction
    "fixed": dict(zero_snr=True, prediction="v"),
    # The main job's recipe: zero SNR with an x0-predicting network, whose samples are clean at this
    # budget where the v-predicting one's are grainy (docs/quality_trials.md).
    "fixed_x0": dict(zero_snr=True, prediction="x0"),
    "offset_noise": dict(zero_snr=False, prediction="eps", offset_noise=0.1),
}
# The ideal rows: the baseline schedule against the fixed one (ε or v makes no difference to an exact model).
IDEAL = {"ideal_baseline": dict(zero_snr=False, prediction="eps"), "ideal_fixed": dict(zero_snr=True, prediction="v")}
SPACING_OFFSETS = {"leading": 1, "trailing": 0}  # the two spacings compared; leading with offset 1 as Stable Diffusion


def row_metrics(images: torch.Tensor, data: torch.Tensor) -> dict:
    """The row's brightness summary against the data's, plus smoothness and clipping."""
    b, b_data = brightness(images), brightness(data)
    hf = hf_residual(images) / hf_residual(data)
    return {**summarize(b), "spread_ratio": spread_ratio(b, b_data), "w1": wasserstein1(b, b_data), "hf_ratio": hf,
            "clip_fraction": clip_fraction(images), "brightness": b.tolist()}


def run_row(out: Path, name: str, make_images, data: torch.Tensor, info: dict) -> dict:
    """Compute a row once: its metrics are cached in rows/NAME.json and its grid in grids/NAME.png."""
    path = out / "rows" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    tic = time.perf_counter()
    images = make_images()
    row = {"name": name, **info, **row_metrics(images, data), "seconds": time.perf_counter() - tic}
    save_image((images[:64] + 1) / 2, out / "grids" / f"{name}.png", nrow=8)
    path.write_text(json.dumps(row))
    print(f"{name}: spread {row['spread_ratio']:.2f}, W1 {row['w1']:.3f}, HF x{row['hf_ratio']:.2f} ({row['seconds']:.0f}s)")
    return row


def sampler(model, schedule, prediction: str, spacing: str, steps: int, data: torch.Tensor, seed: int,
            device: torch.device, labels: torch.Tensor | None = None, guidance: float = 1.0, rescale: float = 0.0):
    """A function that draws as many samples as `data` holds, with a fixed seed: the same noise for every row."""
    timesteps = get_timesteps(schedule.num_train_steps, steps, spacing, SPACING_OFFSETS[spacing])
    model = model.to(device)
    return lambda: sample_in_batches(model, len(data), data.shape[1:], schedule, timesteps, prediction, labels=labels,
                                     batch_size=500, seed=seed, device=device, guidance=guidance, rescale=rescale,
                                     amp_dtype=amp_dtype(device))


def ideal_rows(out: Path, p: Preset, data: torch.Tensor, known: torch.Tensor, seed: int, device: torch.device) -> list[dict]:
    rows = []
    for name, kind in IDEAL.items():
        schedule = make_schedule("scaled_linear", zero_snr=kind["zero_snr"])
        model = IdealDenoiser(known, schedule, kind["prediction"])
        for spacing in SPACING_OFFSETS:
            for steps in p.step_counts:
                draw = sampler(model, schedule, kind["prediction"], spacing, steps, data, seed, device)
                info = {"kind": "ideal", "model": name, "spacing": spacing, "steps": steps, **kind}
                rows.append(run_row(out, f"{name}_{spacing}_{steps}", draw, data, info))
    return rows


def train_flags(p: Preset, name: str, seed: int, num_reference: int) -> list[str]:
    """The train.py command line of one trained row, with the reference images held out."""
    kind = MODELS[name]
    flags = {"dataset": p.dataset, "image-size": p.image_size, "model": p.model, "batch-size": p.batch_size,
             "steps": p.train_steps, "lr": p.lr, "seed": seed, "hold-out": num_reference,
             "ckpt-every": max(p.train_steps // 4, 1), "schedule": "scaled_linear", "prediction": kind["prediction"],
             "offset-noise": kind.get("offset_noise", 0.0)}
    if p.dataset != "shapes":
        flags["data-dir"] = p.data_dir
    return [a for k, v in flags.items() for a in (f"--{k}", str(v))] + ["--zero-snr" if kind["zero_snr"] else "--no-zero-snr"]


def train_model(out: Path, p: Preset, name: str, seed: int, num_reference: int) -> tuple[UNet, dict]:
    """Train (or resume, or reuse) one model of the ablation with train.py; returns its EMA model and checkpoint."""
    run_dir = out / "models" / name
    path = run_dir / "checkpoint.pt"
    state = load_training_checkpoint(path) if path.exists() else None
    if state is None or state["step"] < p.train_steps:
        tic = time.perf_counter()
        command = [sys.executable, str(ROOT / "train.py"), *train_flags(p, name, seed, num_reference), "--out", str(run_dir)]
        result = subprocess.run(command + (["--resume"] if state else []), cwd=ROOT)
        if result.returncode:
            raise SystemExit(result.returncode)  # train.py has said why, in one line
        print(f"trained {name} in {time.perf_counter() - tic:.0f}s")
        state = load_training_checkpoint(path)
    return load_ema_model(state, path), state


def trained_rows(out: Path, p: Preset, data: torch.Tensor, seed: int, device: torch.device) -> list[dict]:
    rows = []
    for name in MODELS:
        model, state = train_model(out, p, name, seed, len(data))
        schedule, config = checkpoint_schedule(state), state["config"]
        for spacing in SPACING_OFFSETS:
            for steps in p.step_counts:
                draw = sampler(model, schedule, config["prediction"], spacing, steps, data, seed, device)
                info = {"kind": "trained", "model": name, "spacing": spacing, "steps": steps, **MODELS[name]}
                rows.append(run_row(out, f"{name}_{spacing}_{steps}", draw, data, info))
        num_classes = model.config.num_classes
        if name == "fixed" and num_classes:  # guidance needs classes
            labels = torch.arange(p.num_samples) % num_classes
            for rescale in (0.0, 0.7):
                draw = sampler(model, schedule, config["prediction"], "trailing", p.step_counts[0], data, seed, device,
                               labels=labels, guidance=p.guidance, rescale=rescale)
                info = {"kind": "guidance", "model": name, "spacing": "trailing", "steps": p.step_counts[0],
                        "guidance": p.guidance, "rescale": rescale, **MODELS[name]}
                rows.append(run_row(out, f"fixed_cfg{p.guidance:g}_rescale{rescale:g}", draw, data, info))
    return rows


def report(out: Path, p: Preset, data: torch.Tensor, rows: list[dict], seconds: float) -> None:
    """results.json, RESULTS.md and (with matplotlib) histograms.png."""
    data_row = {"name": "data", "kind": "data", **row_metrics(data, data)}
    results = {"preset": asdict(p), "seconds": seconds, "data": data_row, "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    header = ("| row | kind | spacing | steps | mean | std | p5 | p95 | < 0.1 | > 0.9 | spread | W1 | HF ratio | clipped | status |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in [data_row] + rows:
        status = "" if r["kind"] == "data" else ("ok" if r["hf_ratio"] < HF_CONVERGED else "not converged")
        lines.append(f"| {r['name']} | {r['kind']} | {r.get('spacing', '')} | {r.get('steps', '')} | {r['mean']:.3f} | "
                     f"{r['std']:.3f} | {r['p5']:.3f} | {r['p95']:.3f} | {r['frac_dark']:.3f} | {r['frac_bright']:.3f} | "
                     f"{r['spread_ratio']:.2f} | {r['w1']:.3f} | {r['hf_ratio']:.2f} | {r['clip_fraction']:.3f} | {status} |")
    (out / "RESULTS.md").write_text(
        f"# Brightness experiment, preset `{p.dataset}`/{p.image_size}px, {p.num_samples} samples a row\n\n"
        f"Per-image mean brightness in [0, 1]; spread = std(samples)/std(data); W1 against the data; HF ratio = "
        f"high-frequency residual against the data's (> {HF_CONVERGED}: not converged, brightness not evidence). "
        f"This invocation took {seconds / 60:.1f} min (stages finished before are reused, not timed again).\n\n" + "\n".join(lines) + "\n")
    plot_histograms(out / "histograms.png", data_row, rows)


def plot_histograms(path: Path, data_row: dict, rows: list[dict]) -> None:
    plt = pyplot()
    if plt is None:
        return
    cols = 4
    fig, axes = plt.subplots((len(rows) + cols - 1) // cols, cols, figsize=(4 * cols, 2.2 * ((len(rows) + cols - 1) // cols)),
                             squeeze=False, sharex=True)
    bins = torch.linspace(0, 1, 41).tolist()
    for ax, r in zip(axes.flat, rows):
        ax.hist(data_row["brightness"], bins=bins, color="lightgray", label="data")
        ax.hist(r["brightness"], bins=bins, histtype="step", color="C0" if r["hf_ratio"] < HF_CONVERGED else "C3", lw=1.5)
        ax.set_title(f"{r['name']} (spread {r['spread_ratio']:.2f})", fontsize=8)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.supxlabel("per-image mean brightness (gray: data)")
    save(fig, path)


def main() -> int:
    parser = Parser(description="Reproduce the paper's brightness experiment (ideal denoiser and trained models).")
    parser.add_argument("--preset", choices=EXPERIMENT_PRESETS, default="cpu",
                        help="sizes: tiny (tests), cpu (16px, default), cpu32 (32px, the main job's), cifar10 (GPU)")
    parser.add_argument("--ideal-only", action="store_true", help="only the ideal-denoiser rows")
    parser.add_argument("--out", default=None, help="output folder (default: runs/brightness-PRESET)")
    parser.add_argument("--dataset", choices=DATASETS, help="the data (default: the preset's; shapes is embedded)")
    parser.add_argument("--data-dir", help="where cifar10/celeba live, or the image folder's root (one subfolder per class)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, training and sampling noise (default: 0)")
    args = parser.parse_args()
    if args.image_size is not None and args.image_size < 4:
        parser.error(f"--image-size must be at least 4, got {args.image_size}")
    chosen = {"dataset": args.dataset, "data_dir": args.data_dir, "image_size": args.image_size}
    p = replace(EXPERIMENT_PRESETS[args.preset], **{k: v for k, v in chosen.items() if v is not None})
    try:
        unet_config(p.model, p.image_size)  # a size the preset's UNet cannot take is refused before any work
    except ValueError as e:
        parser.error(str(e))
    out = Path(args.out or f"runs/brightness-{args.preset}" + (f"-{args.dataset}" if args.dataset else ""))
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
    known = torch.stack([train_set[i][0] for i in range(p.ideal_data)])
    print(f"{len(dataset)} {p.dataset} images at {p.image_size}px: {num_reference} held out as the reference, "
          f"{p.ideal_data} known to the ideal denoiser, {len(train_set)} to train on")
    device = pick_device("auto")
    rows = ideal_rows(out, p, data, known, args.seed, device)
    if not args.ideal_only:
        rows += trained_rows(out, p, data, args.seed, device)
    report(out, p, data, rows, time.perf_counter() - tic)
    print(f"wrote {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    run(main)
