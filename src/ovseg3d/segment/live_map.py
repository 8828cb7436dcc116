"""The robot's live map: sensor data in, labelled points, instances and query answers out.

This is the node's whole pipeline without ROS, so it is tested and benchmarked on plain arrays.
Ingest (called often, must be cheap) only back-projects and voxelises. ``update`` (called by a
worker at the inference rate) runs the student on the voxels that changed plus a margin of
context around them (a sparse U-Net sees its neighbourhood, so a changed voxel changes the
features near it), writes the features back by voxel key (the map may have moved on meanwhile),
labels them against the vocabulary and regroups instances. A new vocabulary relabels the stored
features without running the student again.

Thread safety: one lock guards the map; the student runs on a copy outside it, so ingest never
waits for inference. The vocabulary and the instances named with it are one ``Labelling``,
replaced whole under the lock: a reader (a query, the publisher) takes the map's labels together
with the names they index, so a vocabulary that changes meanwhile can never pair the labels of
one with the names of the other. Work done outside the lock with an older vocabulary is
relabelled (features) or dropped (instances: the new vocabulary regroups them) when written back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import backproject_strided
from ovseg3d.geometry.superpoints import point_superpoints
from ovseg3d.geometry.voxel_map import VoxelMap, pack_keys
from ovseg3d.geometry.voxels import segment_mean, voxelize
from ovseg3d.labels import STUFF_LABELS, stuff_indices
from ovseg3d.segment.instance_classify import instance_index, name_proposals
from ovseg3d.segment.instances import Instance, connected_label_groups, stable_ids, summarize
from ovseg3d.segment.proposals import merge_superpoints
from ovseg3d.segment.query import rank_instances, text_scores
from ovseg3d.student.model import Student
from ovseg3d.text.vocabulary import Vocabulary

INSTANCE_METHODS = ("proposals", "connected")


@dataclass
class LiveConfig:
    voxel_size: float = 0.02  # map voxel edge, metres
    max_voxels: int = 1_000_000  # above this the voxels seen longest ago are evicted
    extent: float = 0.0  # > 0: voxels farther than this (x, y) from the robot are evicted
    depth_stride: int = 2  # use every n-th depth pixel per axis
    min_depth: float = 0.1
    max_depth: float = 6.0
    lidar_max_range: float = 30.0
    context: float = 1.0  # metres of map around changed voxels the student sees on an update
    instance_method: str = "proposals"  # proposals (superpoints merged by feature) | connected (same-label cells)
    instance_cell: float = 0.05  # grid of the instance grouping, metres
    instance_min_points: int = 30  # smaller groups (in map voxels) are not instances
    instance_threshold: float = 0.9  # proposals: cosine above which adjacent superpoints merge
    stuff_labels: tuple[str, ...] = STUFF_LABELS  # never instances

    def validate(self) -> None:
        positive = {"voxel_size": self.voxel_size, "max_depth": self.max_depth, "context": self.context,
                    "instance_cell": self.instance_cell, "lidar_max_range": self.lidar_max_range}
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"{name} must be positive, got {value}")
        if self.depth_stride < 1 or self.max_voxels < 1 or self.instance_min_points < 1:
            raise UserError("depth_stride, max_voxels and instance_min_points must be at least 1")
        if not 0 <= self.min_depth < self.max_depth:
            raise UserError("min_depth must be in [0, max_depth)")
        if self.instance_method not in INSTANCE_METHODS:
            raise UserError(f"instance_method must be one of {', '.join(INSTANCE_METHODS)}, "
                            f"got {self.instance_method!r}")


@dataclass
class UpdateStats:
    points: int  # voxels the student ran on
    changed: int  # voxels that had changed
    seconds: float
    stamp: float  # newest sensor stamp included in this update


@dataclass(frozen=True)
class Labelling:
    """A vocabulary and the instances named with it (their ``label`` indexes ``vocab.names``)."""

    vocab: Vocabulary
    instances: tuple[Instance, ...] = ()

    @property
    def names(self) -> list[str]:
        return list(self.vocab.names)


@dataclass
class QueryResult:
    points: np.ndarray  # (M, 3) matching map points, best first
    scores: np.ndarray  # (M,) cosine similarity to the text
    instances: list[tuple[Instance, float]] = field(default_factory=list)  # (instance, text score), best first
    names: list[str] = field(default_factory=list)  # the vocabulary the instances' labels index


class LiveSegmenter:
    def __init__(self, student: Student, vocab: Vocabulary, cfg: LiveConfig | None = None):
        self.cfg = cfg or LiveConfig()
        self.cfg.validate()
        self.student = student
        self._check_dim(vocab)
        self.labelling = Labelling(vocab)
        self.lock = threading.RLock()
        self._group_lock = threading.Lock()  # one instance regrouping at a time (update worker vs services)
        self.map = VoxelMap(self.cfg.voxel_size, self.cfg.max_voxels, self.cfg.extent or None,
                            feature_dim=student.cfg.feature_dim,
                            instance_dim=student.cfg.feature_dim if student.has_instance_head else 0)
        self.newest_stamp = -np.inf
        self._next_instance = 0
        self.version = 0  # increases with every update or relabel

    @property
    def vocab(self) -> Vocabulary:
        return self.labelling.vocab

    @property
    def instances(self) -> list[Instance]:
        return list(self.labelling.instances)

    def _check_dim(self, vocab: Vocabulary) -> None:
        if vocab.dim != self.student.cfg.feature_dim:
            raise UserError(f"the vocabulary is {vocab.dim}-d but the student predicts "
                            f"{self.student.cfg.feature_dim}-d features")

    # ------------------------------------------------------------------ ingest
    def add_rgbd(self, depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, stamp: float,
                 rgb: np.ndarray | None = None) -> int:
        """Back-project a depth image (metres) with its registered colours; returns new voxels."""
        depth = np.asarray(depth)
        if depth.ndim != 2:
            raise UserError(f"depth must be a 2D image, got shape {depth.shape}")
        if rgb is not None and rgb.shape[:2] != depth.shape:
            raise UserError(f"colour image {rgb.shape[:2]} does not match depth {depth.shape}")
        pts, pix = backproject_strided(depth, K, cam_to_world, self.cfg.depth_stride, self.cfg.min_depth,
                                       self.cfg.max_depth)
        colors = None if rgb is None else rgb[pix[:, 0], pix[:, 1]]
        return self._insert(pts, colors, stamp, cam_to_world[:3, 3])

    def add_points(self, points_world: np.ndarray, stamp: float, sensor_origin: np.ndarray,
                   colors: np.ndarray | None = None) -> int:
        """Insert a world-frame scan (e.g. LiDAR) whose sensor sat at ``sensor_origin``."""
        pts = np.asarray(points_world, np.float64).reshape(-1, 3)
        near = np.linalg.norm(pts - np.asarray(sensor_origin)[:3], axis=1) <= self.cfg.lidar_max_range
        return self._insert(pts[near], None if colors is None else colors[near], stamp, sensor_origin)

    def _insert(self, pts, colors, stamp, robot) -> int:
        with self.lock:
            self.newest_stamp = max(self.newest_stamp, stamp)
            return self.map.insert(pts, colors, stamp=stamp, robot=np.asarray(robot, float))

    # ------------------------------------------------------------------ inference
    def _context_region(self, changed: np.ndarray) -> np.ndarray:
        """Indices of the voxels within about ``context`` of any changed voxel (block grid)."""
        pts = self.map.points
        if len(changed) > 0.5 * len(pts):
            return np.arange(len(pts))
        blocks = np.floor(pts / self.cfg.context).astype(np.int64)
        dirty_blocks = np.unique(blocks[changed], axis=0)
        offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
        near = np.unique((dirty_blocks[:, None, :] + offsets[None]).reshape(-1, 3), axis=0)
        return np.flatnonzero(np.isin(pack_keys(blocks), pack_keys(near)))

    def update(self, force: bool = False) -> UpdateStats | None:
        """Run the student where the map changed (everywhere with ``force``); None if nothing did."""
        t0 = time.perf_counter()
        with self.lock:
            changed = self.map.take_dirty()
            if len(self.map) == 0 or (len(changed) == 0 and not force):
                return None
            region = np.arange(len(self.map)) if force else self._context_region(changed)
            keys = self.map.keys[region].copy()
            points = self.map.points[region]
            colors = self.map.colors[region] if self.student.cfg.input == "color" else None
            stamp = float(self.newest_stamp)
            vocab = self.vocab
        feats, inst = self.student.predict_instance(points, colors)  # inst: None without an instance head
        labels, scores = vocab.classify(feats)
        with self.lock:
            if self.vocab is not vocab:  # replaced while the student ran: these labels index the old names
                labels, scores = self.vocab.classify(feats)
            idx = self.map.index_of(keys)
            ok = idx >= 0  # voxels evicted meanwhile are skipped
            self.map.set_predictions(idx[ok], feats[ok].half().numpy(), labels[ok].numpy(), scores[ok].numpy(),
                                     None if inst is None else inst[ok].half().numpy())
        self._group_instances()
        with self.lock:
            self.version += 1
        return UpdateStats(points=len(region), changed=len(changed), seconds=time.perf_counter() - t0, stamp=stamp)

    def set_vocabulary(self, vocab: Vocabulary) -> None:
        """Relabel every labelled voxel from its stored feature: new words need no student run."""
        self._check_dim(vocab)
        with self.lock:
            self.labelling = Labelling(vocab)  # the old instances' labels index the old names: regrouped below
            done = np.flatnonzero(self.map.labels >= 0)
            for start in range(0, len(done), 200_000):
                part = done[start:start + 200_000]
                labels, scores = vocab.classify(torch.from_numpy(self.map.features[part]).float())
                self.map.set_predictions(part, None, labels.numpy(), scores.numpy())
            if self.cfg.instance_method == "connected":
                self.map.instances[:] = -1  # label-made groups: old ids meant other words
            # proposals do not depend on the words, so their ids carry over; only their names change
        self._group_instances()
        with self.lock:
            self.version += 1

    def _group_instances(self) -> None:
        """Regroup instances on a copy of the labelled voxels, outside the map lock (ingest goes on;
        proposals take a second or more on big maps), then write the ids back by voxel key."""
        with self._group_lock:
            with self.lock:
                m = self.map
                done = np.flatnonzero(m.labels >= 0)
                snap = _Labelled(keys=m.keys[done].copy(), points=m.points[done], colors=m.colors[done],
                                 labels=m.labels[done].copy(), scores=m.scores[done].copy(),
                                 previous=m.instances[done].copy(),
                                 features=m.features[done] if self.cfg.instance_method == "proposals" else None,
                                 instance_features=(m.instance_features[done] if m.instance_dim and
                                                    self.cfg.instance_method == "proposals" else None))
                vocab, cfg = self.vocab, self.cfg
            stuff = stuff_indices(vocab.names, cfg.stuff_labels)
            named = None
            if cfg.instance_method == "connected":
                groups = connected_label_groups(snap.points, snap.labels, cfg.instance_cell, cfg.instance_min_points,
                                                stuff)
            else:
                groups, named = _proposal_groups(snap, vocab, cfg, stuff)
            ids, self._next_instance = stable_ids(groups, snap.previous, self._next_instance)
            if named is not None:  # proposals carry their own name and score: key them by the group's new id
                group, first = np.unique(groups, return_index=True)
                named = {int(ids[f]): named[g] for g, f in zip(group, first) if g >= 0}
            instances = summarize(snap.points, ids, snap.labels, snap.scores, named)
            with self.lock:
                if self.vocab is not vocab:  # replaced meanwhile: its own regrouping follows this one
                    return
                idx = self.map.index_of(snap.keys)
                ok = idx >= 0  # voxels evicted meanwhile are skipped
                self.map.instances[:] = -1
                self.map.instances[idx[ok]] = ids[ok]
                alive = set(np.unique(ids[ok]).tolist())  # a reset meanwhile leaves none
                self.labelling = Labelling(vocab, tuple(i for i in instances if i.id in alive))

    # ------------------------------------------------------------------ outputs
    def labelled(self) -> tuple[dict[str, np.ndarray], Labelling]:
        """Copies of the labelled voxels' points, colours, labels, scores and instance ids, and the
        labelling (names, instances) they belong to, taken together."""
        with self.lock:
            m = self.map
            keep = m.labels >= 0
            return ({"points": m.points[keep], "colors": m.colors[keep], "labels": m.labels[keep].copy(),
                     "scores": m.scores[keep].copy(), "instances": m.instances[keep].copy()}, self.labelling)

    def query(self, text_embedding: torch.Tensor, threshold: float = 0.0, max_points: int = 0,
              max_instances: int = 0) -> QueryResult:
        """Points and instances whose features match a text embedding; threshold <= -1: best only."""
        t = torch.as_tensor(text_embedding, dtype=torch.float32).reshape(-1)
        if t.numel() != self.student.cfg.feature_dim:
            raise UserError(f"query embedding is {t.numel()}-d, the map's features are "
                            f"{self.student.cfg.feature_dim}-d")
        with self.lock:
            m = self.map
            done = np.flatnonzero(m.labels >= 0)
            feats = torch.from_numpy(m.features[done]).float()
            ids = m.instances[done]
            points = m.points[done]
            labelling = self.labelling
            # instances are ranked by what names them: the instance head's features when there is one
            inst_feats = torch.from_numpy(m.instance_features[done]).float() if m.instance_dim else feats
        scores = text_scores(feats, t)
        keep = np.flatnonzero(scores >= threshold) if threshold > -1 else np.arange(len(scores))
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        if max_points:
            keep = keep[:max_points]
        ranked = rank_instances(inst_feats, ids, list(labelling.instances), t, threshold)
        return QueryResult(points[keep], scores[keep], ranked[:max_instances] if max_instances else ranked,
                           labelling.names)

    def reset(self) -> None:
        with self.lock:
            self.map.reset()
            self.labelling = Labelling(self.vocab)
            self.newest_stamp = -np.inf
            self.version += 1

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write the map (PLY + npz) from a copy taken under the lock: ingest and queries go on while
        the files are compressed and written (a copy of the map's memory while it lasts)."""
        from ovseg3d.data.map_files import save_map

        with self.lock:
            snapshot, names = self.map.copy(), np.array(self.vocab.names)
        return save_map(snapshot, path, extra={"label_names": names})


@dataclass
class _Labelled:
    """A copy of the labelled voxels that instance grouping works on."""

    keys: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    previous: np.ndarray  # instance ids before this regrouping
    features: np.ndarray | None
    instance_features: np.ndarray | None


def _proposal_groups(snap: _Labelled, vocab: Vocabulary, cfg: LiveConfig, stuff: set[int]
                     ) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Class-agnostic proposals on an ``instance_cell`` grid of the labelled voxels (superpoints
    merged by feature similarity and adjacency), named from 3D alone: by the pooled instance-head
    feature when the student has one (FOLK), else the mean semantic feature. Returns a group per
    voxel (-1: none; 0.. largest first) and each group's (label, score)."""
    groups = np.full(len(snap.points), -1, np.int64)
    if len(snap.points) < cfg.instance_min_points:
        return groups, []
    vox = voxelize(snap.points, cfg.instance_cell)
    n, cell_of = vox.num_voxels, vox.point_to_voxel
    if n < 3:
        return groups, []
    pts, weight = segment_mean(snap.points, cell_of, n)
    cols, _ = segment_mean(snap.colors, cell_of, n)
    pts, weight = pts.double().numpy(), weight.numpy()
    sp = point_superpoints(pts, colors=cols.numpy().astype(np.uint8))
    proposals = merge_superpoints(pts, segment_mean(snap.features, cell_of, n)[0], sp, cfg.instance_threshold,
                                  min_points=1, adjacency_dist=2.0 * cfg.instance_cell)
    proposals = [p for p in proposals if weight[p.mask].sum() >= cfg.instance_min_points]
    if not proposals:
        return groups, []
    inst = None if snap.instance_features is None else segment_mean(snap.instance_features, cell_of, n)[0]
    preds = name_proposals(proposals, vocab, stuff, inst)
    preds.sort(key=lambda q: -weight[q.mask].sum())
    return instance_index(preds, n).astype(np.int64)[cell_of], [(q.label, q.score) for q in preds]

