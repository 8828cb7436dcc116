"""Precomputed per-point features (OpenScene's fused-feature files) as a teacher."""

from __future__ import annotations

from pathlib import Path

import torch

from ovseg3d.data.openscene import fused_path, load_fused
from ovseg3d.data.scannet import Frame, ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.teachers.base import FeatureMap, Teacher, TeacherContext, register


class PrecomputedTeacher(Teacher):
    def __init__(self, folder: Path, sample: int = 0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"precomputed feature folder {self.folder} does not exist")
        self.sample = sample
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            files = sorted(self.folder.glob("*_*.pt"))
            if not files:
                raise UserError(f"{self.folder} holds no OpenScene feature files (<scene>_<k>.pt)")
            self._dim = int(load_fused(files[0])[0].shape[1])
        return self._dim

    def scene_features(self, scene: ScanNetScene) -> tuple[torch.Tensor, torch.Tensor]:
        path = fused_path(self.folder, scene.name, self.sample)
        feat, mask = load_fused(path, num_points=scene.num_points)
        return feat.float(), mask

    def __call__(self, frame: Frame) -> FeatureMap:
        raise UserError("the precomputed teacher gives per-point features, not per-frame ones")


@register("precomputed", "OpenScene fused-feature files <scene>_<k>.pt; options: folder (required), sample")
def _build(ctx: TeacherContext) -> Teacher:
    if "folder" not in ctx.options:
        raise UserError("the precomputed teacher needs folder=DIR (its OpenScene <scene>_<k>.pt files)")
    return PrecomputedTeacher(Path(ctx.options["folder"]), int(ctx.options.get("sample", 0)))
