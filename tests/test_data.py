"""Finding, identifying and loading data sets, and the two loaders, on real and synthetic IDX files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bench.core.errors import DatasetError, UsageError
from bench.measure.data import FILE_STEMS, find_files, identify, load_dataset, write_synthetic
from bench.measure.idx import read_idx, write_idx
from bench.measure.loaders import (
    ResidentBatches,
    chapter_dataset,
    chapter_loader,
    fixed_batch,
    normalize,
    torchvision_layout,
)
from tests.conftest import SMALL_TEST, SMALL_TRAIN


def test_flat_folder_of_gzipped_files_is_found_and_identified(small_real_dir: Path) -> None:
    dataset = load_dataset("fashion-mnist", small_real_dir)
    assert dataset.info.name == "fashion-mnist" and not dataset.info.synthetic
    assert dataset.train_images.shape == (SMALL_TRAIN, 28, 28)
    assert dataset.test_labels.shape == (SMALL_TEST,)
    assert dataset.info.source == str(small_real_dir)


def test_torchvision_layout_with_plain_files(tmp_path: Path, small_real_dir: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FILE_STEMS.values():
        write_idx(raw / stem, read_idx(small_real_dir / f"{stem}.gz"))
    files = find_files(tmp_path, "fashion-mnist")
    assert files is not None and files["train_images"] == raw / "train-images-idx3-ubyte"
    assert load_dataset("fashion-mnist", tmp_path).info.source == str(raw)


def test_auto_uses_a_local_copy_and_names_what_it_found(small_real_dir: Path) -> None:
    dataset = load_dataset("auto", small_real_dir)
    assert dataset.info.name == "fashion-mnist"
    assert dataset.info.requested == "auto"


def test_asking_for_mnist_but_finding_fashion_mnist_is_an_error(small_real_dir: Path) -> None:
    with pytest.raises(DatasetError, match="hold Fashion-MNIST") as error:
        load_dataset("mnist", small_real_dir)
    assert "--dataset fashion-mnist" in (error.value.hint or "")


def test_missing_mnist_without_download_lists_what_was_searched(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        load_dataset("mnist", tmp_path, download=False)
    text = str(error.value)
    assert "train-images-idx3-ubyte[.gz]" in text and str(tmp_path / "MNIST" / "raw") in text
    assert "--dataset synthetic" in text and "dataset-fashion-mnist" in text


def test_mnist_download_is_attempted_and_its_failure_is_clear(tmp_path: Path) -> None:
    """Offline (CI) the download fails: the error says so and what to do. Online it must succeed."""
    try:
        dataset = load_dataset("mnist", tmp_path)
    except DatasetError as error:
        text = str(error)
        assert "the download failed" in text
        assert "t10k-labels-idx1-ubyte[.gz]" in text and "--dataset synthetic" in text
        assert not (tmp_path / "MNIST").exists(), "a failed download must not leave empty folders behind"
    else:
        assert dataset.info.name == "mnist" and dataset.train_images.shape == (60000, 28, 28)


def test_auto_falls_back_to_synthetic_and_says_why(tmp_path: Path) -> None:
    dataset = load_dataset("auto", tmp_path)
    if dataset.info.name == "mnist":  # a machine that can download MNIST: nothing to fall back from
        assert not dataset.info.synthetic
        return
    assert dataset.info.synthetic and dataset.info.name == "synthetic"
    assert "MNIST is not available" in (dataset.info.note or "")
    assert "SYNTHETIC" in (dataset.info.note or "")
    assert dataset.train_images.shape == (60000, 28, 28)


def test_synthetic_files_are_deterministic_and_identified(tmp_path: Path) -> None:
    first = write_synthetic(tmp_path / "a", train=300, test=50)
    second = write_synthetic(tmp_path / "b", train=300, test=50)
    for key in first:
        assert first[key].read_bytes() == second[key].read_bytes()
    labels = read_idx(first["train_labels"]).long()
    assert identify(labels) == "synthetic"
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_synthetic_data_set_is_written_once_and_labelled(tmp_path: Path) -> None:
    dataset = load_dataset("synthetic", tmp_path)
    assert dataset.info.synthetic and dataset.info.name == "synthetic"
    assert "not meaningful" in (dataset.info.note or "")
    assert dataset.train_images.shape == (60000, 28, 28) and dataset.test_images.shape == (10000, 28, 28)
    folder = tmp_path / "synthetic" / "raw"
    stamps = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = load_dataset("synthetic", tmp_path)
    assert {path.name: path.stat().st_mtime_ns for path in folder.iterdir()} == stamps
    assert torch.equal(again.train_images, dataset.train_images)


def test_corrupt_file_in_a_data_set_names_the_file(tmp_path: Path, small_real_dir: Path) -> None:
    shutil.copytree(small_real_dir, tmp_path / "data")
    broken = tmp_path / "data" / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(DatasetError, match=str(broken)):
        load_dataset("fashion-mnist", tmp_path / "data")


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path: Path, small_real_dir: Path) -> None:
    shutil.copytree(small_real_dir, tmp_path / "data")
    labels = tmp_path / "data" / "train-labels-idx1-ubyte.gz"
    write_idx(labels, read_idx(labels)[:10].clone())
    with pytest.raises(DatasetError, match="do not match"):
        load_dataset("fashion-mnist", tmp_path / "data")


def test_empty_files_are_rejected_before_measuring(tmp_path: Path, small_real_dir: Path) -> None:
    shutil.copytree(small_real_dir, tmp_path / "data")
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        path = tmp_path / "data" / f"{stem}.gz"
        write_idx(path, read_idx(path)[:0].clone())
    with pytest.raises(DatasetError, match="hold no images"):
        load_dataset("fashion-mnist", tmp_path / "data")


def test_the_chapters_loader_reshuffles_every_epoch(small_real_dir: Path) -> None:
    from bench.measure.workloads import make_epochs

    dataset = load_dataset("fashion-mnist", small_real_dir)
    for loader in ("torchvision", "resident"):
        epochs = make_epochs(loader, dataset, "cpu", batch_size=100)
        first = torch.cat([labels for _, labels in epochs.batches()])
        second = torch.cat([labels for _, labels in epochs.batches()])
        assert not torch.equal(first, second), loader
        assert torch.equal(first.sort().values, second.sort().values)


def test_unknown_dataset_name_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", tmp_path)


def test_the_chapters_dataset_is_torchvisions_own_class_over_its_layout(
    small_real_dir: Path, tmp_path: Path
) -> None:
    """No subclass, no skipped __init__: torchvision's FashionMNIST reading files laid out as it wants."""
    from torchvision import datasets

    dataset = load_dataset("fashion-mnist", small_real_dir)
    chapter = chapter_dataset(dataset)
    assert type(chapter) is datasets.FashionMNIST and len(chapter) == SMALL_TRAIN
    assert torch.equal(chapter.data, dataset.train_images) and torch.equal(
        chapter.targets, dataset.train_labels
    )
    root = torchvision_layout(dataset.info, "FashionMNIST")
    raw = root / "FashionMNIST" / "raw"
    stamps = {path.name: path.stat().st_mtime_ns for path in raw.iterdir()}
    assert sorted(stamps) == sorted(FILE_STEMS.values())  # un-gzipped, as torchvision looks for them
    assert torchvision_layout(dataset.info, "FashionMNIST") == root  # laid out once, then reused
    assert {path.name: path.stat().st_mtime_ns for path in raw.iterdir()} == stamps
    # files already in torchvision's layout are read where they are
    in_place = tmp_path / "FashionMNIST" / "raw"
    in_place.mkdir(parents=True)
    for stem in FILE_STEMS.values():
        write_idx(in_place / stem, read_idx(small_real_dir / f"{stem}.gz"))
    assert torchvision_layout(load_dataset("fashion-mnist", tmp_path).info, "FashionMNIST") == tmp_path


def test_resident_batches_equal_the_chapter_pipeline(small_real_dir: Path) -> None:
    """The resident loader's normalization is exactly ToTensor + Normalize((0.5,), (0.5,))."""
    dataset = load_dataset("fashion-mnist", small_real_dir)
    chapter = chapter_loader(dataset, batch_size=1).dataset
    resident = normalize(dataset.train_images)
    for index in (0, 1, 517, SMALL_TRAIN - 1):
        image, label = chapter[index]
        assert image.shape == (1, 28, 28)
        assert torch.allclose(image.view(-1), resident[index], atol=1e-6)
        assert label == int(dataset.train_labels[index])
    assert float(resident.min()) >= -1.0 and float(resident.max()) <= 1.0


@pytest.mark.parametrize("loader", ["torchvision", "resident"])
def test_an_epoch_sees_every_sample_once_with_a_ragged_last_batch(small_real_dir: Path, loader: str) -> None:
    dataset = load_dataset("fashion-mnist", small_real_dir)
    batch_size = 64  # 1000 = 15 * 64 + 40
    if loader == "torchvision":
        batches = list(chapter_loader(dataset, batch_size))
    else:
        batches = list(ResidentBatches(dataset.train_images, dataset.train_labels, "cpu").batches(batch_size))
    sizes = [len(labels) for _, labels in batches]
    assert sizes == [64] * 15 + [40]
    seen = torch.cat([labels for _, labels in batches])
    assert torch.equal(seen.sort().values, dataset.train_labels.sort().values)
    first_order = torch.cat([labels for _, labels in batches])
    assert not torch.equal(first_order, dataset.train_labels), "batches should be shuffled"


def test_fixed_batch_repeats_a_small_set(small_real_dir: Path) -> None:
    dataset = load_dataset("fashion-mnist", small_real_dir)
    inputs, labels = fixed_batch(dataset, SMALL_TRAIN + 10, "cpu")
    assert inputs.shape == (SMALL_TRAIN + 10, 784) and inputs.dtype == torch.float32
    # the training images in order, scaled as ToTensor + Normalize((0.5,), (0.5,)) scale them
    expected = (dataset.train_images.reshape(SMALL_TRAIN, 784).float() / 255 - 0.5) / 0.5
    assert torch.allclose(inputs[:SMALL_TRAIN], expected, atol=1e-6)
    assert torch.equal(inputs[SMALL_TRAIN:], expected[:10])
    assert torch.equal(labels[:SMALL_TRAIN], dataset.train_labels)
    assert torch.equal(labels[SMALL_TRAIN:], dataset.train_labels[:10])
    small_inputs, small_labels = fixed_batch(dataset, 7, "cpu")  # smaller than the set: its first 7
    assert torch.allclose(small_inputs, expected[:7], atol=1e-6)
    assert torch.equal(small_labels, dataset.train_labels[:7])
