"""Training data: the embedded procedural dataset, or real images through torchvision."""
import torch
from torch.utils.data import Dataset, Subset

from .images import celeba, cifar10, image_folder
from .shapes import SHAPE_CLASSES, make_shapes, shapes_dataset

DATASETS = ("shapes", "cifar10", "celeba", "folder")
DEFAULT_IMAGE_SIZE = {"shapes": 32, "cifar10": 32, "celeba": 64, "folder": 64}


def load_dataset(
    name: str, data_dir: str = "datasets", image_size: int | None = None, download: bool = False,
    num_images: int = 10_000, seed: int = 0,
) -> Dataset:
    """A dataset of (image in [−1, 1], label) with `.classes`, by the name `--dataset` takes."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[name]
    if name == "shapes":
        return shapes_dataset(num_images, image_size, seed)
    if name == "cifar10":
        return cifar10(data_dir, image_size, download)
    if name == "celeba":
        return celeba(data_dir, image_size, download)
    return image_folder(data_dir, image_size)


def hold_out(dataset: Dataset, num_held_out: int, seed: int = 0) -> tuple[Subset, Subset]:
    """(held out, rest): a seeded random split, so that the images a model or an ideal denoiser
    learns from are never the reference its samples are measured against."""
    if not 0 < num_held_out < len(dataset):
        raise ValueError(f"cannot hold out {num_held_out} of {len(dataset)} images")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    parts = Subset(dataset, order[:num_held_out]), Subset(dataset, order[num_held_out:])
    for part in parts:
        part.classes = dataset.classes
    return parts


__all__ = ["DATASETS", "DEFAULT_IMAGE_SIZE", "SHAPE_CLASSES", "hold_out", "load_dataset", "make_shapes", "shapes_dataset"]
