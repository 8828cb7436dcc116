"""image_transport's compressed formats <-> numpy, as ``ros2 bag record`` stores them and robots'
camera drivers publish them on ``<topic>/compressed`` and ``<topic>/compressedDepth``.

- ``compressed`` (colour): a JPEG or PNG file in ``data``; ``format`` is ``jpeg`` / ``png`` or, from
  image_transport's publisher, ``"<encoding>; jpeg compressed bgr8"``. OpenCV writes standard files
  whatever the in-memory channel order was, so any decoder gives RGB (Pillow here).
- ``compressedDepth``: ``format`` is ``"<encoding>; compressedDepth png|rvl"`` (just ``"<encoding>;
  compressedDepth"`` or no ``;`` at all from older publishers: PNG). ``data`` starts with a 12-byte
  configuration header (int32 compression format, 0 = inverse depth; float32 quantisation A, B),
  then the payload: a 16-bit PNG, or RVL (uint32 columns, uint32 rows, then the RVL stream of
  Wilson's "Fast Lossless Depth Image Compression"). 16UC1 depth is stored as it was (mm); 32FC1
  depth as quantised inverse depth ``q``, read back as ``A / (q - B)`` (``q = 0``: no depth).
  Layout and arithmetic follow image_transport_plugins' ``codec.cpp`` and ``rvl_codec.cpp``.

No ROS import: the decoders take the message's ``format`` and ``data``, so bags read with rosbags
decode the same way as live messages.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np

from ovseg3d.errors import UserError
from ovseg3d.ros import png16

CONFIG_HEADER = struct.Struct("<iff")  # compressionFormat (enum, int32), depthParam[2]
INV_DEPTH = 0
MAX_PIXELS = 16_777_216  # a header claiming more (4096 x 4096) is a lie, not a camera


def _pil_decode(data: bytes, what: str, at_least: tuple[int, int] | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data))) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise UserError(f"{what} claims {img.width}x{img.height} pixels")
                if at_least is not None:  # JPEG's DCT scaling: a half-size decode costs a third
                    img.draft(img.mode, at_least)
                img.load()
                return np.asarray(img)
    except UserError:
        raise
    except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError ...) for bad bytes
        raise UserError(f"{what} could not be decoded ({type(exc).__name__}: {str(exc)[:120]})") from None


def compressed_color(fmt: str, data: bytes, at_least: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a ``sensor_msgs/CompressedImage`` colour message. With ``at_least``
    (width, height), a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 of its size that still
    has that many pixels (each pixel the mean of its block): for a reader that samples every n-th
    pixel anyway (the live map's depth stride). PNG has no such mode: it is decoded whole."""
    kind = fmt.lower()
    if "compresseddepth" in kind:
        raise UserError(f"colour stream got a compressedDepth image (format {fmt[:80]!r})")
    if not any(word in kind for word in ("jpeg", "jpg", "png")):
        raise UserError(f"unknown compressed image format {fmt[:80]!r} (expected jpeg or png)")
    px = _pil_decode(data, "compressed colour image", at_least)
    if px.ndim == 2:
        px = np.repeat(px[..., None], 3, axis=2)
    if px.dtype != np.uint8:
        px = (px >> 8).astype(np.uint8) if px.dtype == np.uint16 else px.astype(np.uint8)
    return np.ascontiguousarray(px[..., :3])


def compressed_depth(fmt: str, data: bytes) -> np.ndarray:
    """(H, W) float32 metres (0 where invalid) of a ``compressedDepth`` message."""
    encoding, _, rest = fmt.partition(";")
    encoding, rest = encoding.strip(), rest.strip()
    if rest in ("", "compressedDepth", "compressedDepth png"):
        codec = "png"
    elif rest == "compressedDepth rvl":
        codec = "rvl"
    else:
        raise UserError(f"unknown compressedDepth format {fmt[:80]!r} (expected '<encoding>; compressedDepth png|rvl')")
    if encoding not in ("16UC1", "mono16", "32FC1"):
        raise UserError(f"compressedDepth of encoding {encoding[:40]!r}; expected 16UC1 or 32FC1")
    data = bytes(data)
    if len(data) <= CONFIG_HEADER.size:
        raise UserError(f"compressedDepth message of {len(data)} bytes holds no image after its header")
    header_format, quant_a, quant_b = CONFIG_HEADER.unpack_from(data)
    if header_format != INV_DEPTH:  # the only format image_transport's publisher writes
        raise UserError(f"compressedDepth header says compression format {header_format}; expected "
                        f"{INV_DEPTH} (inverse depth)")
    payload = data[CONFIG_HEADER.size:]
    raw = _png_depth(payload) if codec == "png" else decode_rvl(payload)
    if encoding != "32FC1":
        return raw.astype(np.float32) / 1000.0
    if not (np.isfinite(quant_a) and np.isfinite(quant_b)) or quant_a <= 0:
        raise UserError(f"compressedDepth quantisation parameters A={quant_a:g}, B={quant_b:g} cannot be "
                        "inverted (A must be positive and finite)")
    q = raw.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (q - np.float32(quant_b))
    depth[(raw == 0) | ~np.isfinite(depth) | (depth < 0)] = 0
    return depth


def _png_depth(payload: bytes) -> np.ndarray:
    fast = png16.decode(payload, MAX_PIXELS)  # what image_transport writes; anything else: Pillow
    if fast is not None:
        return fast
    px = _pil_decode(payload, "compressedDepth PNG")
    if px.ndim != 2 or px.dtype.itemsize != 2:
        raise UserError(f"compressedDepth PNG holds {px.dtype} pixels of shape {px.shape}; expected 16-bit grey")
    return px.astype(np.uint16, copy=False)


def _nibbles(words: np.ndarray) -> np.ndarray:
    """Every 4-bit nibble of the 32-bit words, most significant first (RVL's order)."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    return ((words[:, None] >> shifts[None, :]) & 0xF).astype(np.uint8).reshape(-1)


def decode_rvl(payload: bytes) -> np.ndarray:
    """(rows, cols) uint16 of an RVL payload (uint32 cols, uint32 rows, then the stream).

    The stream is one list of variable-length numbers (3 bits a nibble, the 4th bit says "more"):
    (zeros, nonzeros, nonzero deltas ...) repeated, each delta zig-zag coded from the previous
    nonzero pixel. Numbers are decoded all at once with numpy; only the runs are walked in Python.
    """
    if len(payload) < 8:
        raise UserError("RVL depth payload is shorter than its 8-byte size header")
    cols, rows = struct.unpack_from("<II", payload)
    pixels = int(cols) * int(rows)
    stream = payload[8:]
    # (not image_transport's "at most 5 pixels a byte" check: an all-zero frame, a covered camera,
    # is a few bytes; the walk below refuses a stream that does not add up to the pixels)
    if not pixels or pixels > MAX_PIXELS:
        raise UserError(f"RVL depth header claims {cols}x{rows} pixels for {len(stream)} bytes of stream")
    if len(stream) % 4:  # the encoder writes whole words; a ragged tail is a damaged message
        raise UserError(f"RVL depth stream of {len(stream)} bytes is not whole 32-bit words")
    nib = _nibbles(np.frombuffer(stream, "<u4"))
    last = np.flatnonzero((nib & 0x8) == 0)  # each number ends at a nibble without "more"
    if not len(last):
        raise UserError("RVL depth stream holds no complete number")
    first = np.concatenate([[0], last[:-1] + 1])
    group = np.repeat(np.arange(len(last)), last - first + 1)
    position = np.arange(last[-1] + 1) - first[group]
    if position.max(initial=0) > 10:  # 11 nibbles already exceed 32 bits
        raise UserError("RVL depth stream holds a number longer than 32 bits")
    chunks = (nib[: last[-1] + 1] & 0x7).astype(np.int64) << (3 * position)
    numbers = np.bincount(group, weights=chunks.astype(np.float64)).astype(np.int64)
    nums = numbers.tolist()  # the run walk is sequential: plain ints, then everything else vectorised
    heads: list[int] = []
    k = done = 0
    count = len(nums)
    while done < pixels:  # each run: (zeros, nonzeros, that many deltas)
        if k + 2 > count:
            raise UserError(f"RVL depth stream ends after {done} of {pixels} pixels")
        heads.append(k)
        done += nums[k] + nums[k + 1]
        k += 2 + nums[k + 1]
        if done > pixels or k > count:
            raise UserError(f"RVL depth stream runs past its {pixels} pixels (or its own end)")
    head = np.array(heads, np.int64)
    zeros, nonzeros = numbers[head], numbers[head + 1]
    within = np.arange(int(nonzeros.sum())) - np.repeat(np.cumsum(nonzeros) - nonzeros, nonzeros)
    positive = numbers[np.repeat(head + 2, nonzeros) + within]
    where = np.repeat(np.cumsum(zeros + nonzeros) - nonzeros, nonzeros) + within
    delta = (positive >> 1) ^ -(positive & 1)
    out = np.zeros(pixels, np.uint16)
    out[where] = np.cumsum(delta) & 0xFFFF  # uint16 arithmetic, as the C++ does
    return out.reshape(int(rows), int(cols))


# ---------------------------------------------------------------- writers (tests, synthetic bags)
def encode_rvl(depth: np.ndarray) -> bytes:
    """RVL payload of a (rows, cols) uint16 image, laid out as image_transport's encoder writes it.
    Python loops: for writing test data, not for a live stream."""
    img = np.asarray(depth, np.uint16)
    rows, cols = img.shape
    flat = img.reshape(-1).tolist()
    nibbles: list[int] = []

    def vle(value: int) -> None:
        while True:
            nibble = value & 0x7
            value >>= 3
            nibbles.append(nibble | (0x8 if value else 0))
            if not value:
                return

    i, previous, n = 0, 0, len(flat)
    while i < n:
        start = i
        while i < n and flat[i] == 0:
            i += 1
        vle(i - start)
        run = i
        while run < n and flat[run] != 0:
            run += 1
        vle(run - i)
        for current in flat[i:run]:
            delta = current - previous
            vle(((delta << 1) ^ (delta >> 31)) & 0xFFFFFFFF)
            previous = current
        i = run
    nibbles += [0] * (-len(nibbles) % 8)  # the last word is padded with zero nibbles
    words = np.array(nibbles, np.uint32).reshape(-1, 8) << np.arange(28, -1, -4, dtype=np.uint32)
    return struct.pack("<II", cols, rows) + words.sum(1, dtype=np.uint32).astype("<u4").tobytes()


def encode_compressed_depth(depth_m: np.ndarray, encoding: str = "16UC1", codec: str = "png",
                            depth_max: float = 10.0, depth_quantization: float = 100.0) -> tuple[str, bytes]:
    """(format, data) of a compressedDepth message, as image_transport's publisher writes them."""
    from PIL import Image

    depth_m = np.asarray(depth_m, np.float32)
    if encoding == "32FC1":
        quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
        quant_b = np.float32(1.0 - quant_a / np.float32(depth_max))
        valid = np.isfinite(depth_m) & (depth_m > 0) & (depth_m < depth_max)
        with np.errstate(divide="ignore"):
            raw = np.where(valid, quant_a / np.where(valid, depth_m, 1) + quant_b, 0).astype(np.uint16)
        header = CONFIG_HEADER.pack(INV_DEPTH, quant_a, quant_b)
    elif encoding == "16UC1":
        mm = np.nan_to_num(depth_m * 1000.0, nan=0, posinf=0, neginf=0)
        raw = np.where(mm > depth_max * 1000.0, 0, np.round(mm)).astype(np.uint16)
        header = CONFIG_HEADER.pack(INV_DEPTH, 0.0, 0.0)
    else:
        raise UserError(f"compressedDepth encodes 16UC1 or 32FC1, not {encoding!r}")
    if codec == "png":
        buf = io.BytesIO()
        Image.fromarray(raw).save(buf, format="PNG")
        payload = buf.getvalue()
    elif codec == "rvl":
        payload = encode_rvl(raw)
    else:
        raise UserError(f"compressedDepth codecs are png and rvl, not {codec!r}")
    return f"{encoding}; compressedDepth {codec}", header + payload


def encode_compressed_color(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """(format, data) of a colour CompressedImage, as image_transport's publisher writes them."""
    from PIL import Image

    buf = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="JPEG", quality=quality)
    elif codec == "png":
        Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG")
    else:
        raise UserError(f"compressed colour codecs are jpeg and png, not {codec!r}")
    return f"rgb8; {codec} compressed bgr8", buf.getvalue()


def warm_up_decoders() -> None:
    """Decode one tiny image of each kind: Pillow's first import and codec set-up (tenths of a
    second) then happen when the node is configured, not on its first camera frame."""
    tiny = np.zeros((4, 4, 3), np.uint8)
    compressed_color(*encode_compressed_color(tiny, "jpeg"))
    compressed_color(*encode_compressed_color(tiny, "png"))
    for codec in ("png", "rvl"):
        compressed_depth(*encode_compressed_depth(np.ones((4, 4), np.float32), codec=codec))
