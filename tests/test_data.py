import pytest
import torch

from data import SHAPE_CLASSES, hold_out, load_dataset, make_shapes, shapes_dataset
from tests.conftest import write_celeba, write_cifar10, write_image_folder


def test_shapes_are_reproducible_from_the_seed():
    a, b = make_shapes(32, seed=3), make_shapes(32, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], make_shapes(32, seed=4)[0])


def test_shapes_lie_in_minus_one_one_at_the_asked_size():
    images, labels, _ = make_shapes(64, image_size=24)
    assert images.shape == (64, 3, 24, 24)
    assert images.min() >= -1 and images.max() <= 1
    assert set(labels.tolist()) <= set(range(len(SHAPE_CLASSES)))


def test_shape_brightness_is_each_image_mean():
    images, _, brightness = make_shapes(256)
    torch.testing.assert_close(((images + 1) / 2).mean((1, 2, 3)), brightness, atol=1e-5, rtol=0)


def test_shape_brightness_spans_near_black_to_near_white_uniformly():
    _, _, brightness = make_shapes(4000)
    assert (brightness < 0.03).any() and (brightness > 0.97).any()
    assert brightness.std().item() == pytest.approx(12**-0.5, rel=0.05)


def test_shape_brightness_is_independent_of_class():
    _, labels, brightness = make_shapes(8000)
    means = [brightness[labels == k].mean().item() for k in range(len(SHAPE_CLASSES))]
    assert max(means) - min(means) < 0.03


def test_near_black_and_near_white_shapes_are_nearly_solid():
    images, _, brightness = make_shapes(4000)
    dark, light = (images[brightness < 0.02] + 1) / 2, (images[brightness > 0.98] + 1) / 2
    assert dark.flatten(1).quantile(0.9, dim=1).max() < 0.08  # at most a small spot is lighter
    assert light.flatten(1).quantile(0.1, dim=1).min() > 0.92


def test_cifar10_in_its_on_disk_format_loads_with_its_class_names(tmp_path):
    write_cifar10(tmp_path)
    dataset = load_dataset("cifar10", str(tmp_path))
    image, label = dataset[0]
    assert len(dataset) == 20 and image.shape == (3, 32, 32) and 0 <= label < 10
    assert image.min() >= -1 and image.max() <= 1
    assert dataset.classes[0] == "airplane"


def test_missing_cifar10_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="--download"):
        load_dataset("cifar10", str(tmp_path))


def test_corrupt_cifar10_batch_is_named(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset("cifar10", str(tmp_path))


def test_image_folder_subfolders_become_classes_and_images_are_cropped_to_size(tmp_path):
    write_image_folder(tmp_path)
    dataset = load_dataset("folder", str(tmp_path), image_size=16)
    assert dataset.classes == ["cats", "dogs"]
    assert len(dataset) == 6 and dataset[0][0].shape == (3, 16, 16)


def test_missing_image_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("folder", str(tmp_path / "nope"), image_size=16)


def test_celeba_in_its_on_disk_format_loads_cropped_and_unlabelled(tmp_path):
    write_celeba(tmp_path)
    dataset = load_dataset("celeba", str(tmp_path))
    image, label = dataset[0]
    assert len(dataset) == 4 and image.shape == (3, 64, 64) and label == -1 and dataset.classes == []


def test_missing_celeba_says_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match="--download"):
        load_dataset("celeba", str(tmp_path))


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")


def test_hold_out_splits_into_disjoint_parts_that_keep_the_classes():
    dataset = shapes_dataset(50, 8, seed=0)
    held_out, rest = hold_out(dataset, 10, seed=0)
    assert len(held_out) == 10 and len(rest) == 40
    assert set(held_out.indices).isdisjoint(rest.indices) and set(held_out.indices) | set(rest.indices) == set(range(50))
    assert held_out.classes == rest.classes == dataset.classes


def test_num_images_takes_a_seeded_subset_of_a_dataset_on_disk(tmp_path):
    folder = write_image_folder(tmp_path / "images", per_class=5)
    subset = load_dataset("folder", str(folder), 16, num_images=4, seed=0)
    assert len(subset) == 4 and subset.classes == ["cats", "dogs"]
    assert subset.indices == load_dataset("folder", str(folder), 16, num_images=4, seed=0).indices
    assert len(load_dataset("folder", str(folder), 16)) == 10


def test_an_image_folder_is_decoded_once_into_a_cache_that_a_second_load_reads(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    first = load_dataset("folder", str(root), 16)
    caches = list(root.glob(".cache_16px_*.pt"))
    assert len(caches) == 1
    torch.save({"images": torch.zeros_like(first.images), "labels": first.labels}, caches[0])  # mark it
    assert load_dataset("folder", str(root), 16)[0][0].eq(-1).all()  # read from the cache, not decoded again


def test_a_changed_folder_or_size_builds_a_new_cache(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    load_dataset("folder", str(root), 16)
    load_dataset("folder", str(root), 8)
    (root / "cats" / "0.png").rename(root / "cats" / "renamed.png")
    assert len(load_dataset("folder", str(root), 16)) == 6
    assert len(list(root.glob(".cache_*.pt"))) == 3


def test_cifar10_is_one_uint8_tensor_and_a_batch_read_equals_item_reads(tmp_path):
    write_cifar10(tmp_path)
    dataset = load_dataset("cifar10", str(tmp_path), 32)
    assert dataset.images.dtype == torch.uint8 and dataset.images.shape == (20, 3, 32, 32)
    batch = dataset.__getitems__([3, 0, 7])
    for (image, label), i in zip(batch, (3, 0, 7)):
        assert torch.equal(image, dataset[i][0]) and label == dataset[i][1]
