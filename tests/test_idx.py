"""The IDX reader on real, synthetic and damaged files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from bench.core.errors import DatasetError
from bench.measure.idx import IMAGE_DIMS, LABEL_DIMS, read_idx, write_idx
from tests.conftest import SMALL_REAL_DIR, SMALL_TRAIN


def test_reads_real_fashion_mnist_gzipped() -> None:
    images = read_idx(SMALL_REAL_DIR / "train-images-idx3-ubyte.gz", IMAGE_DIMS)
    labels = read_idx(SMALL_REAL_DIR / "train-labels-idx1-ubyte.gz", LABEL_DIMS)
    assert images.shape == (SMALL_TRAIN, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (SMALL_TRAIN,)
    assert int(labels.max()) == 9 and int(labels.min()) == 0
    assert 0 < float(images.float().mean()) < 255


@pytest.mark.parametrize("name", ["plain-idx3-ubyte", "zipped-idx3-ubyte.gz"])
def test_write_then_read_round_trip(tmp_path: Path, name: str) -> None:
    data = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    path = write_idx(tmp_path / name, data)
    assert torch.equal(read_idx(path, IMAGE_DIMS), data)
    if name.endswith(".gz"):
        with gzip.open(path) as handle:
            assert handle.read(4) == bytes([0, 0, 8, 3])


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    """Same tensor, same bytes: no write time and no temporary name in the gzip header.

    Two writes within one second would match even with the time in the header, so the header's
    fields are read: MTIME (bytes 4-7) is zero and FNAME is the final name, not the temporary one.
    """
    data = torch.arange(10, dtype=torch.uint8)
    first = write_idx(tmp_path / "a" / "labels.gz", data).read_bytes()
    second = write_idx(tmp_path / "b" / "labels.gz", data).read_bytes()
    assert first == second
    assert first[:3] == b"\x1f\x8b\x08"  # gzip, deflate
    assert int.from_bytes(first[4:8], "little") == 0, "the write time is in the gzip header"
    if first[3] & 0x08:  # FNAME: the name gunzip would restore
        assert first[10 : first.index(b"\x00", 10)] == b"labels"
    with gzip.open(tmp_path / "a" / "labels.gz") as handle:
        assert handle.read()[8:] == bytes(range(10))


def _valid_bytes() -> bytes:
    return bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(range(5))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "too short"),
        (bytes([1, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(5), "bad magic"),
        (bytes([0, 0, 0x0D, 1]) + (5).to_bytes(4, "big") + bytes(20), "not unsigned byte"),
        (_valid_bytes()[:-2], "truncated"),
        (_valid_bytes() + b"\x00", "trailing bytes"),
        (bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big"), "file ends after"),
    ],
)
def test_damaged_files_name_the_file_and_the_problem(tmp_path: Path, payload: bytes, expected: str) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DatasetError) as error:
        read_idx(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_wrong_number_of_dimensions_is_reported(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", torch.zeros(5, dtype=torch.uint8))
    with pytest.raises(DatasetError, match="1 dimension"):
        read_idx(path, IMAGE_DIMS)


def test_damaged_gzip_is_reported(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", torch.zeros(100, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match=r"corrupt dataset file .*x\.gz: gzip data is damaged"):
        read_idx(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        read_idx(tmp_path / "nope")


def test_a_gzip_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """Was: a 9 MB gzip expanding to 2 GiB, its header claiming 10⁹ images, took 5 GB before it was refused."""
    import resource

    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**9, 28, 28)
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header)
        for _ in range(64):  # 256 MiB of zeros behind it, a few hundred KB on disk
            handle.write(bytes(1 << 22))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DatasetError, match="header claims shape"):
        read_idx(path, IMAGE_DIMS)
    small = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(small, "wb", compresslevel=1) as handle:
        handle.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10))
        for _ in range(64):
            handle.write(bytes(1 << 22))
    with pytest.raises(DatasetError, match="has trailing bytes"):
        read_idx(small)  # reads its 10 bytes and one more, not the 256 MiB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: under 100 MiB
