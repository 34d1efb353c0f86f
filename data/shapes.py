"""The embedded dataset: procedural 32×32 shapes whose brightness spans black to white.

The small-scale stand-in for the paper's "solid black background" and "pure white"
prompts. Every image is `b + c·tint·q` with q = ±(m − mean(m)), where m ∈ [0, 1] is the class's
pattern, so its mean brightness is exactly b, drawn U(0, 1) independently of the class: the
brightness distribution is known (uniform, std 1/√12 ≈ 0.289 in [0, 1]) and includes
near-solid black and near-solid white images. The contrast c is as large as keeping every
pixel in [0, 1] allows (scaled by U(0.6, 1)): a small bright disc can sit on a black image
whose mean is still near 0, but an image with b → 0 or 1 must become nearly solid.
"""
import math

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

SHAPE_CLASSES = ("disc", "square", "stripes", "gradient")


def _patterns(label: Tensor, size: int, g: torch.Generator) -> Tensor:
    """m ∈ [0, 1] of shape (N, size, size) for each image's class, with random pose."""
    n = len(label)
    u = lambda *shape: torch.rand(n, *shape, generator=g)  # noqa: E731
    coords = (torch.arange(size) + 0.5) / size
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)
    cy, cx, extent = (0.25 + 0.5 * u(1, 1)), (0.25 + 0.5 * u(1, 1)), (0.15 + 0.2 * u(1, 1))
    angle, phase = math.pi * u(1, 1), 2 * math.pi * u(1, 1)
    along = x * angle.cos() + y * angle.sin()
    # Soft edges, a tenth of the image wide, and stripes no finer than a quarter of it: detail a
    # small model on a CPU learns quickly, so that what the experiments measure is brightness.
    soft = 0.1
    disc = ((extent - ((x - cx) ** 2 + (y - cy) ** 2).sqrt()) / soft + 0.5).clamp(0, 1)
    square = ((extent - torch.maximum((x - cx).abs(), (y - cy).abs())) / soft + 0.5).clamp(0, 1)
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * along / (0.25 + 0.25 * u(1, 1)) + phase)
    ramp = along - along.amin((1, 2), keepdim=True)
    gradient = ramp / ramp.amax((1, 2), keepdim=True)
    by_class = torch.stack([disc, square, stripes.expand(n, size, size), gradient])
    return by_class[label, torch.arange(n)]


def make_shapes(num_images: int, image_size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Images (N, 3, S, S) in [−1, 1], labels (N,), and each image's brightness b ∈ [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(len(SHAPE_CLASSES), (num_images,), generator=g)
    brightness = torch.rand(num_images, generator=g)
    sign = torch.where(torch.rand(num_images, generator=g) < 0.5, -1.0, 1.0)  # light-on-dark or dark-on-light
    tint = torch.rand(num_images, 3, generator=g)
    tint = tint / tint.amax(1, keepdim=True)  # a random hue at full contrast in its strongest channel
    q = sign.view(-1, 1, 1) * _patterns(label, image_size, g)
    q = q - q.mean((1, 2), keepdim=True)  # zero mean: the mean brightness stays b
    # The largest c with b + c·q in [0, 1] everywhere, then a random fraction of it.
    below, above = (-q.amin((1, 2))).clamp(min=1e-6), q.amax((1, 2)).clamp(min=1e-6)
    contrast = torch.minimum(brightness / below, (1 - brightness) / above).clamp(max=1.0)
    contrast = contrast * (0.6 + 0.4 * torch.rand(num_images, generator=g))
    images = brightness.view(-1, 1, 1, 1) + (contrast.view(-1, 1, 1) * q).unsqueeze(1) * tint.view(-1, 3, 1, 1)
    return images.clamp(0, 1) * 2 - 1, label, brightness


def shapes_dataset(num_images: int, image_size: int = 32, seed: int = 0) -> TensorDataset:
    """`make_shapes` as a dataset of (image, label) pairs, with the class names in `.classes`."""
    images, labels, _ = make_shapes(num_images, image_size, seed)
    dataset = TensorDataset(images, labels)
    dataset.classes = list(SHAPE_CLASSES)
    return dataset
