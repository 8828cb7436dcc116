"""image_transport's compressed formats: RVL and compressedDepth laid out byte for byte as
image_transport_plugins writes them, read back exactly; damaged or lying messages are one-line errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ovseg3d.errors import UserError
from ovseg3d.ros.compressed import (
    compressed_color,
    compressed_depth,
    decode_rvl,
    encode_compressed_color,
    encode_compressed_depth,
    encode_rvl,
)


def test_rvl_round_trips_zero_runs_wrapping_deltas_and_edges():
    rng = np.random.default_rng(0)
    img = rng.integers(1, 65535, (37, 53)).astype(np.uint16)
    img[rng.random(img.shape) < 0.3] = 0
    img[0, :5], img[-1, -7:] = 0, 0  # starts and ends with zeros
    img[5, :4] = [65535, 1, 65535, 2]  # deltas that wrap around uint16
    for case in (img, np.zeros((4, 6), np.uint16), np.full((3, 5), 7, np.uint16), img[:1, :1]):
        assert np.array_equal(decode_rvl(encode_rvl(case)), case)


def test_rvl_stream_matches_the_reference_encoder_bit_for_bit():
    # [0, 0, 5, 6]: zeros=2 -> nibble 0x2; nonzeros=2 -> 0x2; delta 5 -> zigzag 10 = 0b1010 -> nibbles
    # 0xA (010 + more), 0x1; delta 1 -> zigzag 2 -> 0x2; then three zero nibbles pad the word
    payload = encode_rvl(np.array([[0, 0, 5, 6]], np.uint16))
    assert payload[:8] == struct.pack("<II", 4, 1)
    assert struct.unpack("<I", payload[8:])[0] == 0x22A12000


def test_compressed_depth_png_and_rvl_of_16uc1_and_32fc1():
    depth = np.linspace(0.3, 9.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    depth[:3] = 0  # no depth
    depth[3, :4] = 12.0  # beyond the publisher's depth_max (10 m): dropped as it drops them
    for encoding in ("16UC1", "32FC1"):
        for codec in ("png", "rvl"):
            fmt, data = encode_compressed_depth(depth, encoding, codec)
            assert fmt == f"{encoding}; compressedDepth {codec}"
            back = compressed_depth(fmt, data)
            ok = (depth > 0) & (depth < 10)
            tolerance = 0.0006 if encoding == "16UC1" else depth[ok] ** 2 / 10100 + 1e-4  # mm / inverse depth steps
            assert (np.abs(back[ok] - depth[ok]) <= tolerance).all() and (back[~ok] == 0).all(), (encoding, codec)
    fmt, data = encode_compressed_depth(depth, "16UC1", "png")
    assert np.array_equal(compressed_depth("16UC1", data), compressed_depth(fmt, data))  # older publishers: png


def test_compressed_colour_jpeg_and_png():
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 220, 15
    for codec in ("jpeg", "png"):
        fmt, data = encode_compressed_color(rgb, codec)
        got = compressed_color(fmt, data)
        assert got.shape == rgb.shape and np.abs(got.astype(int) - rgb).max() <= 6  # red stays red
        assert np.array_equal(compressed_color(codec, data), got)  # a bare "jpeg" / "png" format too


@pytest.mark.parametrize("fmt, data, words", [
    ("16UC1; compressedDepth png", b"\x00" * 12, "holds no image"),
    ("16UC1; compressedDepth png", b"\x00" * 12 + b"not a png", "could not be decoded"),
    ("16UC1; compressedDepth zstd", b"\x00" * 40, "unknown compressedDepth format"),
    ("bgr8; compressedDepth png", b"\x00" * 40, "encoding"),
    ("16UC1; compressedDepth rvl", struct.pack("<iff", 0, 0, 0) + struct.pack("<II", 100000, 100000) + b"\x00" * 8,
     "claims"),
    ("16UC1; compressedDepth rvl", struct.pack("<iff", 0, 0, 0) + struct.pack("<II", 4, 4) + b"\x00" * 7,
     "whole 32-bit words"),
    ("16UC1; compressedDepth rvl", struct.pack("<iff", 0, 0, 0) + struct.pack("<II", 4, 4) + b"\x88" * 8,
     "no complete number"),
    ("16UC1; compressedDepth rvl", struct.pack("<iff", 3, 0, 0) + encode_rvl(np.ones((2, 2), np.uint16)),
     "compression format 3"),
])
def test_damaged_or_lying_compressed_depth_is_one_clear_error(fmt, data, words):
    with pytest.raises(UserError, match=words) as err:
        compressed_depth(fmt, data)
    assert "\n" not in str(err.value)


def test_an_rvl_stream_shorter_than_its_pixels_and_zero_quantisation_are_refused():
    short = encode_rvl(np.ones((2, 2), np.uint16))
    with pytest.raises(UserError, match=r"ends after|runs past"):
        decode_rvl(struct.pack("<II", 4, 2) + short[8:])
    fmt, data = encode_compressed_depth(np.full((4, 4), 2.0, np.float32), "32FC1", "png")
    with pytest.raises(UserError, match="quantisation"):
        compressed_depth(fmt, struct.pack("<iff", 0, 0.0, 0.0) + data[12:])
    with pytest.raises(UserError, match="unknown compressed image format"):
        compressed_color("rgb8; h264", b"\x00")
