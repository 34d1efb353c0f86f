"""The quality yardstick for the embedded shapes: is a set of samples as good as held-out data?

A small feature network, trained once on shapes the diffusion model never sees and frozen (its weights and their
SHA-256 under evaluation/feature_nets/, made by `python -m evaluation.train_feature_net`), gives three numbers
beside the pixel-level ones of `evaluation.metrics`. Frozen, it reads the same on every machine: a network trained
on each machine trains differently on different CPUs, and so would its distances.

- class accuracy of class-conditional samples, next to the network's accuracy on held-out data
  (the shapes are ambiguous when the contrast is low, so the data's own score is below 1);
- the Fréchet distance between samples and held-out data in its feature space, divided by the
  distance between two held-out sets of the same size. Fréchet distance is biased upwards at a
  finite count, so only this ratio compares runs: 1 is "as close as other data".
- the brightness spread, W1 and high-frequency ratio against the same held-out images, the
  power spectrum's ratio to theirs in 8 frequency bands, which tells blur (upper bands below 1)
  from grain (above 1), and the ratio of their mean chroma (whole image, and background corners),
  which sees washed-out colour that neither the spectrum nor the classifier sees.

Its pattern features are a tanh layer of 32 units: bounded, so the distance is not dominated by a few heavy-tailed
units, whose rare large values would make it depend on which reference set is drawn (as unbounded ReLU units allow).
"""
import functools
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import data.shapes
from data import SHAPE_CLASSES, make_shapes
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from . import metrics
from .metrics import brightness, chroma, frechet_distance, hf_residual, power_spectrum, spectrum_ratio, spread_ratio, wasserstein1

FEATURES = 32
NET_SEED = 7_000_001  # the feature network's training shapes: never a seed train.py uses
REFERENCE_SEED = 8_000_001  # held-out reference set k: seeds REFERENCE_SEED + 2k and + 2k + 1
TRAIN_IMAGES, TRAIN_STEPS, BATCH = 8192, 400, 128
REFERENCE_COUNT, POOL_COUNT = 20_000, 16_384
FROZEN_DIR = Path(__file__).resolve().parent / "feature_nets"
# The code a reference set is built by: its cache is named by their hash, so a cache built another way is never read.
REFERENCE_SOURCES = (Path(__file__), Path(metrics.__file__), Path(data.shapes.__file__))


class FeatureNet(nn.Module):
    """Features of a shapes image: 32 tanh units that classify its contrast-normalised pattern, then its
    per-channel mean, its contrast and the log of its high-frequency residual, so that a distance sees shape, colour,
    brightness, and grain or blur. The pattern is normalised (mean 0, unit std per image) because the class does not
    depend on brightness or contrast; without that, near-solid images stall the classifier's training."""

    def __init__(self, num_classes: int = len(SHAPE_CLASSES)):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 48, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(48, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(256, FEATURES), nn.Tanh(),
        )
        self.head = nn.Linear(FEATURES, num_classes)

    def pattern(self, x: Tensor) -> Tensor:
        x = x - x.mean((2, 3), keepdim=True)
        return self.body(x / (x.flatten(1).std(1).view(-1, 1, 1, 1) + 0.02))

    def features(self, x: Tensor) -> Tensor:
        sharpness = hf_residual(x, per_image=True).add(1e-3).log().unsqueeze(1)
        stats = torch.cat([x.mean((2, 3)), x.flatten(1).std(1, keepdim=True), sharpness], dim=1)
        return torch.cat([self.pattern(x), stats], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits."""
        return self.head(self.pattern(x))


def train_feature_net(image_size: int, seed: int = NET_SEED) -> FeatureNet:
    """The same network for the same (image size, seed) on one machine; another CPU may round differently."""
    images, labels, _ = make_shapes(TRAIN_IMAGES, image_size, seed)
    with torch.random.fork_rng(), torch.enable_grad():  # callers may sit under no_grad
        torch.manual_seed(seed)
        net = FeatureNet()
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
        for _ in range(TRAIN_STEPS):
            pick = torch.randint(len(images), (BATCH,))
            loss = F.cross_entropy(net(images[pick]), labels[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


def frozen_hashes() -> dict[str, str]:
    """file name -> SHA-256, as `sha256sum` writes them in feature_nets/SHA256SUMS."""
    sums = FROZEN_DIR / "SHA256SUMS"
    lines = sums.read_text().splitlines() if sums.is_file() else []
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def feature_net_state(image_size: int) -> tuple[dict, str]:
    """The frozen feature network's weights for this image size (evaluation/feature_nets/), checked against their
    SHA-256, and a name for them: the first 16 hex digits of that hash. Never trained here (see the module's doc);
    a size without frozen weights, or weights that do not match their hash, is refused in one line (CheckpointError)
    that names the command which freezes them."""
    name, path = f"shapes{image_size}.pt", FROZEN_DIR / f"shapes{image_size}.pt"
    digest = frozen_hashes().get(name)
    if digest is None or not path.is_file() or sha256(path) != digest:
        problem = "has no SHA-256 entry" if digest is None else "is missing or does not match its SHA-256"
        raise CheckpointError(f"the yardstick's feature network {path} {problem} in {FROZEN_DIR / 'SHA256SUMS'}: "
                              f"restore it from git, or freeze one with python -m evaluation.train_feature_net "
                              f"--image-size {image_size}")
    return load_checkpoint(path)["net"], digest[:16]


def code_digest(sources: Iterable[Path] | None = None) -> str:
    """The first 12 hex digits of the SHA-256 of the source files read in order (default: REFERENCE_SOURCES)."""
    h = hashlib.sha256()
    for source in REFERENCE_SOURCES if sources is None else sources:
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:12]


def reference_path(image_size: int, reference_set: int, cache_dir: str | Path) -> Path:
    """Where a reference set's features are cached: named by the feature network's hash and by the hash of
    the code that builds the set (`code_digest`), so that a change to either builds a new cache."""
    _, net_name = feature_net_state(image_size)
    return Path(cache_dir) / f"shapes{image_size}_reference{reference_set}_net{net_name}_code{code_digest()}.pt"


def _cached(path: Path, make: Callable[[], dict]) -> dict:
    """`make()`, computed once and then read from `path` (recomputed if the file is unreadable)."""
    try:
        return load_checkpoint(path)
    except CheckpointError:
        state = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, path)
        return state


def load_feature_net(image_size: int) -> FeatureNet:
    """The frozen feature network for this image size (`feature_net_state`)."""
    weights, _ = feature_net_state(image_size)
    with torch.random.fork_rng():  # building it draws initial weights: leave the caller's random stream alone
        net = FeatureNet()
    net.load_state_dict(weights)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def reference(image_size: int, reference_set: int = 0, cache_dir: str | Path = "runs/yardstick") -> dict:
    """One held-out reference set, as features: REFERENCE_COUNT images to measure against, and a
    pool of POOL_COUNT others from which the data-vs-data distance is measured."""
    def make() -> dict:
        net = load_feature_net(image_size)
        ref, _, _ = make_shapes(REFERENCE_COUNT, image_size, REFERENCE_SEED + 2 * reference_set)
        pool, pool_labels, _ = make_shapes(POOL_COUNT, image_size, REFERENCE_SEED + 2 * reference_set + 1)
        # in chunks of 1,000 images, whose activations stay small; each image's features are the same
        ref_features, pool_features = (torch.cat([net.features(c) for c in x.split(1000)]) for x in (ref, pool))
        pool_logits = net.head(pool_features[:, :FEATURES])  # forward() without computing the pattern again
        return {"features": ref_features, "brightness": brightness(ref), "hf": hf_residual(ref),
                "spectrum": power_spectrum(ref), "chroma": chroma(ref), "background_chroma": chroma(ref, background=True),
                "pool_features": pool_features,
                "pool_accuracy": (pool_logits.argmax(1) == pool_labels).float().mean().item()}

    return _cached(reference_path(image_size, reference_set, cache_dir), make)


@functools.lru_cache
def data_distance(image_size: int, reference_set: int, n: int, cache_dir: str) -> float:
    """mean_i FD(D_i, R) over held-out sets D_i of n images: the same for every set of samples of that
    count, so computed once per process."""
    ref = reference(image_size, reference_set, cache_dir)
    held_out = ref["pool_features"][:max(2, min(64, POOL_COUNT // n)) * n].split(n)
    return sum(frechet_distance(d, ref["features"]) for d in held_out) / len(held_out)


@torch.no_grad()
def shapes_quality(samples: Tensor, labels: Tensor | None = None, reference_set: int = 0,
                   cache_dir: str | Path = "runs/yardstick") -> dict:
    """The yardstick for samples in [−1, 1] of the embedded shapes (labels: the classes asked for).

    `fd_ratio` = FD(samples, R) / mean_i FD(D_i, R): R a large held-out reference set, D_i held-out sets of the
    samples' count (1: "as close to R as other data of the same size"). The mean runs over every set the pool
    holds (at least 2, at most 64), since one set's distance alone varies from draw to draw.
    """
    samples = samples.float().cpu()
    n, size = len(samples), samples.shape[-1]
    net, ref = load_feature_net(size), reference(size, reference_set, cache_dir)
    fd = frechet_distance(net.features(samples), ref["features"])
    fd_data = data_distance(size, reference_set, n, str(cache_dir))
    b, bands = brightness(samples), spectrum_ratio(samples, data_spectrum=ref["spectrum"])
    quality = {"num_samples": n, "fd_ratio": fd / fd_data, "fd": fd, "fd_data": fd_data,
               "hf_ratio": hf_residual(samples) / ref["hf"], "spectrum_ratio": bands, "spectrum_min": min(bands),
               "spectrum_max": max(bands), "spread_ratio": spread_ratio(b, ref["brightness"]),
               "w1": wasserstein1(b, ref["brightness"]), "chroma_ratio": chroma(samples) / ref["chroma"],
               "background_chroma_ratio": chroma(samples, background=True) / ref["background_chroma"],
               "data_class_accuracy": ref["pool_accuracy"],
               "feature_net": feature_net_state(size)[1]}  # which frozen network measured it
    if labels is not None:
        quality["class_accuracy"] = (net(samples).argmax(1) == labels.cpu()).float().mean().item()
    return quality
