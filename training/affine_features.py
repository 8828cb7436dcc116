"""Per-point outputs of a linear layer, kept as (inputs, weight, bias) and never formed.

The student's semantic head is a 1x1 convolution from the backbone's 48-96 channels to the
teacher's 512; its instance head ends in a linear layer to 512. Formed per point, those (N, 512)
outputs, with the masks, normalisations and subtractions the losses then run on them, cost about
two thirds of a CPU training step (profiled: the sparse convolutions forward and backward 1.1 s of
3.3 s on a 32k-voxel room). Every loss that only needs (a) the cosine of each row with a target
row or (b) segment means (superpoints, instances) can be computed exactly in the narrow space:
  cos(x W + c, t) = (x (t W^T)^T + t c) / (|x W + c| |t|),  |x W + c|^2 = x (W W^T) x^T + 2 x W c + |c|^2,
and the mean of x W + c over a segment is (mean of x) W + c. Numbers equal the formed path to
float rounding (tests/test_training.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ovseg3d.geometry.voxels import segment_mean


class AffineFeatures(NamedTuple):
    """Rows ``x @ weight + bias`` (N, D) of (N, C) inputs (a tuple, so DistributedDataParallel
    sees the tensors)."""

    x: torch.Tensor  # (N, C)
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (D,)

    def rows(self, index) -> AffineFeatures:
        return AffineFeatures(self.x[index], self.weight, self.bias)

    def shifted(self, offset: torch.Tensor | None) -> AffineFeatures:
        """The same rows minus a fixed vector (centring)."""
        if offset is None:
            return self
        return AffineFeatures(self.x, self.weight, self.bias - offset.to(self.bias.dtype))

    def segment_mean(self, segments: torch.Tensor, n: int) -> torch.Tensor:
        """(n, D) mean row per segment, formed: only n rows."""
        mean_x, _ = segment_mean(self.x, segments, n)
        return mean_x @ self.weight + self.bias

    def norms(self, eps: float = 1e-8) -> torch.Tensor:
        """(N,) |x W + c| without forming the rows."""
        gram = self.weight @ self.weight.T  # (C, C)
        wb = self.weight @ self.bias  # (C,)
        sq = ((self.x @ gram) * self.x).sum(1) + 2 * (self.x @ wb) + self.bias @ self.bias
        return sq.clamp(min=0).sqrt().clamp(min=eps)

    def cosine(self, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """(N,) cosine of each row with the same row of ``target`` (N, D), as F.cosine_similarity."""
        target = target.to(self.x.dtype)
        projected = target @ self.weight.T  # (N, C)
        dot = (projected * self.x).sum(1) + target @ self.bias
        return dot / (self.norms(eps) * target.norm(dim=1).clamp(min=eps))


def rows_cosine_to_table(pred: torch.Tensor | AffineFeatures, table: torch.Tensor, index: torch.Tensor
                         ) -> torch.Tensor:
    """(N,) cosine of each row with ``table[index]`` without forming the (N, D) gathered targets:
    the table's (n, D) rows are projected into the narrow space once, then gathered."""
    if not isinstance(pred, AffineFeatures):
        return F.cosine_similarity(pred, table.to(pred.dtype)[index], dim=1)
    table = table.to(pred.x.dtype)
    projected = (table @ pred.weight.T)[index]  # (N, C)
    dot = (projected * pred.x).sum(1) + (table @ pred.bias)[index]
    return dot / (pred.norms() * table.norm(dim=1).clamp(min=1e-8)[index])


def rows_cosine(pred: torch.Tensor | AffineFeatures, target: torch.Tensor) -> torch.Tensor:
    """(N,) row-wise cosine, formed or not."""
    if isinstance(pred, AffineFeatures):
        return pred.cosine(target)
    return F.cosine_similarity(pred, target.to(pred.dtype), dim=1)
