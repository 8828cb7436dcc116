"""MinkowskiEngine, imported once for the library, without the two notices a user cannot act on.

On a machine without CUDA, ME's CPU build says at import that it was built CPU-only (as it must
be); and every forward pass triggers torch's deprecation of ``torch.sparse.SparseTensor``, which
ME's own code calls. Both are silenced here; the CPU-only notice stays where torch does see a GPU,
since there it means the ME build is the wrong one.
"""

from __future__ import annotations

import warnings

import torch

with warnings.catch_warnings():
    if not torch.cuda.is_available():
        warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY flag")
    import MinkowskiEngine as ME

warnings.filterwarnings("ignore", message=r"torch\.sparse\.SparseTensor\(indices, values, shape")

__all__ = ["ME"]
