"""Training data: the embedded procedural dataset, or real images through torchvision."""
import torch
from torch.utils.data import Dataset, Subset

from cli import UsageError

from .images import celeba, cifar10, image_folder
from .shapes import SHAPE_CLASSES, make_shapes, shapes_dataset

DATASETS = ("shapes", "cifar10", "celeba", "folder")
DEFAULT_IMAGE_SIZE = {"shapes": 32, "cifar10": 32, "celeba": 64, "folder": 64}
SHAPES_IMAGES = 10_000


def load_dataset(name: str, data_dir: str = "datasets", image_size: int | None = None, download: bool = False,
                 num_images: int | None = None, seed: int = 0) -> Dataset:
    """A dataset of (image in [−1, 1], label) with `.classes`, by the name `--dataset` takes.

    `num_images`: how many shapes to generate (default 10,000), or for a dataset on disk a random subset of at most
    that many images, drawn with `seed` (default: all of them)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[name]
    if name == "shapes":
        return shapes_dataset(num_images or SHAPES_IMAGES, image_size, seed)
    if name == "folder":
        dataset = image_folder(data_dir, image_size)
    else:
        dataset = (cifar10 if name == "cifar10" else celeba)(data_dir, image_size, download)
    return split(dataset, num_images, seed)[0] if num_images and num_images < len(dataset) else dataset


def split(dataset: Dataset, num_first: int, seed: int = 0) -> tuple[Subset, Subset]:
    """(num_first images, the rest), a seeded random split; both keep the dataset's `.classes`."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    parts = Subset(dataset, order[:num_first]), Subset(dataset, order[num_first:])
    for part in parts:
        part.classes = dataset.classes
    return parts


def hold_out(dataset: Dataset, num_held_out: int, seed: int = 0) -> tuple[Subset, Subset]:
    """(held out, rest): a seeded random split, so that the images a model or an ideal denoiser
    learns from are never the reference its samples are measured against."""
    if not 0 < num_held_out < len(dataset):
        raise UsageError(f"cannot hold out {num_held_out} of {len(dataset)} images")
    return split(dataset, num_held_out, seed)


__all__ = ["DATASETS", "DEFAULT_IMAGE_SIZE", "SHAPE_CLASSES", "hold_out", "load_dataset", "make_shapes", "shapes_dataset"]
