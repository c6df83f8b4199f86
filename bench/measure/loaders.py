"""Loaders of a data set's training images: the chapter's pipeline, and data kept on the device.

* `chapter_loader`: the chapter's pipeline, torchvision's MNIST `__getitem__` (PIL image, ToTensor,
  Normalize((0.5,), (0.5,))) behind a shuffling DataLoader; its per-sample cost is what it measures.
* `ResidentBatches`: the images normalized once and kept on the device, shuffled by index each epoch,
  so an epoch costs little more than its training steps.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.core.keys import CaseKey
from bench.core.results import DatasetInfo
from bench.measure.data import FILE_STEMS, Dataset

MEAN, STD = 0.5, 0.5  # the chapter's Normalize((0.5,), (0.5,))
GATHER_ROWS = 512  # the resident loader gathers about this many rows at a time


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 rows of 784, exactly what ToTensor + Normalize((0.5,), (0.5,)) produce."""
    return images.reshape(len(images), -1).to(torch.float32).div_(255).sub_(MEAN).div_(STD)


def chapter_transform() -> Any:
    """The chapter's transform: ToTensor, then Normalize((0.5,), (0.5,))."""
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])


def chapter_dataset(dataset: Dataset) -> torch.utils.data.Dataset:
    """torchvision's own MNIST (or FashionMNIST) dataset over the training files, as the chapter builds it.

    torchvision reads its files from `<root>/<class name>/raw/` un-gzipped; files kept elsewhere or
    gzipped (Debian's package, synthetic data) are laid out that way once in a temporary folder.
    """
    from torchvision import datasets

    dataset_class = datasets.FashionMNIST if dataset.info.name == "fashion-mnist" else datasets.MNIST
    root = torchvision_layout(dataset.info, dataset_class.__name__)
    return dataset_class(str(root), train=True, transform=chapter_transform(), download=False)


def torchvision_layout(info: DatasetInfo, folder_name: str) -> Path:
    """A root under which `<folder_name>/raw/` holds the four files un-gzipped, as torchvision wants them."""
    files = {key: Path(path) for key, path in info.files.items()}
    raw = files["train_images"].parent
    if (
        raw.name == "raw"
        and raw.parent.name == folder_name
        and all(p.suffix != ".gz" for p in files.values())
    ):
        return raw.parent.parent
    fingerprint = hashlib.sha256()
    for key in sorted(files):
        stat = files[key].stat()
        fingerprint.update(f"{files[key].resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    uid = os.getuid() if hasattr(os, "getuid") else 0
    root = (
        Path(tempfile.gettempdir())
        / f"torch-bench-{uid}"
        / "torchvision-layout"
        / fingerprint.hexdigest()[:16]
    )
    target = root / folder_name / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for key, path in files.items():
        destination = target / FILE_STEMS[key]
        if destination.exists():
            continue
        partial = destination.with_name(destination.name + ".partial")
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as source, open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink)
        else:
            shutil.copyfile(path, partial)
        os.replace(partial, destination)
    return root


@dataclass(frozen=True)
class LoaderSettings:
    """The DataLoader settings every PyTorch user tries first; the defaults are the chapter's."""

    workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None

    @classmethod
    def of(cls, key: CaseKey) -> LoaderSettings:
        return cls(key.workers, key.pin_memory, key.persistent_workers, key.prefetch_factor)

    def kwargs(self) -> dict[str, Any]:
        given: dict[str, Any] = {"num_workers": self.workers, "pin_memory": self.pin_memory}
        if self.workers:  # torch refuses these without workers
            given["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                given["prefetch_factor"] = self.prefetch_factor
        return given


CHAPTER_SETTINGS = LoaderSettings()  # the chapter's: no workers, pageable memory


def loader_unsupported(key: CaseKey) -> str | None:
    """Why a case's loader settings cannot run on its device (pinned memory is for copies to a GPU)."""
    if key.pin_memory and not key.device.startswith("cuda"):
        return "pin_memory pins host memory for copies to a GPU: a CPU case copies nothing"
    return None


def chapter_loader(
    dataset: Dataset, batch_size: int, seed: int = 0, settings: LoaderSettings = CHAPTER_SETTINGS
) -> torch.utils.data.DataLoader:
    """The chapter's `DataLoader(train_dataset, batch_size=..., shuffle=True)` over the training set,
    with `settings` (workers, pinned memory ...) where a case asks for them."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        chapter_dataset(dataset),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        **settings.kwargs(),
    )


class ResidentBatches:
    """Normalized images and labels kept on one device; each pass shuffles by index and slices batches.

    With `shard=(rank, ranks)` each epoch keeps one rank's share of the shuffled order, as
    `torch.utils.data.DistributedSampler` does: the same permutation on every rank (same seed),
    padded with its first indices to a multiple of `ranks`, then every `ranks`-th index from `rank`;
    so across the ranks every sample is seen once an epoch (when `ranks` divides the set).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        device: torch.device | str,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        self.device = torch.device(device)
        self.inputs = normalize(images).to(self.device)
        self.labels = labels.to(self.device)
        # The order is drawn on the CPU and moved: a CUDA generator would draw another sequence from the
        # same seed, and a GPU run would not train on the batches the CPU run trains on.
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.ranks = shard

    def shuffled(self) -> torch.Tensor:
        """One epoch's order of this rank's samples (the same for a seed on every device)."""
        order = torch.randperm(len(self.labels), generator=self.generator).to(self.device)
        if self.ranks == 1:
            return order
        padding = -len(order) % self.ranks
        if padding:
            order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.ranks]

    def __len__(self) -> int:
        """Samples this rank sees in an epoch."""
        return -(-len(self.labels) // self.ranks)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled batches; the last one is ragged when the size does not divide.

        Rows are gathered a few batches at a time (about GATHER_ROWS rows, `index_select`, several
        times faster than advanced indexing), and each batch is a view into its gather. The batches
        are exactly those of gathering them one by one; on a 2-core machine, fewer and larger
        gathers made a batch-64 epoch 6-10% cheaper, the per-batch gathers' cache traffic being
        what the training steps then paid for.
        """
        order = self.shuffled()
        per_gather = max(1, GATHER_ROWS // batch_size) * batch_size
        for rows in order.split(per_gather):
            inputs, labels = self.inputs.index_select(0, rows), self.labels.index_select(0, rows)
            yield from zip(inputs.split(batch_size), labels.split(batch_size), strict=True)


def fixed_batch(
    dataset: Dataset, batch_size: int, device: torch.device | str, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` training images from `offset` on (repeated if the set is smaller), normalized, on `device`.

    The full-size tensors are allocated first, so a batch too large for the device fails at once
    with the allocator's out-of-memory error instead of after a long copy. Ranks of a data-parallel
    case take their batches at different offsets.
    """
    inputs = torch.empty((batch_size, 28 * 28), dtype=torch.float32, device=device)
    labels = torch.empty((batch_size,), dtype=torch.long, device=device)
    count = min(batch_size, len(dataset.train_labels))
    first = offset % max(len(dataset.train_labels) - count + 1, 1)
    base_inputs = normalize(dataset.train_images[first : first + count]).to(device)
    base_labels = dataset.train_labels[first : first + count].to(device)
    for start in range(0, batch_size, count):
        stop = min(start + count, batch_size)
        inputs[start:stop] = base_inputs[: stop - start]
        labels[start:stop] = base_labels[: stop - start]
    return inputs, labels
