"""One benchmark command: our UNet presets beside diffusers' UNet2DModel, on this machine.

    python bench.py                         # the CPU table (its time: docs/benchmark.md); CUDA rows where a GPU is
    python bench.py --quick --presets tiny  # seconds: what the test runs
    torchrun --nproc_per_node 2 bench.py    # also the per-rank and global images/s of data-parallel training

Prints a Markdown table and writes JSON (--out). Rows:
- matmul peak: fp32 and bf16 GFLOP/s of one large matrix product, the ceiling for the rows below;
- each UNet preset and its diffusers peer (UNet2DModel of about the same parameter count, with and without its
  attention), each channels-last and in the usual layout, training and forward images/s in fp32 and bf16, FLOPs
  per image (torch's FlopCounterMode) and the share of the matmul peak they reach;
- train.py's own default loop (data, EMA, logging included), read from its metrics.jsonl, also with --compile and
  on one thread, and its ratio to the fastest diffusers configuration;
- the sampler's overhead: one sampling run against steps × one forward;
- the data path of each dataset format, and the ideal denoiser's samples/s.
diffusers is optional (`pip install -e ".[diffusers]"`): without it those rows say so.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision.utils import save_image

from cli import Parser, run
from data import load_dataset, make_shapes
from data.images import write_cifar10_files
from diffusion import IdealDenoiser, get_timesteps, guided_denoiser, initial_noise, make_schedule, sample
from experiments.common import replace_between
from models import UNet, unet_config
from runtime import end_distributed, setup_distributed

NUM_CLASSES = 4
PRESET_SIZE = {"tiny": 16, "cpu": 32, "cifar10": 32}
# diffusers' UNet2DModel sized to each preset's parameter count (±10 %): (block_out_channels, norm groups).
DIFFUSERS_PEERS = {
    "tiny": {"attention": ((16, 32), 8), "no attention": ((16, 32), 8)},
    "cpu": {"attention": ((32, 64, 64), 32), "no attention": ((32, 64, 72), 8)},
    "cifar10": {"attention": ((128, 256, 256, 256), 32), "no attention": ((128, 256, 256, 288), 32)},
}
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
LAYOUTS = {"channels-last": torch.channels_last, "usual layout": torch.contiguous_format}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], object], items: int, device: torch.device, seconds: float, warmup: int = 2) -> float:
    """Items per second of `fn`, timed for at least `seconds` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    calls, tic = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - tic < seconds:
        fn()
        calls += 1
    sync(device)
    return items * calls / (time.perf_counter() - tic)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float, n: int = 2048) -> float:
    """FLOP/s of an n×n matrix product: the machine's ceiling for dense layers in that precision."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 * rate(lambda: a @ b, 1, device, seconds)


def diffusers_unet(preset: str, attention: bool, size: int) -> torch.nn.Module:
    """UNet2DModel with a class embedding and, optionally, attention at the second level (16×16 at 32 px)."""
    from diffusers import UNet2DModel

    channels, groups = DIFFUSERS_PEERS[preset]["attention" if attention else "no attention"]
    down, up = ["DownBlock2D"] * len(channels), ["UpBlock2D"] * len(channels)
    if attention:
        down[1], up[-2] = "AttnDownBlock2D", "AttnUpBlock2D"
    layers = 2 if preset == "cifar10" else 1
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=channels, layers_per_block=layers,
                       down_block_types=tuple(down), up_block_types=tuple(up), num_class_embeds=NUM_CLASSES + 1,
                       norm_num_groups=groups)


def model_rows(name: str, model: torch.nn.Module, forward: Callable, size: int, args, device: torch.device,
               peaks: dict, world: int) -> list[dict]:
    """Training and forward images/s of one network in each precision, with FLOPs and peak share."""
    model = model.to(device)
    schedule = make_schedule("scaled_linear", zero_snr=True)
    train_model = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    x0 = torch.randn(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
    x_fwd = torch.randn(args.forward_batch, 3, size, size, device=device)
    t_fwd = torch.randint(0, 1000, (args.forward_batch,), device=device)
    labels_fwd = torch.randint(0, NUM_CLASSES, (args.forward_batch,), device=device)

    def train_step(dtype):
        t = torch.randint(0, 1000, (len(x0),), device=device)
        noise = torch.randn_like(x0)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = forward(train_model, schedule.add_noise(x0, noise, t), t, labels)
        loss = F.mse_loss(out.float(), x0)  # the loss in fp32, whatever the forward ran in
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def forward_pass(dtype):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            forward(model, x_fwd, t_fwd, labels_fwd)

    with FlopCounterMode(display=False) as counter:
        train_step(None)
    train_flops = counter.get_total_flops() / args.batch_size
    with FlopCounterMode(display=False) as counter:
        forward_pass(None)
    forward_flops = counter.get_total_flops() / args.forward_batch
    rows = []
    for precision, dtype in ((p, d) for p, d in PRECISION_DTYPES.items() if p in args.precisions):
        train_rate = rate(lambda: train_step(dtype), args.batch_size, device, args.seconds)
        forward_rate = rate(lambda: forward_pass(dtype), args.forward_batch, device, args.seconds)
        row = {"model": name, "device": device.type, "precision": precision,
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
               "train_img_s": train_rate, "forward_img_s": forward_rate,
               "train_mflop_per_img": train_flops / 1e6, "forward_mflop_per_img": forward_flops / 1e6,
               "train_peak_share": train_flops * train_rate / peaks[precision],
               "forward_peak_share": forward_flops * forward_rate / peaks[precision]}
        if world > 1:
            total = torch.tensor([train_rate], device=device)
            dist.all_reduce(total)
            row["train_img_s_global"] = total.item()
        rows.append(row)
        print(f"{name} {precision}: train {train_rate:.0f} img/s, forward {forward_rate:.0f} img/s")
    return rows


def unet_rows(args, device: torch.device, peaks: dict, world: int) -> list[dict]:
    """Each preset in both memory layouts (ours is built channels-last), and its diffusers peers in both too, so
    that the comparison is with diffusers' fastest configuration."""
    rows = []
    for preset in args.presets:
        size = PRESET_SIZE[preset]
        for layout, memory_format in LAYOUTS.items():
            ours = UNet(unet_config(preset, size, NUM_CLASSES)).to(memory_format=memory_format)
            rows += model_rows(f"ours: {preset}, {layout}", ours, lambda m, x, t, y: m(x, t, y), size, args, device,
                               peaks, world)
        try:
            import diffusers  # noqa: F401
        except ImportError:
            print("diffusers is not installed: its rows are skipped (pip install -e '.[diffusers]')")
            continue
        for attention in (True, False):
            for layout, memory_format in LAYOUTS.items():
                peer = diffusers_unet(preset, attention, size).to(memory_format=memory_format)
                name = f"diffusers UNet2DModel ({preset} size, {'with' if attention else 'no'} attention, {layout})"
                rows += model_rows(name, peer, lambda m, x, t, y: m(x, t, class_labels=y).sample, size, args, device,
                                   peaks, world)
    return rows


def main_preset(args) -> str:
    """The preset the single-model rows (train.py's loop, the sampler) use: the CPU default where asked."""
    return "cpu" if "cpu" in args.presets else args.presets[0]


def train_loop_rows(args, device: torch.device) -> list[dict]:
    """`python train.py` at its defaults but the benchmark's batch (data, EMA, logging included), as its
    metrics.jsonl reports it: in each precision, and in the first one also with --compile and on one thread.
    `train_img_s` leaves out the first window (warm-up, and compiling); `overall_img_s` divides every image by the
    run's whole wall time, set-up and compiling included."""
    rows = []
    model = main_preset(args)
    variants = [(p, "defaults", [], {}) for p in args.precisions]
    variants += [(args.precisions[0], "--compile", ["--compile"], {}),
                 (args.precisions[0], "one thread", [], {"OMP_NUM_THREADS": "1"})]
    for precision, name, flags, env in variants:
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "train.py", "--model", model, "--image-size", str(PRESET_SIZE[model]),
                       "--batch-size", str(args.batch_size), "--steps", str(args.loop_steps), "--log-every", str(max(args.loop_steps // 4, 1)),
                       "--ckpt-every", str(args.loop_steps), "--precision", precision, "--device", device.type, "--out", out, *flags]
            subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).parent, env={**os.environ, **env})
            logged = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")]
        losses = [r for r in logged if "images_per_sec" in r]
        windows = [r["images_per_sec"] for r in losses][1:]  # the first holds warm-up
        rows.append({"model": f"train.py loop: {model}, {name}", "device": device.type, "precision": precision,
                     "train_img_s": sum(windows) / len(windows),
                     "overall_img_s": losses[-1]["step"] * args.batch_size / losses[-1]["wall_s"]})
        print(f"train.py loop {precision} {name}: {rows[-1]['train_img_s']:.0f} img/s")
    return rows


def loop_ratios(models: list[dict]) -> list[dict]:
    """Each train.py loop row over the fastest diffusers configuration in its precision (None without diffusers)."""
    ratios = []
    for loop in (r for r in models if r["model"].startswith("train.py loop")):
        peers = [r["train_img_s"] for r in models if r["model"].startswith("diffusers") and r["precision"] == loop["precision"]]
        ratios.append({"loop": loop["model"], "precision": loop["precision"],
                       "fastest_diffusers_img_s": max(peers) if peers else None,
                       "ratio": loop["train_img_s"] / max(peers) if peers else None})
    return ratios


@torch.no_grad()
def sampler_overhead(args, device: torch.device) -> dict:
    """Wall time of one sampling run over steps × one forward pass of the same batch: the loop's own cost."""
    preset = main_preset(args)
    size = PRESET_SIZE[preset]
    model = UNet(unet_config(preset, size, NUM_CLASSES)).to(device).eval()
    schedule, steps = make_schedule("scaled_linear", zero_snr=True), args.sample_steps
    shape = (args.forward_batch, 3, size, size)
    x, t = torch.randn(shape, device=device), torch.full((shape[0],), 999, device=device)
    labels = torch.arange(shape[0], device=device) % NUM_CLASSES
    forward_s = 1 / rate(lambda: model(x, t, labels), 1, device, args.seconds)
    timesteps = get_timesteps(1000, steps, "trailing")
    denoise = guided_denoiser(model, schedule, "x0", labels)
    sample_s = 1 / rate(lambda: sample(denoise, initial_noise(shape).to(device), schedule, timesteps, progress=False),
                        1, device, args.seconds, warmup=1)
    row = {"model": f"ours: {preset}", "steps": steps, "forward_s": forward_s, "sample_s": sample_s,
           "overhead": sample_s / (steps * forward_s) - 1}
    print(f"sampler overhead: {100 * row['overhead']:.1f}%")
    return row


def data_rows(args) -> list[dict]:
    """Images/s through a DataLoader as train.py builds it, for each dataset format, at 32 px."""
    images = make_shapes(args.data_images, 32, 0)[0]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        for i, image in enumerate(images):
            (root / "folder" / str(i % 2)).mkdir(parents=True, exist_ok=True)
            save_image((image + 1) / 2, root / "folder" / str(i % 2) / f"{i}.png")
        write_cifar10_files(root / "cifar", ((images + 1) * 127.5).round().byte().flatten(1).numpy(), [0] * len(images))
        for name, data_dir in (("shapes", ""), ("folder", root / "folder"), ("cifar10", root / "cifar")):
            dataset = load_dataset(name, str(data_dir), 32, num_images=args.data_images)
            loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=0)
            tic = time.perf_counter()
            count = sum(len(x) for x, _ in loader)
            rows.append({"dataset": name, "img_s": count / (time.perf_counter() - tic)})
            print(f"data {name}: {rows[-1]['img_s']:.0f} img/s")
    return rows


@torch.no_grad()
def ideal_row(args, device: torch.device) -> dict:
    """Samples/s of the ideal denoiser knowing 1,000 images at 32 px, 25 trailing steps."""
    schedule = make_schedule("scaled_linear", zero_snr=True)
    model = IdealDenoiser(make_shapes(args.ideal_known, 32, 0)[0], schedule, "v").to(device)
    timesteps = get_timesteps(1000, 25, "trailing")
    n = args.forward_batch
    denoise = guided_denoiser(model, schedule, "v")
    samples_s = rate(lambda: sample(denoise, initial_noise((n, 3, 32, 32)).to(device), schedule, timesteps, progress=False),
                     n, device, args.seconds, warmup=1)
    print(f"ideal denoiser: {samples_s:.0f} samples/s")
    return {"known": args.ideal_known, "steps": 25, "samples_s": samples_s}


def table(results: dict) -> str:
    peaks = results["matmul_peak_gflop_s"]
    lines = [f"Machine: {results['machine']}; matmul peak {peaks['fp32']:.3g} GFLOP/s fp32, {peaks['bf16']:.3g} GFLOP/s bf16.", "",
             "| model | precision | params | train img/s | forward img/s | train MFLOP/img | train share of peak | "
             "forward share of peak |", "|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        if "params_m" in r:
            lines.append(f"| {r['model']} | {r['precision']} | {r['params_m']:.2f}M | {r['train_img_s']:.0f} | "
                         f"{r['forward_img_s']:.0f} | {r['train_mflop_per_img']:.0f} | {100 * r['train_peak_share']:.0f}% | "
                         f"{100 * r['forward_peak_share']:.0f}% |")
        else:
            lines.append(f"| {r['model']} | {r['precision']} | | {r['train_img_s']:.0f} "
                         f"({r['overall_img_s']:.0f} over the whole run) | | | | |")
    lines += ["", "| train.py loop | precision | fastest diffusers img/s | loop / diffusers |", "|---|---|---|---|"]
    lines += [f"| {r['loop']} | {r['precision']} | {r['fastest_diffusers_img_s'] or 0:.0f} | {r['ratio'] or 0:.2f} |"
              for r in results["ratios"]]
    s = results["sampler"]
    lines += ["", f"Sampler overhead ({s['model']}, {s['steps']} steps): {100 * s['overhead']:.1f}% "
              f"({s['sample_s']:.3f} s against {s['steps']} × {s['forward_s'] * 1000:.1f} ms).", "",
              "| data path | img/s |", "|---|---|"]
    lines += [f"| {r['dataset']} | {r['img_s']:.0f} |" for r in results["data"]]
    i = results["ideal"]
    lines += ["", f"Ideal denoiser ({i['known']} known images, 32 px, {i['steps']} steps): {i['samples_s']:.0f} samples/s."]
    if results.get("gpu") is None:
        lines += ["", "GPU rows: not measured (no CUDA device)."]
    return "\n".join(lines)


def main() -> int:
    parser = Parser(description="Benchmark the UNet presets beside diffusers, the training loop, the sampler and the data path.")
    parser.add_argument("--presets", nargs="+", choices=list(PRESET_SIZE), default=["cpu"],
                        help="UNet presets to time (default: cpu; cifar10 is for a GPU)")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISION_DTYPES), default=["fp32", "bf16"],
                        help="precisions to time (default: fp32 bf16)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default: 64)")
    parser.add_argument("--forward-batch", type=int, default=128, help="forward and sampling batch (default: 128)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time each measurement for at least this long (default: 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and short timings: a smoke test in seconds")
    parser.add_argument("--out", default="runs/bench/bench.json", help="where to write the JSON (default: runs/bench/bench.json)")
    parser.add_argument("--page", help="also put the table between this page's <!-- bench:begin/end --> markers")
    args = parser.parse_args()
    if args.batch_size < 1 or args.forward_batch < 1 or args.seconds <= 0:
        parser.error("--batch-size, --forward-batch and --seconds must be positive")
    args.loop_steps, args.sample_steps, args.data_images, args.ideal_known = 200, 50, 1000, 1000
    if args.quick:
        args.batch_size, args.forward_batch, args.seconds = 8, 8, 0.05
        args.loop_steps, args.sample_steps, args.data_images, args.ideal_known = 8, 5, 40, 32
    _, world, device = setup_distributed(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peaks = {p: matmul_peak(device, dtype or torch.float32, args.seconds, 512 if args.quick else 2048)
             for p, dtype in PRECISION_DTYPES.items()}
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    results = {"machine": machine, "device": device.type, "torch": torch.__version__, "world": world,
               "matmul_peak_gflop_s": {p: v / 1e9 for p, v in peaks.items()},
               "models": unet_rows(args, device, peaks, world)}
    if world == 1:  # the rest is single-process
        results["models"] += train_loop_rows(args, device)
        results["ratios"] = loop_ratios(results["models"])
        results["sampler"] = sampler_overhead(args, device)
        results["data"] = data_rows(args)
        results["ideal"] = ideal_row(args, device)
        results["gpu"] = device.type if device.type == "cuda" else None
        print(table(results))
    else:
        for r in results["models"]:
            print(f"rank {dist.get_rank()}: {r['model']} {r['precision']}: {r['train_img_s']:.0f} img/s on this rank, "
                  f"{r['train_img_s_global']:.0f} img/s over {world} ranks")
    if world == 1 or dist.get_rank() == 0:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
        if args.page and world == 1:
            replace_between(Path(args.page), "bench", table(results))
        print(f"wrote {args.out}")
    end_distributed(world)
    return 0


if __name__ == "__main__":
    run(main)
