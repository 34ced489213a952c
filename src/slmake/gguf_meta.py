"""A GGUF file's metadata and tensor table, read in a fraction of a second.

gguf-py's GGUFReader makes numpy views for every string of the header: opening a 49k-token
vocabulary (SmolLM2) takes ~6 s, a 262k one (Gemma 3) ~30 s, and the check, base, compile and
deploy stages each open GGUFs only for a handful of keys. This module reads the same header
(GGUF v2/v3, little-endian) with struct and numpy and returns what `ReaderField.contents()` returns
for every key. Any other file (big-endian, another version, a nested array, a damaged header) is
handed to GGUFReader, so its errors are the ones a user sees.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = 0x46554747   # "GGUF" read as a little-endian uint32
VERSIONS = (2, 3)
STRING, ARRAY = 8, 9
# GGUF value type -> its struct format, which numpy also takes as the dtype of an array of them
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]   # as stored (ggml's ne order), as GGUFReader's ReaderTensor.shape
    type_id: int             # ggml type (gguf.GGMLQuantizationType's value)


@dataclass(frozen=True)
class Header:
    fields: dict[str, Any]   # key -> ReaderField.contents(), including GGUF.version/tensor_count/kv_count
    tensors: list[Tensor]


class _Unsupported(Exception):
    """Not a layout this reader takes: GGUFReader reads it (or says what is wrong)."""


def read(path: Path | str) -> Header:
    """The GGUF header of ``path``: every metadata field and the tensor table."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm)
    except (_Unsupported, struct.error, UnicodeDecodeError, ValueError, OverflowError):
        return _with_gguf_py(path)


def _parse(mm) -> Header:
    import numpy as np  # here, not at the top: model_files (spec checks, `slmake --help`) imports this module

    magic, version = struct.unpack_from("<II", mm, 0)
    if magic != MAGIC or version not in VERSIONS:
        raise _Unsupported
    n_tensors, n_kv = struct.unpack_from("<QQ", mm, 8)
    fields: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
    pos = 24

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", mm, at)
        end = at + 8 + n
        if end > len(mm):
            raise _Unsupported
        return mm[at + 8:end].decode("utf-8"), end

    for _ in range(n_kv):
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", mm, pos)
        pos += 4
        if key in fields:
            raise _Unsupported   # GGUFReader refuses duplicate keys
        if vtype == STRING:
            fields[key], pos = string(pos)
        elif vtype in SCALARS:
            fmt = SCALARS[vtype]
            (fields[key],) = struct.unpack_from(fmt, mm, pos)
            pos += struct.calcsize(fmt)
        elif vtype == ARRAY:
            etype, count = struct.unpack_from("<IQ", mm, pos)
            pos += 12
            if etype == STRING:
                items = []
                for _ in range(count):
                    s, pos = string(pos)
                    items.append(s)
                fields[key] = items
            elif etype in SCALARS:
                arr = np.frombuffer(mm, dtype=SCALARS[etype], count=count, offset=pos)
                fields[key] = arr.tolist()
                pos += arr.nbytes
            else:
                raise _Unsupported   # arrays of arrays: GGUFReader's own flattening applies
        else:
            raise _Unsupported
    tensors = []
    for _ in range(n_tensors):
        name, pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", mm, pos)
        shape = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
        pos += 4 + 8 * n_dims
        type_id, _offset = struct.unpack_from("<IQ", mm, pos)
        pos += 12
        tensors.append(Tensor(name, tuple(shape), type_id))
    return Header(fields, tensors)


def _with_gguf_py(path: Path | str) -> Header:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return Header({k: f.contents() for k, f in reader.fields.items()},
                  [Tensor(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in reader.tensors])


def type_name(type_id: int) -> str:
    """ggml's name of a tensor type ("Q8_0", "F32"), as gguf.GGMLQuantizationType spells it."""
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type{type_id}"


@contextmanager
def gguf_py_reads_once() -> Iterator[None]:
    """Within this block, gguf-py's GGUFReader reads each file once. transformers loads a GGUF
    model through it twice (the config, then the weights; three times with its own tokenizer), at
    the cost above: ~8 s per read for SmolLM2, ~35 s for Gemma 3 270M. The reader holds read-only
    memory-mapped views, so handing the first one out again gives the same values."""
    import gguf

    real, readers = gguf.GGUFReader, {}

    def reader(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real
