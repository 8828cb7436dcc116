"""Make a CUDA-built torchvision importable under a CPU-only torch.

PyPI has no CPU build of torchvision; the build that pins our torch is compiled for CUDA, its
``_C`` extension does not load under CPU torch, and torchvision's import then dies registering
fake kernels for ``torchvision::nms`` ("operator torchvision::nms does not exist"). open_clip
imports torchvision at load time, so it would die too.

``install()`` (run from a .pth file that ``make setup`` writes) adds a meta-path finder that acts
once, just before torchvision is first imported: it loads torchvision's real ``_C`` library when
that works, and only otherwise defines the op schemas torchvision expects. Under a CUDA torch it
does nothing. Importing this module imports nothing heavy, so interpreter start-up stays fast.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys

# Op schemas torchvision registers meta kernels for at import time.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the torch.library.Library holding the stand-in schemas; must stay alive
_result: str | None = None


def fix_torchvision_ops() -> str:
    """Prepare torch.ops.torchvision; returns "cuda-torch", "native", "schemas" or "absent"."""
    global _library, _result
    if _result is not None:
        return _result
    import torch

    if torch.version.cuda is not None:
        _result = "cuda-torch"
        return _result
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _result = "absent"
        return _result
    for lib in sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))):
        try:
            torch.ops.load_library(lib)
        except (OSError, RuntimeError):
            continue
        _result = "native"
        return _result
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    _result = "schemas"
    return _result


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Runs the fix once when torchvision is first imported, then steps aside."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision":
            uninstall()
            fix_torchvision_ops()
        return None  # the normal finders import torchvision itself


_FINDER = _TorchvisionFinder()


def install() -> None:
    """Register the finder (idempotent); does nothing if torchvision is already imported."""
    if "torchvision" in sys.modules or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
