"""Real image datasets through torchvision, for a GPU box: CIFAR-10, CelebA, an image folder.

Every dataset yields (image in [−1, 1], label) and names its classes in `.classes` (empty for CelebA, which is
trained unconditionally). Each is decoded, cropped and resized once into one uint8 tensor (`TensorImages`):
CIFAR-10 from its batches, CelebA and folders through a cache file on first use, so that no epoch pays for PIL again.
"""
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from cli import UsageError
from diffusion import NULL_CLASS

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader, checking that each batch file exists instead of its MD5. The archive's
    checksum is still verified on download; dropping the per-file sums lets a small set in the same pickled format
    load too, and a corrupt file still fails when read."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class CelebAFiles(datasets.CelebA):
    """torchvision's CelebA reader, checking that the annotation files exist instead of their MD5."""

    file_list = [(file_id, None, name) for file_id, _, name in datasets.CelebA.file_list]


class TensorImages(Dataset):
    """Images kept as one uint8 tensor (N, C, H, W), labels as one int64 tensor; an item is scaled to
    [−1, 1] when read. `__getitems__` reads a whole batch in one indexing, which the DataLoader uses."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list[str]):
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float() / 127.5 - 1, int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        index = torch.as_tensor(indices)
        return list(zip(self.images[index].float().div_(127.5).sub_(1), self.labels[index].tolist()))


def _no_label(_) -> int:  # a module-level function, not a lambda: a dataset handed to loader workers is pickled
    return NULL_CLASS


def _to_uint8(image_size: int, crop: int | None = None) -> transforms.Compose:
    """Center-crop (to the short side, or `crop`), resize to image_size, as a uint8 tensor."""
    crop_step = [transforms.CenterCrop(crop)] if crop else []
    return transforms.Compose(crop_step + [transforms.Resize(image_size, antialias=True),
                                           transforms.CenterCrop(image_size), transforms.PILToTensor()])


def resize_uint8(images: Tensor, image_size: int) -> Tensor:
    """uint8 images (N, C, H, W), resized to image_size (antialiased, as PIL's resize) and rounded back."""
    if images.shape[-1] == image_size:
        return images
    resized = F.interpolate(images.float(), size=(image_size, image_size), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def cached_uint8(dataset: Dataset, files: list[str], cache_dir: Path, name: str, image_size: int) -> TensorImages:
    """`dataset` (whose items are uint8 tensors) stacked into a TensorImages once, then read from a cache
    file keyed by the image size and the list of files: a changed folder builds a new cache. The file is
    written to a temporary name and renamed, so a killed build leaves no half cache."""
    key = hashlib.sha1("\n".join(files).encode()).hexdigest()[:16]
    path = cache_dir / f"{name}_{image_size}px_{key}.pt"
    if path.exists():
        cache = torch.load(path, weights_only=True)
    else:
        items = [dataset[i] for i in range(len(dataset))]
        cache = {"images": torch.stack([image for image, _ in items]),
                 "labels": torch.tensor([label for _, label in items], dtype=torch.long)}
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(cache, tmp)
        os.replace(tmp, path)
    return TensorImages(cache["images"], cache["labels"], list(dataset.classes))


def cifar10(data_dir: str, image_size: int = 32, download: bool = False) -> Dataset:
    try:
        files = CIFAR10Files(data_dir, train=True, download=download)
        images = resize_uint8(torch.from_numpy(files.data).permute(0, 3, 1, 2).contiguous(), image_size)
        return TensorImages(images, torch.tensor(files.targets, dtype=torch.long), list(files.classes))
    except RuntimeError:
        raise UsageError(f"no CIFAR-10 batches in {Path(data_dir) / 'cifar-10-batches-py'}; pass --download on a "
                         "machine that is online") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise UsageError(f"a CIFAR-10 batch file in {data_dir} is corrupt ({type(e).__name__}: {e}); delete it and download again") from None


def celeba(data_dir: str, image_size: int = 64, download: bool = False) -> Dataset:
    try:
        dataset = CelebAFiles(data_dir, split="train", transform=_to_uint8(image_size, crop=178),
                              target_transform=_no_label, download=download)
    except RuntimeError:
        raise UsageError(f"no CelebA files in {Path(data_dir) / 'celeba'}; pass --download on a machine that is online") from None
    except (OSError, ValueError, IndexError) as e:
        raise UsageError(f"the CelebA annotation files in {data_dir} are unreadable ({e})") from None
    dataset.classes = []
    return cached_uint8(dataset, list(dataset.filename), Path(data_dir) / "celeba", ".cache", image_size)


def image_folder(data_dir: str, image_size: int) -> Dataset:
    """ImageFolder layout: one subfolder per class, whose names become the class labels."""
    if not Path(data_dir).is_dir():
        raise UsageError(f"image folder {data_dir} does not exist")
    try:
        dataset = datasets.ImageFolder(data_dir, transform=_to_uint8(image_size))
    except (FileNotFoundError, OSError) as e:
        raise UsageError(f"no images found in {data_dir} ({e}); expected one subfolder of images per class") from None
    files = [str(Path(path).relative_to(data_dir)) for path, _ in dataset.samples]
    return cached_uint8(dataset, files, Path(data_dir), ".cache", image_size)  # a file in the root: not a class


def write_cifar10_files(root: str | Path, pixels: np.ndarray, labels: list[int]) -> Path:
    """Images in CIFAR-10's on-disk format under root/cifar-10-batches-py: five pickled training
    batches, a test batch and batches.meta. `pixels` is (N, 3072) uint8, channel-major as in the
    real files. Lets the tests and the benchmark run the real reader without the download."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(pixels)), 5)
    batches = {f"data_batch_{i}": part for i, part in enumerate(parts, 1)} | {"test_batch": parts[0]}
    for name, rows in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": pixels[rows], "labels": [labels[r] for r in rows],
                         "filenames": [f"{r}.png" for r in rows]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": len(parts[0]), "num_vis": 3072}, f)
    return folder
