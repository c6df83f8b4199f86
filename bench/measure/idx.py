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

import torch

from bench.core.errors import DatasetError

UBYTE = 0x08
IMAGE_DIMS = 3  # count, rows, columns
LABEL_DIMS = 1  # count


def read_idx(path: str | os.PathLike[str], expected_dims: int | None = None) -> torch.Tensor:
    """Reads an IDX file of unsigned bytes (gzipped or not) into a uint8 tensor of its shape."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise _corrupt(path, f"{len(raw)} bytes is too short for an IDX header")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise _corrupt(path, f"bad magic number 0x{raw[:4].hex()} (an IDX file starts with two zero bytes)")
    if type_code != UBYTE:
        raise _corrupt(path, f"data type 0x{type_code:02x} is not unsigned byte (0x08)")
    if expected_dims is not None and ndim != expected_dims:
        kind = "image" if expected_dims == IMAGE_DIMS else "label"
        raise _corrupt(path, f"{ndim} dimension(s) where an {kind} file has {expected_dims}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise _corrupt(path, f"header announces {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = header_size + _product(shape)
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise _corrupt(
            path,
            f"{state}: header says shape {tuple(shape)} ({expected:,} bytes) but the file holds {len(raw):,}",
        )
    if expected == header_size:  # no items (torch.frombuffer refuses an empty buffer)
        return torch.empty(shape, dtype=torch.uint8)
    data = torch.frombuffer(bytearray(raw[header_size:]), dtype=torch.uint8)
    return data.reshape(shape)


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


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"dataset file not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise _corrupt(path, f"gzip data is damaged ({error})") from None
    except OSError as error:
        raise DatasetError(f"cannot read dataset file {path}: {error.strerror or error}") from None


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
