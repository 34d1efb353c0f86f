"""Every flag of train.py: its default, its help, and the check of its value before any work.

The TrainConfig dataclass is the run's whole recipe; a checkpoint stores it, `--resume` reads it back,
and `python train.py --help` prints it.
"""
import argparse
import math
from dataclasses import dataclass, replace

from cli import DEVICE_HELP, PRECISION_HELP, PRECISIONS, Parser, UsageError, add_flags, flag
from data import DATASETS
from diffusion import FLOW_TIMES, PREDICTION_TYPES, SCHEDULES, check_pairing
from models import PRESETS

LR_SCHEDULES = ("wsd", "constant")
OBJECTIVES = ("diffusion", "flow")
# What a flow run fixes by construction: its path, what it predicts and its loss.
NOT_FOR_FLOW = ("schedule", "zero_snr", "prediction", "loss_space", "offset_noise")


def detail_skip_default(c: "TrainConfig") -> bool:
    """The detail skip where it is needed: a v-predicting UNet that sees 2×2 patches as channels."""
    return c.objective == "diffusion" and c.prediction == "v" and PRESETS[c.model].get("patch_size", 1) > 1


def detail_skip_on(c: "TrainConfig") -> bool:
    """Whether the run has the detail skip: --detail-skip or --no-detail-skip where given, else its default."""
    return detail_skip_default(c) if c.detail_skip is None else c.detail_skip


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = flag("shapes", "training data; 'shapes' is embedded and needs no download", choices=DATASETS)
    data_dir: str = flag("datasets", "where cifar10/celeba live, or the image folder's root (one subfolder per class)")
    download: bool = flag(False, "download cifar10/celeba into --data-dir first (needs internet)")
    image_size: int | None = flag(None, "image side in pixels (default: the dataset's, 32 for shapes and cifar10, "
                                  "64 for celeba and folders)", type=int)
    num_images: int | None = flag(None, "how many shapes to generate, or a random subset of at most this many images "
                                  "of another dataset (default: 10,000 shapes, all other images)", type=int)
    hold_out: int = flag(0, "keep this many images (a seeded split: --hold-out-seed) out of training, as a reference "
                         "to measure samples against")
    hold_out_seed: int | None = flag(None, "seed of the --hold-out split (default: --seed), so that runs at "
                                    "several seeds can hold out the same reference", type=int)
    hflip: bool | None = flag(None, "flip training images left-right at random (default: on, except for a folder, "
                              "which may hold text or digits)", action=argparse.BooleanOptionalAction)
    class_cond: bool = flag(True, "condition on the class label when the dataset has classes")
    model: str = flag("cpu", "UNet size: tiny (tests), cpu, cifar10 (35.7M) or celeba64, the last two for a GPU and "
                      "bringing their recipe (RECIPES) for the flags not given", choices=PRESETS)
    init_from: str = flag("", "fine-tune: start from this checkpoint's model and EMA weights with a fresh optimizer and "
                          "step count; --schedule, --zero-snr, --prediction and --offset-noise may differ from its own "
                          "(default: from scratch)")
    batch_size: int = flag(64, "images per optimizer step, over all processes")
    steps: int = flag(1_500, "total optimizer steps (default: a run of under 10 minutes on 2 CPU cores: docs/results.md); "
                      "with --resume, train up to this step")
    lr: float = flag(2e-3, "AdamW learning rate after the warmup")
    lr_schedule: str = flag("wsd", "after the warmup, wsd: constant, then a linear decay to 0 over the last "
                            "--decay-fraction of the steps; or constant to the end", choices=LR_SCHEDULES)
    decay_fraction: float = flag(0.2, "with --lr-schedule wsd: the share of --steps over which the rate decays to 0")
    adam_beta2: float = flag(0.95, "AdamW's β2, the decay of its average of squared gradients (0.95: it adapts "
                              "within the few thousand steps of a short run)")
    warmup: int = flag(100, "steps of linear learning-rate warmup")
    grad_clip: float = flag(1.0, "clip the gradient norm to this; 0 turns clipping off")
    ema_decay: float = flag(0.0, "decay of the weight average (EMA) that sampling uses; 0 samples the last weights "
                            "themselves, which after the learning rate's decay to 0 beat the average (docs/design.md)")
    objective: str = flag("diffusion", "diffusion: the VP --schedule and --prediction below; flow: rectified flow as in "
                          "Stable Diffusion 3, x_t = (1 − t)·x0 + t·ε with the network predicting ε − x0 (zero terminal "
                          "SNR by construction)", choices=OBJECTIVES)
    flow_time: str = flag("logit-normal", "with --objective flow: how training draws t, sigmoid(N(0, 1)) as SD3 or "
                          "uniform", choices=FLOW_TIMES)
    schedule: str = flag("scaled_linear", "beta schedule", choices=SCHEDULES)
    zero_snr: bool = flag(True, "fix #1: rescale the schedule to zero terminal SNR")
    prediction: str = flag("v", "fix #2: what the network predicts; v as the paper, x0 and eps for comparison",
                           choices=PREDICTION_TYPES)
    loss_space: str = flag("", "regress in this space, e.g. v: the paper's v-loss for any --prediction "
                           "(default: the prediction's own, so the v-loss for v)", choices=PREDICTION_TYPES)
    detail_skip: bool | None = flag(None, "add (√ᾱ_t/σ_t)·D(x_t) to the network's v, D(x) = x − upsample(avgpool₂(x)): "
                                    "the finest scale's fixed pass-through, which v needs at small t (default: on for a "
                                    "v-predicting UNet that folds 2×2 patches, the cpu preset)",
                                    action=argparse.BooleanOptionalAction)
    timesteps: int = flag(1000, "training timesteps T")
    offset_noise: float = flag(0.0, "add S·N(0, 1) per image and channel to the noise: the older workaround")
    label_dropout: float = flag(0.1, "probability of the null label, which guidance needs (unconditional models: none)")
    seed: int = flag(0, "seed of the data order, the noise and the initial weights")
    device: str = flag("auto", DEVICE_HELP)
    precision: str = flag("auto", PRECISION_HELP, choices=PRECISIONS)
    workers: int | None = flag(None, "data-loading worker processes (default: 4 on CUDA, 0 elsewhere)", type=int)
    compile: bool = flag(False, "compile the model with torch.compile; where the compiler is missing or fails, train "
                         "in eager mode after a one-line notice (default: off, as on 2 CPU cores its compile time "
                         "outweighs its gain: docs/benchmark.md)", action=argparse.BooleanOptionalAction)
    out: str = flag("runs/default", "folder for checkpoint.pt, metrics.jsonl and samples_STEP.png")
    ckpt_every: int = flag(900, "write a checkpoint and a sample grid every N steps, and at the end")
    log_every: int = flag(10, "append the mean loss to metrics.jsonl every N steps")


# The GPU presets' training recipes, for every flag not given on the command line. DDPM's CIFAR-10 recipe
# (Ho et al. 2020, App. B): Adam (β2 0.999) at a constant 2e-4 after 5,000 warm-up steps, batch 128, EMA 0.9999,
# random flips, dropout 0.1 (in the UNet preset), 800k steps; the same for CelebA 64×64 with 500k steps. A first run
# can stop much earlier (--steps 100000), and resume later with a larger --steps.
DDPM_RECIPE = dict(lr=2e-4, batch_size=128, warmup=5_000, lr_schedule="constant", adam_beta2=0.999, ema_decay=0.9999,
                   hflip=True, ckpt_every=10_000, log_every=100)
RECIPES = {"cifar10": {**DDPM_RECIPE, "steps": 800_000}, "celeba64": {**DDPM_RECIPE, "steps": 500_000}}


def recipe_defaults(model: str) -> TrainConfig:
    """TrainConfig's defaults with the model preset's recipe on top (the cpu and tiny presets have none)."""
    return replace(TrainConfig(), **RECIPES.get(model, {}))


# What may change when a run is resumed: where and how long to train, the step size (lowered after a
# divergence) and its schedule (a run at a constant rate can take its decay later: wsd's rate before the
# decay does not depend on --steps). Anything else would silently train a different model.
RESUMABLE = {"steps", "device", "precision", "workers", "compile", "out", "ckpt_every", "log_every", "download", "data_dir",
             "lr", "lr_schedule", "decay_fraction", "grad_clip"}


def parse_args(argv: list[str] | None = None) -> tuple[dict, bool]:
    """The flags given on the command line (the others stay unset), and whether to resume."""
    p = Parser(description="Train a diffusion model with zero terminal SNR and the paper's other fixes.")
    add_flags(p, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt up to --steps, with its config")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    return {k: v for k, v in args.items() if v is not None}, resume


def check_config(c: TrainConfig, given: dict) -> None:
    """Refuse numbers and combinations that cannot train, or flags that would do nothing, before any work."""
    optional = {"image_size": c.image_size, "num_images": c.num_images}  # None: the dataset's own
    positive = {"batch_size": c.batch_size, "steps": c.steps, "lr": c.lr, "ckpt_every": c.ckpt_every,
                "log_every": c.log_every, "decay_fraction": c.decay_fraction, **{k: v for k, v in optional.items() if v is not None}}
    non_negative = {"warmup": c.warmup, "grad_clip": c.grad_clip, "offset_noise": c.offset_noise, "hold_out": c.hold_out,
                    **({"workers": c.workers} if c.workers is not None else {})}
    in_range = {"ema_decay": (c.ema_decay, 0, 1), "adam_beta2": (c.adam_beta2, 0, 1),
                "label_dropout": (c.label_dropout, 0, 1), "timesteps": (c.timesteps, 2, math.inf)}
    for name, value in positive.items():
        if not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name, value in non_negative.items():
        if not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"--{name.replace('_', '-')} must be zero or positive, got {value}")
    for name, (value, low, high) in in_range.items():
        if not low <= value < high:
            raise UsageError(f"--{name.replace('_', '-')} must be in [{low}, {high}), got {value}")
    if c.decay_fraction > 1:
        raise UsageError(f"--decay-fraction is a share of --steps, at most 1, got {c.decay_fraction}")
    if "decay_fraction" in given and c.lr_schedule != "wsd":
        raise UsageError("--decay-fraction needs --lr-schedule wsd")
    try:
        check_pairing(c.prediction, c.zero_snr)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if c.objective == "flow" and (fixed := [k for k in NOT_FOR_FLOW if k in given]):
        raise UsageError(f"--{fixed[0].replace('_', '-')} does nothing with --objective flow, whose path and target are fixed")
    if c.detail_skip and (c.objective == "flow" or c.prediction != "v"):
        raise UsageError("--detail-skip is v's pass-through: it needs --prediction v and --objective diffusion")
    if c.objective != "flow" and "flow_time" in given:
        raise UsageError("--flow-time needs --objective flow")
    for_files = sorted({"data_dir", "download"} & set(given))
    if c.dataset == "shapes" and for_files:
        raise UsageError(f"--{for_files[0].replace('_', '-')} does nothing with --dataset shapes, which is made in code")
