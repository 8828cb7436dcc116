"""Loading torch files safely (``weights_only=True``) with one clear error for a bad file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ovseg3d.errors import UserError


def torch_load(path: str | Path, what: str, safe_globals: Sequence = ()) -> object:
    """``torch.load(weights_only=True)``; any failure becomes "PATH is not a WHAT: reason"."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected a {what})")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling raises many types; reduce the message to its reason
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's hint to drop weights_only is not for us
            detail = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
            text = "unsafe or corrupt pickle: " + detail.strip()
        reason = " ".join(text.split())[:200] or type(exc).__name__
        raise UserError(f"{path} is not a valid {what} ({reason})") from None
