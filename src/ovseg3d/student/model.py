"""The student: points in, one CLIP-space feature per point out.

Points are voxelised on the student's grid inside a MinkowskiEngine TensorField, the sparse
U-Net runs on the occupied voxels, and ``slice`` maps voxel features back to every input point
(OpenScene's TensorField -> sparse -> slice). The input is geometry alone by default (a constant
occupancy feature per voxel; the coordinates carry the shape); the voxel's height and colour can be
added. Height is what a translation-invariant convolution cannot see: how far up a surface is (a
table top, a sink, a picture) is only known to it from the floor within its receptive field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from ovseg3d.errors import UserError
from ovseg3d.student.minkowski import ME
from ovseg3d.student.minkunet import MinkUNet18A


class MinkUNetSmall(MinkUNet18A):
    """A quarter-width, one-block-per-stage U-Net: GeoPurify's light affinity student."""

    def __init__(self, in_channels: int, out_channels: int, D: int = 3, stem_kernel: int = 5):
        super().__init__(in_channels, out_channels, D, planes=(16, 32, 64, 128, 64, 64, 48, 48),
                         layers=(1,) * 8, init_dim=16, stem_kernel=stem_kernel)


ARCHS = {"MinkUNet18A": MinkUNet18A, "MinkUNetSmall": MinkUNetSmall}
# what a student reads per voxel besides its position: occupancy always, and these parts
INPUT_PARTS = {"occupancy": (), "height": ("height",), "color": ("color",), "color_height": ("height", "color")}
PART_CHANNELS = {"height": 1, "color": 3}
INPUTS = tuple(INPUT_PARTS)
HEIGHT_OFFSET_M = 1.0  # the height feature is z - 1 m: centred on a room's height range, as colour is on grey


@dataclass(frozen=True)
class VoxelPrediction:
    """``Student.predict_voxels``: features per student voxel, and the voxel of each input point."""

    semantic: torch.Tensor  # (V, D) unit features
    instance: torch.Tensor | None  # (V, D) raw instance-head features (None without an instance head)
    index: np.ndarray  # (N,) int64: row of each input point


@dataclass(frozen=True)
class StudentConfig:
    arch: str = "MinkUNet18A"
    feature_dim: int = 512  # the teacher's text-space dimension (512 for ViT-B, 768 for ViT-L)
    voxel_size: float = 0.02  # metres
    # "occupancy" (geometry only), "height" (+ the voxel's z: the map frame's z must be up, 0 at the
    # floor, as in ScanNet's aligned scans and a robot's map started on the ground), "color" (+ RGB),
    # "color_height" (both)
    input: str = "occupancy"
    adapter_hidden: int = 0  # > 0: a two-layer MLP adapter on backbone features replaces the 1x1 head (GeoGuide)
    instance_hidden: int = 0  # > 0: FOLK's instance head, a two-layer MLP on backbone features into the text space
    # the first convolution's kernel (MinkUNet's 5; 3 is a fifth cheaper a CPU step at 10 cm voxels, where
    # the full-resolution layers are most of a step, and learned as well in our measurement)
    stem_kernel: int = 5

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"student.arch: unknown architecture {self.arch!r}; available: {', '.join(ARCHS)}")
        if self.input not in INPUTS:
            raise UserError(f"student.input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        if self.voxel_size <= 0 or self.feature_dim <= 0:
            raise UserError("student.voxel_size and student.feature_dim must be positive")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise UserError(f"student.stem_kernel must be odd (1, 3, 5, ...), got {self.stem_kernel}")

    @property
    def reads_color(self) -> bool:
        return "color" in INPUT_PARTS[self.input]

    @property
    def reads_height(self) -> bool:
        return "height" in INPUT_PARTS[self.input]

    @property
    def in_channels(self) -> int:
        return 1 + sum(PART_CHANNELS[part] for part in INPUT_PARTS[self.input])


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.net = ARCHS[cfg.arch](in_channels=cfg.in_channels, out_channels=cfg.feature_dim,
                                   stem_kernel=cfg.stem_kernel)
        self.adapter = None
        if cfg.adapter_hidden > 0:
            width = self.net.backbone_dim
            self.adapter = nn.Sequential(nn.Linear(width, cfg.adapter_hidden), nn.ReLU(inplace=True),
                                         nn.Linear(cfg.adapter_hidden, cfg.feature_dim))
        self.instance_head = None
        if cfg.instance_hidden > 0:
            width = self.net.backbone_dim
            self.instance_head = nn.Sequential(nn.Linear(width, cfg.instance_hidden), nn.ReLU(inplace=True),
                                               nn.Linear(cfg.instance_hidden, cfg.feature_dim))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def make_field(self, points: Sequence[torch.Tensor | np.ndarray],
                   colors: Sequence[torch.Tensor | np.ndarray] | None = None) -> ME.TensorField:
        """A batched TensorField of one or more point clouds (metres; colours uint8 or [0, 1], used only
        by a student built for colour input, so callers may always pass them)."""
        pts = [torch.as_tensor(np.asarray(p, dtype=np.float32)) if not isinstance(p, torch.Tensor) else p.float()
               for p in points]
        if any(p.ndim != 2 or p.shape[1] != 3 for p in pts):
            raise UserError("points must be (N, 3) arrays")
        if any(len(p) == 0 for p in pts):
            raise UserError("cannot run the student on an empty point cloud")
        if any(not torch.isfinite(p).all() for p in pts):
            raise UserError("points contain NaN or inf")
        coords = ME.utils.batched_coordinates([p / self.cfg.voxel_size for p in pts], dtype=torch.float32)
        feats = [torch.ones(len(coords), 1)]
        if self.cfg.reads_height:  # the z of the voxel's centre: a function of the cell alone, like occupancy
            feats.append((torch.floor(coords[:, 3:4]) + 0.5) * self.cfg.voxel_size - HEIGHT_OFFSET_M)  # z / voxel
        if self.cfg.reads_color:
            if colors is None:
                raise UserError("this student takes colour input; pass colours")
            col = torch.cat([torch.as_tensor(np.asarray(c, dtype=np.float32)) for c in colors])
            col = col / 255.0 if col.max() > 1.0 else col
            feats.append(col - 0.5)
        feats = torch.cat(feats, dim=1)
        return ME.TensorField(features=feats.to(self.device), coordinates=coords.to(self.device),
                              quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE,
                              minkowski_algorithm=ME.MinkowskiAlgorithm.SPEED_OPTIMIZED, device=str(self.device))

    def forward(self, field: ME.TensorField, with_instance: bool = False, unformed: bool = False):
        """(total points, feature_dim) features, one per input point, in input order.

        ``with_instance``: (semantic features, instance-head features) from one backbone pass (a
        flag rather than a second method, so DistributedDataParallel sees the call). An instance's
        embedding is the mean of its points' instance-head features.
        ``unformed`` (training; no adapter): each output as (inputs, weight, bias) of its last linear
        layer, a tuple whose rows ``inputs @ weight + bias`` are the features, for losses that never
        need them formed (``ovseg3d_train.affine_features``)."""
        if with_instance and self.instance_head is None:
            raise UserError("this student has no instance head (train it with student.instance_hidden > 0)")
        if unformed:
            if self.adapter is not None:
                raise UserError("unformed outputs need the plain head (no adapter)")
            back = self.net.backbone(field.sparse()).slice(field).F
            sem = (back, self.net.head.kernel, self.net.head.bias.reshape(-1))
            if not with_instance:
                return sem
            last = self.instance_head[-1]
            return sem, (self.instance_head[:-1](back), last.weight.T, last.bias)
        if self.adapter is None and not with_instance:
            return self.net(field.sparse()).slice(field).F
        sparse = self.net.backbone(field.sparse())
        back = sparse.slice(field).F
        sem = self.adapter(back) if self.adapter is not None else self.net.head(sparse).slice(field).F
        return (sem, self.instance_head(back)) if with_instance else sem

    def backbone_features(self, field: ME.TensorField) -> torch.Tensor:
        """(total points, backbone width) features before the head (for adapters and affinity)."""
        return self.net.backbone(field.sparse()).slice(field).F

    def predict(self, points: np.ndarray, colors: np.ndarray | None = None) -> torch.Tensor:
        """(N, D) unit features of one point cloud, in eval mode."""
        return self._predict(points, colors, False)

    def predict_instance(self, points: np.ndarray, colors: np.ndarray | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, D) unit semantic features and (N, D) raw instance-head features (None when the student
        has no instance head), from one forward pass in eval mode."""
        if not self.has_instance_head:
            return self.predict(points, colors), None
        return self._predict(points, colors, True)

    def predict_voxels(self, points: np.ndarray, colors: np.ndarray | None = None) -> VoxelPrediction:
        """What ``predict_instance`` gives every point, as one row per student voxel and each point's
        voxel: a live map of 5 cm voxels holds several points per 10 cm student voxel, and labelling
        and encoding rows that are copies of each other was a large share of an update."""

        def run(field: ME.TensorField):
            sparse = self.net.backbone(field.sparse())
            sem = self.adapter(sparse.F) if self.adapter is not None else self.net.head(sparse).F
            inst = None if self.instance_head is None else self.instance_head(sparse.F)  # pointwise layers
            return sem, inst, field.inverse_mapping(sparse.coordinate_map_key).long()

        sem, inst, index = self._in_eval(run, points, colors)
        return VoxelPrediction(torch.nn.functional.normalize(sem.float(), dim=1).cpu(),
                               None if inst is None else inst.float().cpu(), index.cpu().numpy())

    def predict_backbone(self, points: np.ndarray, colors: np.ndarray | None = None) -> torch.Tensor:
        """(N, backbone width) features before the head, in eval mode: GeoPurify's geometric features."""
        return self._in_eval(self.backbone_features, points, colors).float().cpu()

    @torch.no_grad()
    def _in_eval(self, fn, points: np.ndarray, colors: np.ndarray | None):
        was_training = self.training
        self.eval()
        try:
            return fn(self.make_field([points], None if colors is None else [colors]))
        finally:
            self.train(was_training)

    def _predict(self, points: np.ndarray, colors: np.ndarray | None, with_instance: bool):
        out = self._in_eval(lambda field: self(field, with_instance), points, colors)
        sem, inst = out if with_instance else (out, None)
        sem = torch.nn.functional.normalize(sem.float(), dim=1).cpu()
        return (sem, inst.float().cpu()) if with_instance else sem

    @property
    def has_instance_head(self) -> bool:
        return self.instance_head is not None

    def config_dict(self) -> dict:
        return asdict(self.cfg)
