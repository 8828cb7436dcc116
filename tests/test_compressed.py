"""image_transport's compressed formats: RVL and compressedDepth laid out byte for byte as
image_transport_plugins writes them, read back exactly; damaged or lying messages are one-line errors."""

from __future__ import annotations

import struct
from itertools import pairwise

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
        # a reader that needs 16x12 pixels: a JPEG decodes at half size (its 2x2 blocks' means), a PNG whole
        small = compressed_color(fmt, data, at_least=(16, 12))
        assert small.shape == ((12, 16, 3) if codec == "jpeg" else rgb.shape)
        assert np.abs(small.astype(int) - rgb[: small.shape[0], : small.shape[1]]).max() <= 6
    fmt, data = encode_compressed_color(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3), "jpeg")
    assert compressed_color(fmt, data, at_least=(16, 12)).shape == (12, 16, 3)  # 1/4: still 16x12
    assert compressed_color(fmt, data, at_least=(17, 12)).shape == (24, 32, 3)  # 1/4 would be too small


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


def _png(rows: np.ndarray, filters: list[int], bit_depth: int = 16, colour: int = 0, interlace: int = 0,
         idat_pieces: int = 3) -> bytes:
    """A PNG of big-endian 16-bit grey ``rows`` written with the given filter type per row (the
    filters computed here, as the PNG specification defines them), its IDAT split in pieces."""
    import zlib

    data = rows.astype(">u2").view(np.uint8).reshape(len(rows), -1).astype(np.int32)
    out = []
    for r, kind in enumerate(filters):
        x = data[r]
        b = data[r - 1] if r else np.zeros_like(x)
        a, c = np.concatenate([[0, 0], x[:-2]]), np.concatenate([[0, 0], b[:-2]])
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = {1: a, 2: b, 3: (a + b) // 2, 4: paeth}.get(kind, 0)  # 0, or a type PNG lacks
        out.append(np.concatenate([[kind], (x - pred) & 0xFF]).astype(np.uint8).tobytes())
    stream = zlib.compress(b"".join(out))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", rows.shape[1], rows.shape[0], bit_depth, colour, 0, 0, interlace)
    cut = np.linspace(0, len(stream), idat_pieces + 1).astype(int)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + b"".join(chunk(b"IDAT", stream[i:j]) for i, j in pairwise(cut)) + chunk(b"IEND", b""))


def test_depth_png_of_every_filter_type_decodes_as_pillow_reads_it():
    """The compiled PNG path (``png16``) against Pillow on rows written with each of PNG's five
    filters, values spanning both bytes; anything it does not handle goes to Pillow."""
    from ovseg3d.ros import png16
    from ovseg3d.ros.compressed import _pil_decode

    rng = np.random.default_rng(1)
    img = rng.integers(0, 65536, (11, 9)).astype(np.uint16)
    img[3] = img[2] + 1  # rows that Up and Paeth predict well
    png = _png(img, [0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 3])
    assert np.array_equal(_pil_decode(png, "reference"), img)
    assert np.array_equal(png16.decode(png, 1 << 24), img)
    header = struct.pack("<iff", 0, 0.0, 0.0)
    assert np.array_equal(compressed_depth("16UC1; compressedDepth png", header + png), img / np.float32(1000))
    # what it leaves to Pillow: too many pixels, a truncated file, an undefined filter, other formats
    assert png16.decode(png, 98) is None and png16.decode(png[:-20], 1 << 24) is None
    assert png16.decode(_png(img, [0] * 10 + [5]), 1 << 24) is None
    with pytest.raises(UserError, match="could not be decoded"):
        compressed_depth("16UC1; compressedDepth png", header + _png(img, [0] * 10 + [5]))
    grey8 = np.asarray(rng.integers(0, 256, (5, 4)), np.uint8)
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(grey8).save(buf, format="PNG")
    assert png16.decode(buf.getvalue(), 1 << 24) is None
    with pytest.raises(UserError, match="16-bit grey"):
        compressed_depth("16UC1; compressedDepth png", header + buf.getvalue())
