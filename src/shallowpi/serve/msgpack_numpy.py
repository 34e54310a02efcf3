"""msgpack with NumPy arrays, byte-compatible with `openpi_client.msgpack_numpy`.

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


class TooManyItems(ValueError):
    """A frame holds more maps/lists entries than `max_items` (memory bound for untrusted frames)."""


def _counting_hooks(max_items: int):
    """object_hook / list_hook that count container entries: a frame of a million empty maps costs
    ~100 bytes of Python objects per byte of msgpack, so a frame-size cap alone does not bound memory."""
    count = 0

    def add(n: int) -> None:
        nonlocal count
        count += n + 1
        if count > max_items:
            raise TooManyItems(f"more than {max_items} maps/list entries in one frame")

    def object_hook(obj: dict) -> Any:
        add(len(obj))
        return unpack_array(obj)

    def list_hook(obj: list) -> list:
        add(len(obj))
        return obj

    return object_hook, list_hook


def unpackb(data: bytes, *, max_items: int | None = None) -> Any:
    """Decode one frame. Any malformation (truncated bytes, trailing bytes, bad array map) -> ValueError.

    `max_items` bounds the number of map / list entries (the server's guard; None: no bound).
    """
    try:
        if max_items is None:
            return msgpack.unpackb(data, object_hook=unpack_array)
        object_hook, list_hook = _counting_hooks(max_items)
        return msgpack.unpackb(
            data,
            object_hook=object_hook,
            list_hook=list_hook,
            max_array_len=max_items,  # refused before the list is allocated
            max_map_len=max_items,
        )
    except Exception as e:  # msgpack's FormatError/ExtraData/..., our array checks, unhashable keys
        raise ValueError(f"malformed msgpack frame: {type(e).__name__}: {e}") from e
