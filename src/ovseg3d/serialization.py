"""Files read safely (``weights_only=True``, one clear error for a bad file) and written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from ovseg3d.errors import UserError


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to, renamed over ``path`` when the block succeeds.

    A reader never sees half a file and a failed write leaves the old one; the name carries the
    process id, so two processes writing the same file (parallel benchmarks over one data folder)
    do not rename each other's half-written files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def torch_load(path: str | Path, what: str, safe_globals: Sequence = ()) -> object:
    """``torch.load(weights_only=True)``; any failure becomes "PATH is not a WHAT: reason"."""
    path = Path(path)
    if not path.is_file():
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise UserError(f"{path} does not exist (expected {article} {what})")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling raises many types; reduce the message to its reason
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's hint to drop weights_only is not for us
            detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
            text = "unsafe or corrupt pickle: " + detail.strip()
        elif isinstance(exc, (KeyError, EOFError)) or type(exc) is OSError:  # bare: "174812789", "", "Invalid argument"
            text = f"not written by torch.save, or cut short: {type(exc).__name__} {text}".strip()
        reason = " ".join(text.split())[:200] or type(exc).__name__
        raise UserError(f"{path} is not a valid {what} ({reason})") from None
