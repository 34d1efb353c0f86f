"""What the experiments share: tables and figures, a row's settings and numbers, and the models they train."""
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from models.checkpoint import load_ema_model, load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def markdown(header: list[str], lines: list[list]) -> str:
    """A Markdown table."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(str(v) for v in line) + " |" for line in lines])


def replace_between(page: Path, name: str, text: str) -> None:
    """Put `text` between the page's `<!-- NAME:begin -->` and `<!-- NAME:end -->` lines."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = page.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{page} has no {begin} … {end} markers")
    head, rest = content.split(begin, 1)
    page.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")


def publish(page: str | Path | None, tables: dict[str, str], prefix: str = "") -> None:
    """Print each table under its name and, with --page, put it between the page's <!-- {prefix}{name}:begin/end -->."""
    for name, text in tables.items():
        print(f"## {name}\n\n{text}\n")
        if page:
            replace_between(Path(page), prefix + name, text)


def command() -> str:
    """How the experiment was run, for its results file: `python -m experiments.NAME FLAGS`."""
    return " ".join([f"python -m experiments.{Path(sys.argv[0]).stem}", *sys.argv[1:]])


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None (after saying so) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures (pip install -e '.[figures]')")
        return None
    return plt


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def mean_std(values: list[float], digits: int = 2) -> str:
    """'mean ± std' over training seeds, or the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


@dataclass(frozen=True)
class Row:
    """The settings of one row: which model draws, how, and what part of the experiment it belongs to."""

    kind: str  # the part: ideal, trained, steps, guidance_grid, finetune, first_step, quality, leak, ...
    model: str  # a trained model's name, or an ideal denoiser's (ideal_*)
    spacing: str = ""
    steps: int = 0
    seed: int = 0  # training seed
    guidance: float = 1.0
    rescale: float = 0.0
    x_T_offset: float = 0.0  # x_T = ε + s·N(0, 1) per image and channel: an offset-noise model's own noise
    finetune_steps: int = 0
    label: int | None = None  # one class only

    @property
    def name(self) -> str:
        """The settings in one word, unique within an experiment: the key of its results file."""
        words = ([] if self.model.startswith(self.kind) else [self.kind]) + [self.model, self.spacing, str(self.steps or "")]
        short = {"guidance": "w", "rescale": "phi", "x_T_offset": "xT", "finetune_steps": "ft", "label": "class"}
        words += [f"{short[f.name]}{getattr(self, f.name):g}" for f in fields(self)
                  if f.name in short and getattr(self, f.name) != f.default]
        return "_".join(w for w in words if w) + (f"_seed{self.seed}" if self.seed else "")


def matches(row: dict, **settings) -> bool:
    """Whether a row of a results file has these settings (absent settings read as Row's defaults)."""
    defaults = {f.name: f.default for f in fields(Row)}
    return all(row.get(k, defaults.get(k)) == v for k, v in settings.items())


def seeds_of(rows: list[dict], key: str, **settings) -> list[float]:
    """A number of the rows with these settings, one value per training seed."""
    return [r[key] for r in rows if matches(r, **settings)]


class Results:
    """A results file of rows, one JSON line each, keyed by row name: a row there is never computed again."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                row = json.loads(line)
            except ValueError:  # the last line of a run killed while writing it: computed again
                continue
            self.rows[row["name"]] = row

    def get(self, row: Row, compute) -> dict:
        if row.name not in self.rows:
            result = {"name": row.name, **asdict(row), **compute()}
            with open(self.path, "a") as f:  # one line a row: a killed run loses the row in progress only
                f.write(json.dumps(result) + "\n")
            self.rows[row.name] = result
            print(f"[{len(self.rows)} rows] {row.name}" + (f": spread {result['spread_ratio']:.2f}"
                                                           if "spread_ratio" in result else ""), flush=True)
        return self.rows[row.name]


def train_flags(settings: dict) -> list[str]:
    """train.py's flags for these TrainConfig fields: --flag / --no-flag for a bool."""
    flags = []
    for key, value in settings.items():
        name = "--" + key.replace("_", "-")
        flags += ([name] if value else ["--no-" + name[2:]]) if isinstance(value, bool) else [name, str(value)]
    return flags


def train(run_dir: Path, settings: dict, threads: int | None = None) -> tuple[torch.nn.Module, dict]:
    """`python train.py --KEY VALUE … --out RUN_DIR`, resumed where it stopped and skipped when done; returns the
    run's EMA model and checkpoint. Its output goes to RUN_DIR.log (runs side by side would share the terminal)."""
    path = run_dir / "checkpoint.pt"
    state = load_training_checkpoint(path) if path.exists() else None
    if state is None or state["step"] < settings["steps"]:
        argv = [sys.executable, str(ROOT / "train.py"), *train_flags(settings), "--out", str(run_dir)]
        env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
        log = run_dir.with_name(run_dir.name + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"training {run_dir.name} (log: {log})", flush=True)
        with open(log, "w") as f:
            done = subprocess.run(argv + ["--resume"] * bool(state), cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
        if done.returncode:
            raise SystemExit(f"{run_dir.name}: train.py failed (exit status {done.returncode}); its log: {log}")
        state = load_training_checkpoint(path)
        if state["step"] < settings["steps"]:  # train.py stops early, and cleanly, on Ctrl-C
            raise SystemExit(f"{run_dir.name} stopped at step {state['step']} of {settings['steps']}; rerun to resume it")
    return load_ema_model(state, path), state


def continue_run(source: Path, run_dir: Path, steps: int, threads: int | None = None,
                 **flags: object) -> tuple[torch.nn.Module, dict]:
    """A copy of a finished run trained on to `steps` under the train.py `flags` a resume may change (RESUMABLE):
    at a constant rate, as the brightness experiment and the curve's trunk keep, the same as training that long."""
    if not run_dir.exists():
        partial = run_dir.with_name(run_dir.name + ".copying")  # renamed when whole: a killed copy is never a run
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("*.png"))
        partial.rename(run_dir)
    return train(run_dir, {"steps": steps, **flags}, threads)


def wall_time(checkpoint: str | Path) -> float:
    """The run's wall time in seconds, set-up and checkpoints included, from the last row of its metrics.jsonl."""
    return json.loads((Path(checkpoint).parent / "metrics.jsonl").read_text().splitlines()[-1])["wall_s"]


def groups(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """The rows grouped by their values of `keys`, in the order each group first appears."""
    grouped: dict[tuple, list[dict]] = {}
    for r in rows:
        grouped.setdefault(tuple(r[k] for k in keys), []).append(r)
    return grouped


# The recipe the brightness pages measured, kept since the default run moved to a decay to 0, β2 0.95 and its last
# weights (docs/design.md): a constant rate, β2 0.999, the EMA sampled (the UNet's layout then: rounding apart).
EARLIER_RECIPE = {"lr_schedule": "constant", "adam_beta2": 0.999, "ema_decay": 0.999}


def side_by_side(jobs: list, device: torch.device) -> None:
    """Each job(1) side by side on a CPU (a small model's run keeps a core busy, not two); job(None) in turn on GPU."""
    if device.type != "cpu" or len(jobs) < 2:
        for job in jobs:
            job(None)
        return
    with ThreadPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        for done in [pool.submit(job, 1) for job in jobs]:  # every job runs to its end, so a rerun keeps their work
            done.result()
