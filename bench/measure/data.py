"""Datasets: find or download MNIST-format files, or write synthetic ones, and read them.

Every dataset, real or synthetic, is read by `bench.measure.idx.read_idx` (one code path, every
field checked); `bench.measure.loaders` feeds its batches.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.core.catalog import DATA_DIR_ENV, DATASETS, dataset_display_name
from bench.core.envvars import env_path
from bench.core.errors import DatasetError, UsageError
from bench.core.results import DatasetInfo
from bench.measure.idx import IMAGE_DIMS, LABEL_DIMS, read_idx, write_idx

FILE_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# torchvision keeps each dataset under <root>/<class name>/raw/
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
# The first training labels identify the data set whatever its files are called.
LABEL_FINGERPRINTS = {
    "mnist": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
    "fashion-mnist": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
    "synthetic": (0, 3, 6, 9, 2, 5, 8, 1, 4, 7),
}
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 60_000, 10_000


def default_data_dir() -> Path:
    """`$BENCH_DATA_DIR`, else a cache folder (`$XDG_CACHE_HOME/torch-bench/data`)."""
    chosen = env_path(DATA_DIR_ENV)
    if chosen is not None:
        return chosen
    cache = env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return cache / "torch-bench" / "data"


@dataclass
class Dataset:
    """The four arrays of an MNIST-format data set, as read from disk (uint8 images, int64 labels)."""

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_dataset(
    name: str = "auto", data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> Dataset:
    """Finds (or downloads, or writes) the data set `name` and reads it; see the module docstring."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}", hint=f"choose one of: {', '.join(DATASETS)}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "synthetic":
        return _read(synthetic_files(root), requested=name, expected=None)
    if name in TORCHVISION_FOLDER:
        files = find_files(root, name) or _download(root, name, download)
        return _read(files, requested=name, expected=name)
    # auto: MNIST when it is here or can be downloaded, else synthetic, and say so.
    local = find_files(root, "mnist")
    if local is not None:
        return _read(local, requested=name, expected=None)
    try:
        files = _download(root, "mnist", download)
    except DatasetError as error:
        reason = error.short or error.message
        dataset = _read(synthetic_files(root), requested=name, expected=None)
        note = f"MNIST is not available: {reason}; using SYNTHETIC data, accuracy is not meaningful"
        info = DatasetInfo(**{**asdict(dataset.info), "note": note, "download_error": error.message})
        return Dataset(
            info, dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels
        )
    return _read(files, requested=name, expected="mnist")


def candidate_folders(root: Path, name: str) -> list[Path]:
    """Where files of `name` may sit: torchvision's layout first, then the folder itself (Debian's)."""
    folders = [root / TORCHVISION_FOLDER[name] / "raw"] if name in TORCHVISION_FOLDER else []
    return [*folders, root]


def find_files(root: Path, name: str) -> dict[str, Path] | None:
    """The four IDX files of `name` under `root`, each plain or gzipped; None unless all four are found."""
    for folder in candidate_folders(root, name):
        found: dict[str, Path] = {}
        for key, stem in FILE_STEMS.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILE_STEMS):
            return found
    return None


def _download(root: Path, name: str, allowed: bool) -> dict[str, Path]:
    looked = ", ".join(str(folder) for folder in candidate_folders(root, name))
    stems = ", ".join(f"{stem}[.gz]" for stem in FILE_STEMS.values())
    alternatives = (
        "alternatives: --dataset synthetic (runs anywhere, accuracy not meaningful); "
        "--dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist (Debian: apt-get install "
        f"dataset-fashion-mnist); or copy the four files into {root / TORCHVISION_FOLDER[name] / 'raw'}"
    )
    missing = f"{dataset_display_name(name)} not found: looked for {stems} in {looked}"
    if not allowed:
        raise DatasetError(f"{missing}; downloading is turned off", hint=alternatives)
    from torchvision import datasets  # imported here: finding local files must not need torchvision

    dataset_class = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        root.mkdir(parents=True, exist_ok=True)
        dataset_class(str(root), train=True, download=True)
    except Exception as error:  # torchvision raises RuntimeError/URLError/OSError by mirror
        _remove_empty(root / TORCHVISION_FOLDER[name])
        detail = " ".join(str(error).split())
        failure = DatasetError(f"{missing}, and the download failed: {detail}", hint=alternatives)
        last_reason = detail.rsplit("got:", 1)[-1].strip()
        failure.short = f"no local copy under {root} and the download failed ({last_reason})"
        raise failure from None
    files = find_files(root, name)
    if files is None:
        raise DatasetError(f"{missing}: the download finished but the files are not there", hint=alternatives)
    return files


def _remove_empty(folder: Path) -> None:
    """Removes the empty folders a failed download leaves in the user's data folder."""
    for path in (folder / "raw", folder):
        try:
            path.rmdir()
        except OSError:
            return


def identify(train_labels: torch.Tensor) -> str | None:
    """Which known data set these training labels belong to (by their first ten), or None."""
    head = tuple(int(label) for label in train_labels[:10])
    for name, fingerprint in LABEL_FINGERPRINTS.items():
        if head == fingerprint:
            return name
    return None


def _read(files: dict[str, Path], requested: str, expected: str | None) -> Dataset:
    train_images = read_idx(files["train_images"], IMAGE_DIMS)
    train_labels = read_idx(files["train_labels"], LABEL_DIMS).long()
    test_images = read_idx(files["test_images"], IMAGE_DIMS)
    test_labels = read_idx(files["test_labels"], LABEL_DIMS).long()
    for images, labels, split in ((train_images, train_labels, "train"), (test_images, test_labels, "t10k")):
        if len(labels) == 0:
            raise DatasetError(
                f"the {split} files hold no images: {files[f'{_key(split)}_labels']}",
                hint="replace them with complete copies",
            )
        if len(images) != len(labels):
            raise DatasetError(
                f"the {split} files do not match: {len(images):,} images in {files[f'{_key(split)}_images']} "
                f"but {len(labels):,} labels in {files[f'{_key(split)}_labels']}",
                hint="the two files come from different copies; replace both from one source",
            )
        if len(labels) and int(labels.max()) >= 10:
            raise DatasetError(
                f"labels above 9 in {files[f'{_key(split)}_labels']}: not an MNIST-format label file"
            )
    if tuple(train_images.shape[1:]) != (28, 28) or tuple(test_images.shape[1:]) != (28, 28):
        raise DatasetError(
            f"images are {tuple(train_images.shape[1:])} pixels in {files['train_images']}; the model needs 28x28"
        )
    identified = identify(train_labels)
    if expected is not None and identified not in (None, expected):
        raise DatasetError(
            f"--dataset {expected} was asked for, but the files in {files['train_images'].parent} hold "
            f"{dataset_display_name(identified)} (recognised by their labels)",
            hint=f"use --dataset {identified}, or point --data-dir at a folder holding {dataset_display_name(expected)}",
        )
    name = identified or expected or "idx"
    info = DatasetInfo(
        name=name,
        requested=requested,
        source=str(files["train_images"].parent),
        files={key: str(path) for key, path in files.items()},
        train_samples=len(train_labels),
        test_samples=len(test_labels),
        synthetic=name == "synthetic",
        note="synthetic data: accuracy is not meaningful" if name == "synthetic" else None,
    )
    return Dataset(info, train_images, train_labels, test_images, test_labels)


def _key(split: str) -> str:
    return "train" if split == "train" else "test"


# --- synthetic data -----------------------------------------------------------------------------


def synthetic_files(root: Path) -> dict[str, Path]:
    """MNIST-format files of synthetic digits under `root/synthetic/raw`, written once and reused."""
    folder = root / "synthetic" / "raw"
    files = find_files(folder, "synthetic")
    if files is not None:
        return files
    try:
        return write_synthetic(folder)
    except OSError:
        fallback = Path(tempfile.gettempdir()) / "torch-bench-synthetic" / "raw"
        return find_files(fallback, "synthetic") or write_synthetic(fallback)


def write_synthetic(
    folder: str | os.PathLike[str],
    train: int = SYNTHETIC_TRAIN,
    test: int = SYNTHETIC_TEST,
    compress: bool = False,
) -> dict[str, Path]:
    """Writes a deterministic, learnable MNIST-format data set: ten class patterns under pixel noise."""
    folder = Path(folder)
    generator = torch.Generator().manual_seed(20240601)
    coarse = torch.rand(10, 1, 7, 7, generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)[
        :, 0
    ]
    suffix = ".gz" if compress else ""
    paths = {}
    for split, count in (("train", train), ("test", test)):
        index = torch.arange(count)
        labels = ((index * 3 + index // 10) % 10).to(torch.uint8)  # first ten: the synthetic fingerprint
        noise = torch.randn(count, 28, 28, generator=generator) * 0.35
        images = ((patterns[labels.long()] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        paths[f"{split}_images"] = write_idx(folder / f"{FILE_STEMS[f'{split}_images']}{suffix}", images)
        paths[f"{split}_labels"] = write_idx(folder / f"{FILE_STEMS[f'{split}_labels']}{suffix}", labels)
    return paths


# --- loaders ------------------------------------------------------------------------------------
