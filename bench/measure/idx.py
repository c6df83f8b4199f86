"""The IDX file format of MNIST and Fashion-MNIST: read with every field checked, and write.

Layout: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of dimensions,
one big-endian uint32 per dimension, then the data. Files may be gzipped. A truncated or corrupt
file raises DatasetError naming the file and what is wrong with it, instead of the bare assertion
or reshape error a reader deeper down would give.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Protocol

import torch

from bench.core.errors import DatasetError

UBYTE = 0x08
IMAGE_DIMS = 3  # count, rows, columns
LABEL_DIMS = 1  # count
MAX_CLAIM_BYTES = 4 * 2**30  # 60,000 MNIST images are 47 MB; EMNIST's 800,000 are 630 MB
CHUNK = 1 << 22


def read_idx(path: str | os.PathLike[str], expected_dims: int | None = None) -> torch.Tensor:
    """Reads an IDX file of unsigned bytes (gzipped or not) into a uint8 tensor of its shape.

    Streamed: the header is read and checked first, and no more is read than it claims (plus one
    byte, to see trailing data), so a small gzip that expands to gigabytes costs at most its claim,
    and a claim beyond MAX_CLAIM_BYTES is refused before any of it is read."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            return _parse(path, handle, expected_dims)
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise _corrupt(path, f"gzip data is damaged ({error})") from None
    except OSError as error:
        raise DatasetError(f"cannot read dataset file {path}: {error.strerror or error}") from None


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _parse(path: Path, handle: _Readable, expected_dims: int | None) -> torch.Tensor:
    head = handle.read(4)
    if len(head) < 4:
        raise _corrupt(path, f"{len(head)} bytes is too short for an IDX header")
    zero0, zero1, type_code, ndim = head
    if zero0 != 0 or zero1 != 0:
        raise _corrupt(path, f"bad magic number 0x{head.hex()} (an IDX file starts with two zero bytes)")
    if type_code != UBYTE:
        raise _corrupt(path, f"data type 0x{type_code:02x} is not unsigned byte (0x08)")
    if expected_dims is not None and ndim != expected_dims:
        kind = "image" if expected_dims == IMAGE_DIMS else "label"
        raise _corrupt(path, f"{ndim} dimension(s) where an {kind} file has {expected_dims}")
    dims = handle.read(4 * ndim)
    header_size = 4 + 4 * ndim
    if len(dims) < 4 * ndim:
        raise _corrupt(
            path, f"header announces {ndim} dimensions but the file ends after {4 + len(dims)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", dims)
    size = _product(shape)
    if size > MAX_CLAIM_BYTES:
        raise _corrupt(
            path,
            f"header claims shape {tuple(shape)} ({size:,} bytes), more than the {MAX_CLAIM_BYTES:,} read",
        )
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        read = handle.readinto(view[got : got + CHUNK])  # type: ignore[attr-defined]
        if not read:
            break
        got += read
    expected = header_size + size
    if got < size or handle.read(1):
        state = "truncated" if got < size else "has trailing bytes"
        holds = f"{header_size + got:,}" if got < size else "more"
        raise _corrupt(
            path, f"{state}: header says shape {tuple(shape)} ({expected:,} bytes) but the file holds {holds}"
        )
    if size == 0:  # no items (torch.frombuffer refuses an empty buffer)
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(data, dtype=torch.uint8).reshape(shape)


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor, compress: bool | None = None) -> Path:
    """Writes a uint8 tensor as an IDX file, gzipped when the name ends in `.gz` (or `compress`)."""
    path = Path(path)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"IDX files written here hold uint8, not {tensor.dtype}")
    tensor = tensor.contiguous().cpu()
    header = bytes([0, 0, UBYTE, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    payload = header + tensor.numpy().tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(
        f"{path.name}.{os.getpid()}.tmp"
    )  # processes writing the same file at once (ranks) each write their own
    if compress:
        # mtime 0 and the final name in the header: identical bytes on every write
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename=path.stem, mode="wb", fileobj=raw, mtime=0) as handle,
        ):
            handle.write(payload)
    else:
        tmp.write_bytes(payload)
    os.replace(tmp, path)
    return path


def _corrupt(path: Path, reason: str) -> DatasetError:
    return DatasetError(
        f"corrupt dataset file {path}: {reason}",
        hint="delete it and let the harness download it again, or copy a good one in its place",
    )


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
