"""What the parts of the brightness experiment share: presets, the models it trains (each a
`python train.py` run), and the `Row`: the settings of one row, from which its samples are drawn,
scored and cached."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from cli import amp_dtype
from diffusion import IdealDenoiser, Schedule, flow_schedule, get_timesteps, make_schedule, sample_in_batches, spacing_offset
from evaluation.metrics import brightness, clip_fraction, hf_residual, spread_ratio, summarize, wasserstein1
from evaluation.yardstick import shapes_quality
from models import UNet
from models.checkpoint import checkpoint_schedule, load_ema_model, load_training_checkpoint
from train_config import TrainConfig, detail_skip_default, trained_config

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}

ROOT = Path(__file__).resolve().parents[1]

# A trained row counts as evidence only if its samples are about as smooth as the data: at twice
# the data's high-frequency residual or more it is still noise, and marked "not converged". Not
# tighter, because mid-brightness images have more contrast than near-solid ones: a row squeezed
# toward the middle has more of them, and even the ideal denoiser's squeezed rows read above 1
# there (docs/brightness.md).
HF_CONVERGED = 2.0
YARDSTICK = "yardstick."  # prefix of the yardstick's numbers in a row group, beside the row's own


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
    seeds: int = 3  # training seeds of every trained model; seeds beyond the first sample the table at step_counts[0] only
    sweep_steps: tuple[int, ...] = (1, 2, 3, 5, 10, 25, 50)  # the paper's Table 2 / Fig. 4 sweep
    guidance_weights: tuple[float, ...] = (1, 2, 4, 7.5)
    guidance_rescales: tuple[float, ...] = (0, 0.25, 0.5, 0.7, 0.75, 1)  # the paper's Fig. 6, and its 0.7
    finetune_steps: tuple[int, ...] = (100, 300, 1000)
    first_step_draws: int = 256  # noise draws per class at t = T
    quality_steps: tuple[int, ...] = (25, 50)  # the paper's Table 3 uses S = 50


# Named by what they run on, so that none reads as a UNet preset (`models.PRESETS`: tiny, cpu, cifar10, celeba64);
# each names the UNet preset it trains.
EXPERIMENT_PRESETS = {
    "smoke": Preset("shapes", 16, "tiny", num_samples=64, ideal_data=64, train_steps=4, batch_size=8, lr=1e-3,
                    guidance=6.0, step_counts=(5,), seeds=1, sweep_steps=(1, 3), guidance_weights=(1, 4),
                    guidance_rescales=(0, 0.7), finetune_steps=(2, 4), first_step_draws=8, quality_steps=(5,)),
    "shapes16": Preset("shapes", 16, "tiny", num_samples=1000, ideal_data=1000, train_steps=2000, batch_size=64, lr=2e-3,
                       guidance=6.0),
    "shapes32": Preset("shapes", 32, "cpu", num_samples=1000, ideal_data=2048, train_steps=2700, batch_size=64, lr=2e-3,
                       guidance=6.0, seeds=1),
    "cifar10-gpu": Preset("cifar10", 32, "cifar10", num_samples=10_000, ideal_data=10_000, train_steps=200_000,
                          batch_size=128, lr=2e-4, guidance=6.0, seeds=1, finetune_steps=(1000, 5000, 20_000)),
}
# The preset's fields a row's samples depend on (the others choose which rows to run).
ROW_PRESET_FIELDS = ("dataset", "image_size", "model", "num_samples", "ideal_data", "train_steps", "batch_size", "lr",
                     "data_dir", "first_step_draws")

# The trained rows, each a set of train.py settings (TrainConfig fields) on top of its defaults, which
# are the paper's recipe: Stable Diffusion's recipe, then one change at a time, and rectified flow.
MODELS = {
    "baseline": dict(zero_snr=False, prediction="eps"),
    "v_only": dict(zero_snr=False, prediction="v"),  # fix #2 alone: the flawed schedule, v-prediction
    "fixed": dict(zero_snr=True, prediction="v"),  # train.py's default
    "fixed_x0": dict(zero_snr=True, prediction="x0"),  # zero SNR with an x0-predicting network
    "offset_noise": dict(zero_snr=False, prediction="eps", offset_noise=0.1),
    "flow": dict(objective="flow"),  # SD3's rectified flow: zero terminal SNR by construction
}
# The ideal denoiser of each path (diffusion/ideal.py), in the same settings: ε or v makes no difference to an
# exact model, and offset noise changes what it was "trained" on.
IDEAL = {"ideal_baseline": dict(zero_snr=False, prediction="eps"), "ideal_fixed": dict(zero_snr=True, prediction="v"),
         "ideal_offset_noise": dict(zero_snr=False, prediction="eps", offset_noise=0.1),
         "ideal_flow": dict(objective="flow", prediction="v")}


@dataclass(frozen=True)
class Row:
    """One row of the experiment: the settings of a set of samples (or of one measured step).

    Everything that names a row derives from these fields: its `name` in tables, its cache file (`key`,
    which also covers its model's settings and the preset's data and budget, so a changed setting is
    computed anew) and its group over training seeds (`settings`: every field but the seed).
    """

    kind: str  # the part: ideal, trained, guidance, steps, guidance_grid, finetune, quality, leak, first_step, …
    model: str  # a key of MODELS (trained at `seed`) or IDEAL (ideal denoiser), or a fine-tuning run's name
    spacing: str = ""
    steps: int = 0
    seed: int = 0  # training seed
    guidance: float = 1.0
    rescale: float = 0.0
    sampler: str = "ddim"
    eta: float = 0.0
    x_T_offset: float = 0.0  # s of x_T = ε + s·N(0, 1) per image and channel: an offset-noise model's own noise
    delta: float = 0.0  # shift of x_T's channel means, in units of their std 1/√(HW) (the leak part)
    finetune_steps: int = 0
    total_steps: int = 0
    label: int | None = None  # one class only

    @property
    def name(self) -> str:
        """The settings in one word: the part (except the brightness table's own), the model, "matched" where x_T
        carries the model's trained offset, spacing and steps, each other setting off its default, the seed."""
        words = [] if self.kind in ("ideal", "trained") else [self.kind]
        words.append(self.model)
        if self.x_T_offset:
            trained = {**MODELS, **IDEAL}.get(self.model, {}).get("offset_noise")
            words.append("matched" if self.x_T_offset == trained else f"xT{self.x_T_offset:g}")
        words += [self.spacing, str(self.steps) if self.steps else ""]
        short = {"guidance": "w", "rescale": "phi", "sampler": "", "eta": "eta", "delta": "d", "finetune_steps": "ft",
                 "total_steps": "total", "label": "class"}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in short and value != f.default:
                words.append(short[f.name] + (f"{value:g}" if isinstance(value, (int, float)) else str(value)))
        return "_".join(w for w in words if w) + (f"_seed{self.seed}" if self.seed else "")

    def settings(self) -> tuple:
        """What tells this row from another besides its training seed: its group over seeds."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "seed")

    def key(self, p: "Preset", split_seed: int = 0) -> str:
        """The cache file's name: `name` and a digest of every setting the row's numbers depend on, the
        preset's data and budget and the seed of the reference's split included."""
        model = MODELS.get(self.model) or IDEAL.get(self.model) or MODELS  # fine-tuning runs depend on several
        row = {f.name: float(getattr(self, f.name)) if f.type is float else getattr(self, f.name) for f in fields(self)}
        settings = {"row": row, "model": model, "preset": {k: getattr(p, k) for k in ROW_PRESET_FIELDS},
                    "split_seed": split_seed}
        if self.model in MODELS and detail_skip(p.model, MODELS[self.model]):
            settings["detail_skip"] = True  # a model trained before its UNet had the skip is another model
        return f"{self.name}-{hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]}"


@dataclass
class Progress:
    """The run's progress line: the part, rows done of the run's rows, the time so far, and the time left at
    the rate of the rows computed so far (a row read back from its cache costs nothing; the models' training
    counts in the time so far, so the first estimates run high while the first models train)."""

    total: int = 0  # the run's rows
    to_compute: int = 0  # of them, those not cached when the run started
    part: str = ""
    done: int = 0
    computed: int = 0
    tic: float = field(default_factory=time.perf_counter)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.tic
        left = self.to_compute - self.computed
        eta = f", about {elapsed / self.computed * left / 60:.0f} min left" if self.computed and left > 0 else ""
        return f"[{elapsed / 60:.0f} min] {self.part}: {self.done} of {self.total} rows done{eta}"


@dataclass
class Setup:
    """One invocation's data and places: the held-out reference every row is measured against."""

    out: Path
    p: Preset
    data: Tensor  # the reference images, never trained on
    labels: Tensor | None  # classes asked for in class-conditional rows, one per sample (None: no classes)
    known: Tensor  # the images the ideal denoiser knows
    device: torch.device
    split_seed: int = 0  # the seed of the reference's split, which every trained model holds out too
    models: dict = field(default_factory=dict)  # (name, seed) -> (EMA model, checkpoint), trained or loaded once
    finished: dict = field(default_factory=dict)  # key -> row, of out/results.json when the invocation started
    progress: Progress = field(default_factory=Progress)


def row_metrics(images: Tensor, data: Tensor) -> dict:
    """The row's brightness summary against the data's, plus smoothness, contrast and clipping."""
    b, b_data = brightness(images), brightness(data)
    contrast = images.float().flatten(1).std(1).mean() / data.float().flatten(1).std(1).mean()
    return {**summarize(b), "spread_ratio": spread_ratio(b, b_data), "w1": wasserstein1(b, b_data),
            "hf_ratio": hf_residual(images) / hf_residual(data), "contrast_ratio": contrast.item(),
            "clip_fraction": clip_fraction(images), "brightness": b.tolist()}


def finished_rows(out: Path) -> dict[str, dict]:
    """The rows that out/results.json holds, by cache key: a row finished before is read back from there when
    its file under rows/ is gone."""
    path = out / "results.json"
    return {r["key"]: r for r in json.loads(path.read_text())["rows"] if "key" in r} if path.exists() else {}


def is_cached(s: Setup, row: Row) -> bool:
    """Whether the row's numbers are known already: then nothing it needs is trained or sampled again."""
    key = row.key(s.p, s.split_seed)
    return key in s.finished or (s.out / "rows" / f"{key}.json").exists()


def cached(s: Setup, row: Row, make: Callable[[], dict]) -> dict:
    """The row's fields and the numbers `make()` measures, computed once and then read from rows/KEY.json (or
    from the results.json of a finished run, with each image's brightness to four decimals)."""
    key = row.key(s.p, s.split_seed)
    path = s.out / "rows" / f"{key}.json"
    s.progress.done += 1
    if path.exists():
        return json.loads(path.read_text())
    result = s.finished.get(key)
    if result is None:
        result = {"name": row.name, "key": key, **asdict(row), **make()}
        s.progress.computed += 1
        print(f"{s.progress.line()}. {row.name}{in_brief(result)}")
    path.write_text(json.dumps(result))
    return result


def in_brief(numbers: dict) -> str:
    """A sampled row's numbers in a few words."""
    if "spread_ratio" not in numbers:
        return ""
    return (f": spread {numbers['spread_ratio']:.2f}, W1 {numbers['w1']:.3f}, HF x{numbers['hf_ratio']:.2f} "
            f"({numbers['seconds']:.0f}s)")


def row_model(s: Setup, row: Row) -> tuple[torch.nn.Module, Schedule, str]:
    """The row's model, its schedule and what it predicts: the ideal denoiser of an IDEAL path, or a model of
    MODELS trained at the row's seed."""
    if row.model in IDEAL:
        kind = IDEAL[row.model]
        schedule = flow_schedule() if kind.get("objective") == "flow" else make_schedule("scaled_linear", zero_snr=kind["zero_snr"])
        return IdealDenoiser(s.known, schedule, kind["prediction"], offset_noise=kind.get("offset_noise", 0.0)), schedule, kind["prediction"]
    model, state = trained_model(s, row.model, row.seed)
    return model, checkpoint_schedule(state), state["config"]["prediction"]


def run_row(s: Setup, row: Row, labels: Tensor | None = None, load: Callable | None = None, x_T: Tensor | None = None,
            extra: Callable[[Tensor], dict] | None = None) -> dict:
    """Draw the row's samples as its fields say, once: the same noise for every row (seed 0), from the model
    `load()` returns (default: `row_model`). Its numbers are cached in rows/KEY.json, its first 64 samples in
    rows/KEY.pt and grids/KEY.png. On the shapes it carries the quality yardstick too, and `extra(images)`
    adds numbers of the row's own."""
    def make() -> dict:
        tic = time.perf_counter()
        model, schedule, prediction = load() if load else row_model(s, row)
        timesteps = get_timesteps(schedule.num_train_steps, row.steps, row.spacing, spacing_offset(row.spacing))
        images = sample_in_batches(model.to(s.device), len(s.data), s.data.shape[1:], schedule, timesteps, prediction,
                                   labels=labels, batch_size=500, seed=0, device=s.device, x_T=x_T,
                                   amp_dtype=amp_dtype(s.device), guidance=row.guidance, rescale=row.rescale,
                                   sampler=row.sampler, eta=row.eta, offset_noise=row.x_T_offset)
        numbers = {**row_metrics(images, s.data), **(extra(images) if extra else {}), "seconds": time.perf_counter() - tic}
        if s.p.dataset == "shapes":
            numbers["quality"] = shapes_quality(images, labels)
        key = row.key(s.p, s.split_seed)
        torch.save(images[:64].clone(), s.out / "rows" / f"{key}.pt")
        save_image((images[:64] + 1) / 2, s.out / "grids" / f"{key}.png", nrow=8)
        return numbers

    return cached(s, row, make)


def train_settings(s: Setup, settings: dict, seed: int, steps: int) -> dict:
    """What `python train.py` is asked for a trained model (TrainConfig fields, checked here): the preset's
    data and budget, the model's `settings`, and the experiment's reference held out. A checkpoint (and its
    preview grid) every quarter of the run, so a killed run loses little; short runs only at the end."""
    p = s.p
    wanted = {"dataset": p.dataset, "image_size": p.image_size, "model": p.model, "batch_size": p.batch_size,
              "steps": steps, "lr": p.lr, "seed": seed, "hold_out": len(s.data), "hold_out_seed": s.split_seed,
              "ckpt_every": max(steps // 4, min(steps, 100)), **settings}
    if p.dataset != "shapes":
        wanted["data_dir"] = p.data_dir
    TrainConfig(**wanted)  # a name that is not a field of train.py's config fails here, not in a subprocess
    # as train.py resolves it, so that a checkpoint trained before the detail skip existed counts as trained otherwise
    return {**wanted, "detail_skip": wanted.get("detail_skip", detail_skip(p.model, settings))}


def train_flags(settings: dict) -> list[str]:
    """train.py's command-line flags for these TrainConfig fields: --flag / --no-flag for a bool."""
    flags = []
    for key, value in settings.items():
        name = "--" + key.replace("_", "-")
        flags += ([name] if value else ["--no-" + name[2:]]) if isinstance(value, bool) else [name, str(value)]
    return flags


def detail_skip(unet: str, settings: dict) -> bool:
    """Whether train.py gives this model the detail skip (`train_config.detail_skip_default`)."""
    if "detail_skip" in settings:
        return settings["detail_skip"]
    return detail_skip_default(TrainConfig(model=unet, **{k: v for k, v in settings.items() if k in TRAIN_FIELDS}))


def trained_otherwise(state: dict, settings: dict) -> bool:
    """Whether a checkpoint was trained with other `settings` than these, apart from how long and how often saved."""
    trained = trained_config(state["config"])
    return any(trained.get(k) != v for k, v in settings.items() if k not in ("steps", "ckpt_every"))


def train_run(run_dir: Path, settings: dict, steps: int, threads: int | None = None) -> tuple[UNet, dict]:
    """Run (or resume, or reuse) `python train.py --KEY VALUE… --out RUN_DIR` up to `steps`, from `settings`
    (TrainConfig fields), on `threads` CPU threads (default: torch's); returns its EMA model and checkpoint.
    A killed run resumes from its last checkpoint; a run trained with other settings, or longer, is trained anew."""
    path = run_dir / "checkpoint.pt"
    state = load_training_checkpoint(path) if path.exists() else None
    if state and (state["step"] > steps or trained_otherwise(state, settings)):
        print(f"{run_dir.name} was trained otherwise: training it anew")
        shutil.rmtree(run_dir)
        state = None
    if state is None or state["step"] < steps:
        tic = time.perf_counter()
        flags = train_flags(settings)
        command = [sys.executable, str(ROOT / "train.py"), *flags, "--out", str(run_dir)]
        env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
        # Its progress bar and lines go to a log of its own: runs side by side would share the terminal.
        log = run_dir.with_name(run_dir.name + ".log")
        print(f"training {run_dir.name} ({log})")
        with open(log, "w") as f:
            result = subprocess.run(command + (["--resume", "--steps", str(steps)] if state else []), cwd=ROOT, env=env,
                                    stdout=f, stderr=subprocess.STDOUT)
        if result.returncode:  # train.py's last line says why
            raise SystemExit(f"{run_dir.name}: {(log.read_text().strip().splitlines() or ['train.py failed'])[-1]}")
        state = load_training_checkpoint(path)
        if state["step"] < steps:  # train.py stops early and cleanly on Ctrl-C
            raise SystemExit(f"{run_dir.name} stopped at step {state['step']} of {steps}; rerun to resume it")
        print(f"trained {run_dir.name} in {time.perf_counter() - tic:.0f}s")
    return load_ema_model(state, path), state


def copy_run(source: Path, run_dir: Path) -> None:
    """A copy of a train.py run folder (its checkpoint and log, not its grids), made under another name and
    renamed when whole, so that a killed copy is never taken for a run."""
    partial = run_dir.with_name(run_dir.name + ".copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("*.png"))
    partial.rename(run_dir)


def seed_suffix(seed: int) -> str:
    """Run names carry the training seed, except the first's."""
    return f"_seed{seed}" if seed else ""


def model_dir(s: Setup, name: str, seed: int) -> Path:
    return s.out / "models" / f"{name}{seed_suffix(seed)}"


def trained_model(s: Setup, name: str, seed: int, threads: int | None = None) -> tuple[UNet, dict]:
    """One model of MODELS at one training seed, trained the first time it is asked for."""
    if (name, seed) not in s.models:
        settings = train_settings(s, MODELS[name], seed, s.p.train_steps)
        s.models[name, seed] = train_run(model_dir(s, name, seed), settings, s.p.train_steps, threads)
    return s.models[name, seed]


def usable_cores() -> int:
    """The cores this process may run on (a container's limit, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def side_by_side(s: Setup, jobs: list[Callable[[int | None], object]]) -> None:
    """Run `jobs` (each one or more train.py runs, called with the CPU threads it may use) side by side, one
    per core, on a CPU; one after another on a GPU. A small model's batch keeps one core busy but not two
    (docs/brightness.md: two 16 px runs on a core each train 1.5× faster than both on two cores in turn).
    The jobs must not share a run: each trains its own models. A failed run or Ctrl-C stops the queued jobs."""
    workers = min(usable_cores(), len(jobs)) if s.device.type == "cpu" else 1
    if workers <= 1:
        for job in jobs:
            job(None)
        return
    with ThreadPoolExecutor(workers) as pool:  # each thread waits on its own train.py process
        futures = [pool.submit(job, 1) for job in jobs]
        try:
            for done in as_completed(futures):
                done.result()  # a failed run raises here (SystemExit), whichever finishes first
        finally:
            for future in futures:
                future.cancel()  # the queued ones; a running one ends with its train.py


def train_models(s: Setup, rows: list[Row]) -> None:
    """The models of MODELS that these rows need and whose numbers are not cached, trained side by side before
    any row asks for one (a cached row needs no model: its run folder may be gone)."""
    needed = sorted({(r.model, r.seed) for r in rows if r.model in MODELS and not is_cached(s, r)})
    side_by_side(s, [lambda threads, name=name, seed=seed: trained_model(s, name, seed, threads) for name, seed in needed])
