"""msgpack with NumPy arrays, byte-compatible with `openpi_client.msgpack_numpy` (ecosystem.md §2, items 10-12).

Wire format (the keys are msgpack *bytes*, the dtype is a msgpack *str*):

    np.ndarray -> {b"__ndarray__": True, b"data": C-order bytes, b"dtype": arr.dtype.str, b"shape": [..]}
    np.generic -> {b"__npgeneric__": True, b"data": scalar.item(), b"dtype": scalar.dtype.str}

Everything else (dict, list, str, int, float, bool, None, bytes) is plain msgpack. Object, void (structured)
and complex dtypes are refused in both directions: there is no pickle fallback, so decoding a frame from the
network never runs code. Decoding is stricter than openpi's (it checks that the byte count matches the shape)
because the server decodes frames from untrusted clients; a bad frame raises `ValueError`.

Decoded arrays are read-only views of the received frame (no copy), as in openpi.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("V", "O", "c")  # void/structured, object, complex: not representable safely


def pack_array(obj: Any) -> Any:
    """`default=` hook for msgpack.Packer: called only for objects msgpack cannot pack by itself."""
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"unsupported dtype for msgpack-numpy: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__} with msgpack-numpy")


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise ValueError(f"msgpack-numpy dtype must be a string, got {type(value).__name__}")
    try:
        dtype = np.dtype(value)
    except TypeError as e:  # numpy raises TypeError for unknown dtype strings
        raise ValueError(f"unknown dtype {value!r}") from e
    if dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"unsupported dtype for msgpack-numpy: {dtype}")
    return dtype


def unpack_array(obj: dict) -> Any:
    """`object_hook=` for msgpack.unpackb: turns the two tagged maps back into NumPy objects."""
    if b"__ndarray__" in obj:
        data, shape = obj.get(b"data"), obj.get(b"shape")
        dtype = _dtype(obj.get(b"dtype"))
        if not isinstance(data, bytes):
            raise ValueError("msgpack-numpy array: 'data' must be bytes")
        if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"msgpack-numpy array: bad shape {shape!r}")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise ValueError(
                f"msgpack-numpy array: {len(data)} bytes of data for shape {tuple(shape)} {dtype} ({expected} expected)"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"msgpack-numpy scalar: cannot make {dtype} from {obj.get(b'data')!r}") from e
    return obj


Packer = functools.partial(msgpack.Packer, default=pack_array)
packb = functools.partial(msgpack.packb, default=pack_array)


def unpackb(data: bytes) -> Any:
    """Decode one frame. Any malformation (truncated bytes, trailing bytes, bad array map) -> ValueError."""
    try:
        return msgpack.unpackb(data, object_hook=unpack_array)
    except Exception as e:  # msgpack's FormatError/ExtraData/..., our array checks, unhashable keys
        raise ValueError(f"malformed msgpack frame: {type(e).__name__}: {e}") from e
