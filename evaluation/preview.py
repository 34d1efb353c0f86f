"""The grid of samples a training run writes at each checkpoint, its quality, and the data's grid beside it."""
from pathlib import Path

import torch
from torchvision.utils import save_image

from cli import UsageError
from data import load_dataset
from diffusion import SamplingSettings, Schedule, get_timesteps, sample_in_batches
from evaluation.metrics import brightness, summarize
from evaluation.yardstick import shapes_quality

GRID_ROW = 8  # images a row of every grid: sample.py's, the preview's and the data's


def grid_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """The classes in turn, one row of the grid each: every class drawn equally often (to one row)."""
    return torch.arange(num_samples) // GRID_ROW % num_classes


def preview(model: torch.nn.Module, schedule: Schedule, prediction: str, path: Path, *, shapes: bool, seed: int,
            device: torch.device, amp_dtype: torch.dtype | None) -> dict:
    """8 samples a class, a class a row (or 64 unconditional), with 25 trailing DDIM steps, unguided, saved as a
    grid at `path`; returns their quality: the yardstick on the shapes (`shapes`), elsewhere their brightness."""
    num_classes, size = model.config.num_classes, model.config.image_size
    labels = grid_labels(num_classes * GRID_ROW, num_classes) if num_classes else None
    settings = SamplingSettings(get_timesteps(schedule.num_train_steps, 25, "trailing"), seed=seed, amp_dtype=amp_dtype)
    shape = (len(labels) if num_classes else 64, model.config.in_channels, size, size)
    images = sample_in_batches(model, shape, schedule, prediction, settings, labels=labels, device=device)
    save_image((images + 1) / 2, path, nrow=GRID_ROW)
    return shapes_quality(images, labels) if shapes else summarize(brightness(images))


def data_grid(config: dict, num_images: int = 64) -> torch.Tensor:
    """Images of the run's training data, class by class as sample.py's grid draws them."""
    dataset = load_dataset(config["dataset"], config["data_dir"], config["image_size"], num_images=config["num_images"],
                           seed=config["seed"])
    wanted = grid_labels(num_images, len(dataset.classes)).tolist()
    by_class: dict[int, list[int]] = {}
    for i in range(len(dataset)):
        by_class.setdefault(int(dataset[i][1]), []).append(i)
        if all(len(by_class.get(c, [])) >= wanted.count(c) for c in set(wanted)):
            break
    else:
        raise UsageError("the dataset has too few images of some class for the grid")
    taken = {c: iter(indices) for c, indices in by_class.items()}
    return torch.stack([dataset[next(taken[c])][0] for c in wanted])
