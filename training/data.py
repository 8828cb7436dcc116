"""Training samples: scene points with their fused teacher targets, chunked and augmented.

Randomness is drawn from (seed, epoch, sample) so that an epoch sees the same samples whether
or not the run was interrupted and resumed in between, and on every process count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.instance_targets import instance_targets_path, load_instance_targets
from ovseg3d.data.openscene import fused_path, load_fused_dense
from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.errors import UserError
from ovseg3d.geometry.superpoints import point_superpoints
from ovseg3d.geometry.voxels import segment_majority, segment_mean, voxel_points
from ovseg3d.labels import load_label_set
from ovseg3d.segment.instances import majority_label

from .config import TrainConfig, uses_instances
from .losses import segment_targets, teacher_classes


@dataclass
class Sample:
    name: str
    points: np.ndarray  # (N, 3) float32, augmented
    colors: np.ndarray  # (N, 3) uint8
    target: torch.Tensor  # (N, D) float32, zero where ``mask`` is False
    mask: torch.Tensor  # (N,) bool: the teacher saw this point
    superpoints: torch.Tensor  # (N,) int64
    instances: torch.Tensor | None = None  # (N,) int64 annotated instance ids (0: none), for FOLK's loss


@dataclass
class InstanceTable:
    """A scene's annotated instances with their instance-teacher embeddings."""

    ids: torch.Tensor  # (M,) int64
    teacher: torch.Tensor  # (M, D) unit embeddings, zero rows: never seen
    labels: torch.Tensor  # (M,) annotated class (majority of its points), -1 outside the label set


def split_scenes(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    root, targets = Path(cfg.data.scenes), Path(cfg.data.targets)
    if not root.exists():
        raise UserError(f"config key 'data.scenes': {root} does not exist")
    if not targets.is_dir():
        raise UserError(f"config key 'data.targets': {targets} is not a folder of fused features")
    available = [p.name for p in list_scenes(root)]
    val = list(cfg.data.val)
    train = list(cfg.data.train) or [n for n in available if n not in val and fused_path(targets, n).exists()]
    for key, names in (("data.train", train), ("data.val", val)):
        missing = [n for n in names if n not in available]
        if missing:
            raise UserError(f"config key {key!r}: no scene folder for {', '.join(missing[:5])} under {root}")
    no_target = [n for n in train if not fused_path(targets, n).exists()]
    if no_target:
        raise UserError(f"config key 'data.targets': no fused features for {', '.join(no_target[:5])} "
                        f"in {targets} (run `ovseg3d extract`)")
    if not train:
        raise UserError(f"no training scenes: {root} has no scene with fused features in {targets}")
    if uses_instances(cfg):
        no_inst = [n for n in train if not instance_targets_path(targets, n).exists()]
        if no_inst:
            raise UserError(f"config key 'loss.instance_distill': no instance-teacher targets for "
                            f"{', '.join(no_inst[:5])} in {targets} (run `ovseg3d extract --instance-teacher`)")
    return train, val


class DistillDataset:
    def __init__(self, cfg: TrainConfig, names: list[str]):
        self.cfg = cfg
        self.names = names
        self._cache: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.names)

    def target_mean(self) -> torch.Tensor:
        """Mean of the unit teacher features over every target point of these scenes."""
        total, count = None, 0
        for name in self.names:
            _, _, target, mask, _, _ = self._load(name)
            unit = torch.nn.functional.normalize(target[mask].float(), dim=1)
            total = unit.sum(0) if total is None else total + unit.sum(0)
            count += len(unit)
        if not count:
            raise UserError("the training targets mark no point as seen by the teacher")
        return total / count

    def teacher_class_counts(self, text: torch.Tensor, superpoint_means: bool) -> torch.Tensor:
        """Points of these scenes per vocabulary class of their teacher targets (``loss.class_balance``):
        each point's own target, or with ``superpoint_means`` its superpoint's mean (eq. 10's)."""
        counts = torch.zeros(len(text), dtype=torch.long)
        for name in self.names:
            _, _, target, mask, sp, _ = self._load(name)
            if superpoint_means:
                st = segment_targets(target, sp, mask)
                classes = teacher_classes(st.mean, text)[st.seg[st.count[st.seg] > 0]]
            else:
                classes = teacher_classes(target[mask], text)
            counts += torch.bincount(classes, minlength=len(text))
        return counts

    def points(self, name: str) -> np.ndarray:
        """(N, 3) float32 points of a scene, as loaded for training (not augmented)."""
        return self._load(name)[0]

    def scene(self, name: str) -> ScanNetScene:
        return ScanNetScene(Path(self.cfg.data.scenes) / name)

    def _load(self, name: str):
        if name not in self._cache:
            scene = self.scene(name)
            target, mask = load_fused_dense(fused_path(Path(self.cfg.data.targets), name), scene.num_points,
                                            torch.float16)
            if target.shape[1] != self.cfg.student.feature_dim:
                raise UserError(f"targets of {name} are {target.shape[1]}-d but student.feature_dim is "
                                f"{self.cfg.student.feature_dim}")
            try:
                sp = scene.segments
            except UserError:
                sp = point_superpoints(scene.points, colors=scene.colors, k_thresh=self.cfg.loss.superpoint_k_thresh,
                                       min_verts=self.cfg.loss.superpoint_min_verts)
            inst = torch.as_tensor(scene.instance_ids) if uses_instances(self.cfg) else None
            loaded = (scene.points.astype(np.float32), scene.colors, target, mask, torch.as_tensor(sp), inst)
            self._cache[name] = self._per_voxel(*loaded) if self.cfg.data.voxel_samples else loaded
        return self._cache[name]

    def _per_voxel(self, points, colors, target, mask, sp, inst) -> tuple:
        """A scene reduced to one point per student voxel (``data.voxel_samples``): its points' centroid
        and mean colour, the mean unit teacher feature of its points that have one (no target where
        none has), and the majority superpoint and instance."""
        centroids, voxel = voxel_points(points, self.cfg.student.voxel_size)
        n, seen = len(centroids), mask.numpy()
        unit = torch.nn.functional.normalize(target[mask].float(), dim=1)
        vox_target, count = segment_mean(unit, torch.from_numpy(voxel[seen]), n)
        vox_colors, _ = segment_mean(colors.astype(np.float32), voxel, n)
        vox_sp = torch.from_numpy(segment_majority(sp.numpy(), voxel, n))
        vox_inst = None if inst is None else torch.from_numpy(segment_majority(inst.numpy(), voxel, n))
        return (centroids, vox_colors.round().numpy().astype(np.uint8), vox_target.to(target.dtype), count > 0,
                vox_sp, vox_inst)

    def instance_table(self, name: str) -> InstanceTable:
        """The scene's instance-teacher targets with each instance's annotated class."""
        key = f"{name}/instances"
        if key not in self._cache:
            ids, feat, _ = load_instance_targets(instance_targets_path(Path(self.cfg.data.targets), name))
            if feat.shape[1] != self.cfg.student.feature_dim:
                raise UserError(f"instance targets of {name} are {feat.shape[1]}-d but student.feature_dim is "
                                f"{self.cfg.student.feature_dim}")
            scene = self.scene(name)
            sem, inst = scene.semantic(load_label_set(self.cfg.labels)), scene.instance_ids
            labels = [majority_label(sem[inst == i]) for i in ids.tolist()]
            self._cache[key] = InstanceTable(ids, feat, torch.as_tensor(labels, dtype=torch.long))
        return self._cache[key]

    def sample(self, index: int, epoch: int, augment: bool = True) -> Sample:
        name = self.names[index]
        points, colors, target, mask, sp, inst = self._load(name)
        rng = np.random.default_rng([self.cfg.seed, epoch, index])
        keep = np.arange(len(points))
        if augment and self.cfg.data.chunk > 0:
            c = points[rng.integers(len(points))]
            half = self.cfg.data.chunk / 2
            inside = np.nonzero((np.abs(points[:, 0] - c[0]) <= half) & (np.abs(points[:, 1] - c[1]) <= half))[0]
            keep = inside if len(inside) >= 100 else keep
        if len(keep) > self.cfg.data.max_points:
            keep = np.sort(rng.choice(keep, self.cfg.data.max_points, replace=False))
        pts = points[keep].astype(np.float64)
        if augment:
            pts = self._augment(pts, rng)
        idx = torch.as_tensor(keep)
        return Sample(name=name, points=pts.astype(np.float32), colors=colors[keep],
                      target=target[idx].float(), mask=mask[idx], superpoints=sp[idx],
                      instances=None if inst is None else inst[idx])

    def _augment(self, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = self.cfg.augment
        centre = pts.mean(0)
        pts = pts - centre
        if a.rotate_z:
            t = rng.uniform(0, 2 * np.pi)
            if a.rotate_z_step > 0:
                step = np.deg2rad(a.rotate_z_step)
                t = step * np.floor(t / step)
            c, s = np.cos(t), np.sin(t)
            pts = pts @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
        if a.flip_x and rng.random() < 0.5:
            pts[:, 0] = -pts[:, 0]
        pts = pts * rng.uniform(a.scale[0], a.scale[1])
        if a.jitter > 0:
            pts = pts + rng.normal(0, a.jitter, pts.shape)
        if a.shift > 0:
            pts = pts + rng.uniform(-a.shift / 2, a.shift / 2, 3)
        return pts + centre
