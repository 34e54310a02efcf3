"""msgpack-numpy: the exact wire format openpi-client speaks, and safe decoding of untrusted frames."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from shallowpi.serve import msgpack_numpy


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(24, dtype=np.uint8).reshape(2, 4, 3),
        np.array([1.5, -2.0], dtype=np.float64),
        np.array([True, False]),
        np.arange(6, dtype=">i4").reshape(2, 3),  # byte order travels in dtype.str
        np.zeros((0, 7), dtype=np.float32),
        np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),  # non-C-order input
        np.array(["ab", "c"]),
    ],
)
def test_array_round_trip_keeps_values_dtype_shape(arr):
    out = msgpack_numpy.unpackb(msgpack_numpy.packb({"x": arr, "nested": [{"y": arr}]}))
    for got in (out["x"], out["nested"][0]["y"]):
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)


def test_wire_format_is_openpis():
    """Keys are bytes, dtype is dtype.str, data is C-order bytes: what openpi_client.msgpack_numpy emits."""
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = msgpack.unpackb(msgpack_numpy.packb({"a": arr, "s": np.int64(7)}))
    assert raw["a"] == {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    assert raw["s"] == {b"__npgeneric__": True, b"data": 7, b"dtype": "<i8"}

    # And a frame built by hand the way openpi's Packer builds it decodes to the same objects.
    frame = msgpack.packb(
        {
            "img": {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": (2, 3)},
            "prompt": "go",
        }
    )
    obs = msgpack_numpy.unpackb(frame)
    np.testing.assert_array_equal(obs["img"], arr)
    assert obs["prompt"] == "go"


def test_numpy_scalars_round_trip():
    out = msgpack_numpy.unpackb(msgpack_numpy.packb([np.float32(1.25), np.int8(-3), np.bool_(True)]))
    assert [type(v) for v in out] == [np.float32, np.int8, np.bool_]
    assert out == [1.25, -3, True]


@pytest.mark.parametrize(
    "bad", [np.zeros(2, np.complex64), np.array([object()]), np.zeros(2, "V4"), np.complex128(1j)]
)
def test_object_void_complex_refused_when_packing(bad):
    with pytest.raises(ValueError, match="unsupported dtype"):
        msgpack_numpy.packb({"x": bad})


def _array_map(data: bytes, dtype: str, shape) -> bytes:
    return msgpack.packb({"x": {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}})


@pytest.mark.parametrize(
    "frame, reason",
    [
        (_array_map(b"\x00" * 8, "|O", [1]), "unsupported dtype"),  # would read pointers out of the buffer
        (_array_map(b"\x00" * 8, "<c8", [1]), "unsupported dtype"),
        (_array_map(b"\x00" * 3, "<f4", [1]), "bytes of data"),  # too short
        (_array_map(b"\x00" * 8, "<f4", [1]), "bytes of data"),  # too long
        (_array_map(b"\x00" * 4, "<f4", [-1]), "bad shape"),
        (_array_map(b"\x00" * 4, "nonsense", [1]), "unknown dtype"),
        (msgpack.packb({"a": 1})[:-1], "incomplete"),  # truncated
        (msgpack.packb({"a": 1}) + b"\x01", "ExtraData"),  # trailing bytes
        (b"\xc1", "FormatError"),  # reserved byte, never valid msgpack
    ],
)
def test_malformed_frames_raise_value_error_with_reason(frame, reason):
    with pytest.raises(ValueError, match=reason):
        msgpack_numpy.unpackb(frame)


def test_decoded_arrays_are_read_only_views():
    """Zero-copy like openpi; code that wants to write must copy (PiPolicy never writes in place)."""
    out = msgpack_numpy.unpackb(msgpack_numpy.packb(np.zeros(4, np.float32)))
    assert not out.flags.writeable
