"""The robot's live map: sensor data in, labelled points, instances and query answers out.

This is the node's whole pipeline without ROS, so it is tested and benchmarked on plain arrays.
Ingest (called often, must be cheap) only back-projects and voxelises. ``update`` (called by a
worker at the inference rate) runs the student on the voxels that changed plus a margin of
context around them (a sparse U-Net sees its neighbourhood, so a changed voxel changes the
features near it), writes the features back by voxel key (the map may have moved on meanwhile),
labels them against the vocabulary and regroups instances. Features are stored once per student
voxel in a table of rows that the map voxels point at (``feature_table``), each row the feature's
coordinates in a principal subspace (``feature_codes``): float16 when the student is coarser than
the map (its voxels' rows are shared by many map voxels: tens of bytes a voxel, not 1-2 kB, and
queries rank as the uncompressed features do), int8 codes when it is as fine. A new vocabulary
relabels, and any text is answered, from the rows without running the student again. The
subspace is fitted on the first update's features and refitted (the rows re-expressed in the new
axes by one small matrix) when later features leave it.

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
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import backproject_strided, colors_from_camera
from ovseg3d.geometry.neighbors import Neighbourhood
from ovseg3d.geometry.rows import take_rows, unique_rows
from ovseg3d.geometry.superpoints import point_superpoints
from ovseg3d.geometry.voxel_map import VoxelMap, compile_ingest, key_rows
from ovseg3d.geometry.voxel_reduce import VoxelSums, pack_keys, reduce_depth, reduce_depth_bands, reduce_points
from ovseg3d.geometry.voxels import segment_mean, voxelize
from ovseg3d.labels import STUFF_LABELS, stuff_indices
from ovseg3d.segment.feature_codes import FeatureCodec, TextProjection, recode
from ovseg3d.segment.feature_table import FeatureTable
from ovseg3d.segment.instance_classify import instance_index, name_instances
from ovseg3d.segment.instances import Instance, connected_label_groups, stable_ids, summarize
from ovseg3d.segment.keyframes import KeyframeGate
from ovseg3d.segment.proposals import merge_superpoints
from ovseg3d.segment.query import instance_embeddings, rank_instances
from ovseg3d.student.model import Student
from ovseg3d.text.vocabulary import Vocabulary

INSTANCE_METHODS = ("proposals", "connected")
FEATURE_ROWS = ("auto", "fp16", "int8")
ROW_INDEX_BYTES = 4  # a voxel's int32 row in the feature table
AUTO_MIN_VOXELS = 2000  # ``feature_rows: auto`` judges how rows are shared from this many labelled voxels on
AUTO_MARGIN = 1.5  # ... and goes back to float16 rows once they are shared this much more than the line


@dataclass
class LiveConfig:
    voxel_size: float = 0.02  # map voxel edge, metres
    max_voxels: int = 1_000_000  # above this the voxels seen longest ago are evicted
    extent: float = 0.0  # > 0: voxels farther than this (x, y) from the robot are evicted
    depth_stride: int = 2  # use every n-th depth pixel per axis
    keyframe_translation: float = 0.05  # RGB-D frames are integrated when the camera moved this far (m) ...
    keyframe_rotation: float = 5.0  # ... or turned this much (degrees) since the last one ...
    keyframe_interval: float = 1.0  # ... or this long (s) has passed; translation 0: every frame
    keyframe_min_interval: float = 0.1  # ... and never sooner than this (s) after the last one (10 Hz at most)
    min_depth: float = 0.1
    max_depth: float = 6.0
    lidar_max_range: float = 30.0
    lidar_min_range: float = 0.1  # nearer returns are the robot's own body or a driver's (0, 0, 0) "no return"
    context: float = 1.0  # metres of map around changed voxels the student sees on an update
    instance_method: str = "proposals"  # proposals (superpoints merged by feature) | connected (same-label cells)
    instance_cell: float = 0.05  # grid of the instance grouping, metres
    instance_min_points: int = 30  # smaller groups (in map voxels) are not instances
    instance_threshold: float = 0.9  # proposals: cosine above which adjacent superpoints merge
    stuff_labels: tuple[str, ...] = STUFF_LABELS  # never instances
    code_bytes: int = 64  # feature bytes per voxel when every voxel has a row of its own: int8 code
    #                       columns (this less the 4-byte row index), semantic and instance-head together;
    #                       float16 rows have as many columns (the semantic span: 49-d for MinkUNetSmall)
    instance_codes: int = 8  # of those, for an instance-head feature (98 % of its variance for the demo
    #                          student); the rest holds the semantic span and finer digits of its widest axes
    feature_rows: str = "auto"  # fp16 | int8 | auto: starts fp16 when the student's voxels are at least twice
    #                             the map's, then follows how many map voxels share a row (``_follow_sharing``)
    codes_refit: float = 0.01  # refit the code axes when new features lose this much more of their variance
    #                             than the features they were fitted on (or twice as much)

    def validate(self) -> None:
        positive = {"voxel_size": self.voxel_size, "max_depth": self.max_depth, "context": self.context,
                    "instance_cell": self.instance_cell, "lidar_max_range": self.lidar_max_range}
        for name, value in positive.items():
            if not value > 0:
                raise UserError(f"{name} must be positive, got {value}")
        if min(self.depth_stride, self.max_voxels, self.instance_min_points, self.instance_codes) < 1:
            raise UserError("depth_stride, max_voxels, instance_min_points and instance_codes must be at least 1")
        if self.code_bytes - ROW_INDEX_BYTES <= self.instance_codes:
            raise UserError(f"code_bytes ({self.code_bytes}) must exceed instance_codes ({self.instance_codes}) "
                            f"and the {ROW_INDEX_BYTES}-byte row index")
        if self.feature_rows not in FEATURE_ROWS:
            raise UserError(f"feature_rows must be one of {', '.join(FEATURE_ROWS)}, got {self.feature_rows!r}")
        if min(self.keyframe_translation, self.keyframe_rotation, self.keyframe_interval,
               self.keyframe_min_interval) < 0:
            raise UserError("keyframe translation, rotation and intervals must not be negative")
        if not 0 < self.codes_refit < 1:
            raise UserError(f"codes_refit must be in (0, 1), got {self.codes_refit}")
        if not 0 <= self.min_depth < self.max_depth:
            raise UserError("min_depth must be in [0, max_depth)")
        if not 0 <= self.lidar_min_range < self.lidar_max_range:
            raise UserError("lidar_min_range must be in [0, lidar_max_range)")
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
                            input_cell=self._input_cell())
        self.codec: FeatureCodec | None = None  # fitted on the first update's features
        self.instance_codec: FeatureCodec | None = None
        self._configured_rows()
        self.code_refits = 0
        self._fingerprint: str | None = None  # the student's digest, made when a map is first saved or loaded
        self.newest_stamp = -np.inf
        self.keyframes = KeyframeGate()
        self._next_instance = 0
        self.version = 0  # increases with every update or relabel
        self._labelling = False  # an update has taken the map's changes and not yet written its labels

    @property
    def vocab(self) -> Vocabulary:
        return self.labelling.vocab

    @property
    def instances(self) -> list[Instance]:
        return list(self.labelling.instances)

    def _configured_rows(self) -> None:
        """The configuration's kind of feature rows, an empty table and no axes yet (a loaded map
        brings its own kind: ``load``)."""
        self.exact = self._exact_rows()
        self.code_widths = self._widths(self.exact)
        self.table = FeatureTable(*self.code_widths, np.float16 if self.exact else np.int8)
        self.codec = self.instance_codec = None

    def _widths(self, exact: bool) -> tuple[int, int]:
        """Columns of a row: int8 rows keep a voxel's bytes (row and index) within code_bytes."""
        inst = self.cfg.instance_codes if self.student.has_instance_head else 0
        return self.cfg.code_bytes - inst - (0 if exact else ROW_INDEX_BYTES), inst

    def _follow_sharing(self) -> None:
        """``auto``: float16 rows while they are shared enough to keep a voxel within ``code_bytes``,
        int8 codes when not (a sparse map: a LiDAR's far returns, a first glimpse), and back when the
        map fills in (with a margin, so a map near the line does not flip on every update). One
        pass over the voxels' rows (a few ms at 1M voxels, under the lock, once an update)."""
        rows = self.map.feature_row
        used = self.table.in_use(rows)
        voxels = int((rows >= 0).sum())
        if voxels < AUTO_MIN_VOXELS or not used or self.codec is None:
            return
        shared = voxels / used  # map voxels a row
        line = sum(self._widths(True)) * 2 / (self.cfg.code_bytes - ROW_INDEX_BYTES)  # float16 costs more below
        if self.exact and shared < line:
            self._convert_rows(exact=False)
        elif not self.exact and shared > AUTO_MARGIN * line:
            self._convert_rows(exact=True)

    def _convert_rows(self, exact: bool) -> None:
        """Re-store the table's rows as float16 coordinates or int8 codes in the same axes (no decode to
        the full feature; int8 keeps the widest axes its columns hold); under the lock. An update
        that encoded in the old kind meanwhile re-encodes when it writes back (``_update``)."""
        self.table.compact(self.map.feature_row)
        widths = self._widths(exact)
        semantic, self.codec = self.codec.as_kind(self.table.semantic, widths[0], exact)
        instance = np.zeros((self.table.n, widths[1]), np.float16 if exact else np.int8)
        if self.instance_codec is not None:
            instance, self.instance_codec = self.instance_codec.as_kind(self.table.instance, widths[1], exact)
        self.table = FeatureTable.of(semantic, instance)
        self.exact, self.code_widths = exact, widths
        self.code_refits += 1

    def _exact_rows(self) -> bool:
        """float16 rows (``feature_table``) when the configuration asks or, by default, when a row
        serves several map voxels: a student voxel at least twice the map's (4 or more on a surface)."""
        if self.cfg.feature_rows != "auto":
            return self.cfg.feature_rows == "fp16"
        return self.student.cfg.voxel_size >= 2 * self.cfg.voxel_size - 1e-9

    def voxel_codes(self, instance: bool = False) -> np.ndarray:
        """A copy of every voxel's row of the feature table (zeros where it has none yet): what the
        map holds for it, for tests and tools."""
        with self.lock:
            rows = self.map.feature_row
            table = self.table.instance if instance else self.table.semantic
            out = np.zeros((len(rows), table.shape[1]), table.dtype)
            has = rows >= 0
            out[has] = take_rows(table, rows[has])
            return out

    def _input_cell(self) -> float | None:
        """What of a revisited voxel the student reads: only its cell on the student's grid for a
        geometry-only student (re-seeing mapped surfaces then costs no update), colour too else."""
        return None if self.student.cfg.reads_color else self.student.cfg.voxel_size

    def _check_dim(self, vocab: Vocabulary) -> None:
        if vocab.dim != self.student.cfg.feature_dim:
            raise UserError(f"the vocabulary is {vocab.dim}-d but the student predicts "
                            f"{self.student.cfg.feature_dim}-d features")

    # ------------------------------------------------------------------ ingest
    def _gate(self) -> KeyframeGate:
        """The keyframe gate with this configuration's thresholds (parameters may change them live)."""
        gate, cfg = self.keyframes, self.cfg
        gate.min_translation, gate.min_rotation_deg = cfg.keyframe_translation, cfg.keyframe_rotation
        gate.max_interval, gate.min_interval = cfg.keyframe_interval, cfg.keyframe_min_interval
        return gate

    def warm_up(self) -> float:
        """Compile the ingest kernels and run the student, the superpoint segmentation, the pooling
        and the code scoring once on a small synthetic cloud, outside the map; returns the seconds it
        took. First calls initialise torch and MinkowskiEngine (about a second here) and compile
        numba kernels (seconds on a fresh install): on the first sensor frames they would stall
        ingest, the first update and the first query."""
        t0 = time.perf_counter()
        compile_ingest()
        # a small block of voxels, in rows as the map's copies are (a kernel compiles once per array layout:
        # the transposed grid warmed the column-major variants, and the first regrouping compiled its own)
        g = np.ascontiguousarray(np.mgrid[0:8, 0:8, 0:4].reshape(3, -1).T) * self.student.cfg.voxel_size
        grey = np.full((len(g), 3), 128, np.uint8)
        self.student.predict_voxels(g.astype(np.float64), grey if self.student.cfg.reads_color else None)
        point_superpoints(g.astype(np.float64), colors=grey)  # compiles regrouping's kernels (GIL held meanwhile)
        # regrouping's pooling of positions, colours and codes: one compiled variant per dtype
        for rows in (g.astype(np.float32), grey, np.zeros((len(g), 1), np.int8)):
            segment_mean(rows, np.zeros(len(g), np.int64), 1)
        # the code scoring a text query and a relabel run (the first ``~/text_query`` waited for it)
        features = torch.randn(len(g), self.student.cfg.feature_dim, generator=torch.Generator().manual_seed(0))
        codec = FeatureCodec.fit(features, self.code_widths[0], exact=self.exact)
        codes, vocab = codec.encode(features), self.vocab
        TextProjection(codec, vocab.embeddings).best(codes, vocab.row_class, len(vocab))
        TextProjection(codec, vocab.embeddings[0]).scores(codes)
        return time.perf_counter() - t0

    def is_keyframe(self, cam_to_world: np.ndarray, stamp: float) -> bool:
        """Whether an RGB-D frame at this pose should be integrated (``keyframes.KeyframeGate``); ask
        before decoding its images, skip it if not. The frame becomes the gate's reference once
        ``add_rgbd`` has put it in the map."""
        return self._gate().wants(np.asarray(cam_to_world, np.float64), stamp)

    def add_rgbd(self, depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, stamp: float,
                 rgb: np.ndarray | None = None, color_camera: tuple[np.ndarray, np.ndarray] | None = None,
                 helper: Executor | None = None) -> int:
        """Back-project a depth image (metres) with its colours; returns new voxels. The colour image
        is registered to the depth (same pixels), or with ``color_camera`` (its K and camera-to-world
        pose) a camera of its own that the points are projected into. With ``helper`` (a thread
        pool), half of a registered frame is reduced on it meanwhile (``reduce_depth_bands``)."""
        depth = np.asarray(depth)
        if depth.ndim != 2:
            raise UserError(f"depth must be a 2D image, got shape {depth.shape}")
        voxel, cfg = self.map.voxel_size, self.cfg
        bounds = (voxel, cfg.depth_stride, cfg.min_depth, cfg.max_depth)
        if color_camera is None and helper is not None:  # two threads, no GIL (``voxel_reduce``)
            sums = reduce_depth_bands(depth, K, cam_to_world, *bounds, rgb, helper)
        elif color_camera is None:  # one pass, no GIL
            sums = [reduce_depth(depth, K, cam_to_world, *bounds, rgb)]
        else:  # colour from another camera: projected into it
            pts, _ = backproject_strided(depth, K, cam_to_world, *bounds[1:])
            sums = [reduce_points(pts, colors_from_camera(pts, rgb, *color_camera), voxel)]
        new = self._insert(sums, stamp, cam_to_world[:3, 3])
        self.keyframes.taken(np.asarray(cam_to_world, np.float64), stamp)
        return new

    def add_points(self, points_world: np.ndarray, stamp: float, sensor_origin: np.ndarray,
                   colors: np.ndarray | None = None) -> int:
        """Insert a world-frame scan (e.g. LiDAR) whose sensor sat at ``sensor_origin``."""
        origin = np.asarray(sensor_origin, np.float64).reshape(-1)[:3]
        sums = reduce_points(points_world, colors, self.map.voxel_size, origin=origin,
                             min_range=self.cfg.lidar_min_range, max_range=self.cfg.lidar_max_range)
        return self._insert([sums], stamp, origin)

    def add_scan(self, points_sensor: np.ndarray, sensor_to_world: np.ndarray, stamp: float) -> int:
        """Insert a LiDAR sweep in its sensor's frame: transformed, range-gated and reduced to
        voxels in one pass (``voxel_reduce``), no world-frame copy of the cloud."""
        pose = np.asarray(sensor_to_world, np.float64)
        sums = reduce_points(points_sensor, None, self.map.voxel_size, pose=pose,
                             min_range=self.cfg.lidar_min_range, max_range=self.cfg.lidar_max_range)
        return self._insert([sums], stamp, pose[:3, 3])

    def _insert(self, parts: list[VoxelSums], stamp: float, robot: np.ndarray) -> int:
        """Merge a frame reduced outside the lock (the student's update and queries wait less), in
        one or more parts under one hold of the lock (an update never sees half a frame)."""
        with self.lock:
            self.newest_stamp = max(self.newest_stamp, stamp)
            return sum(self.map.insert_sums(sums, stamp=stamp, robot=np.asarray(robot, float)) for sums in parts)

    # ------------------------------------------------------------------ inference
    def _context_region(self, changed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The voxels the student runs on and, of those, the ones whose predictions it writes.

        Written: the voxels of the ``context / 2`` blocks holding a changed voxel. Run on: those
        blocks and two blocks around them, so every written voxel is seen with at least
        ``context`` metres of map on each side; voxels in that margin keep the predictions they got
        with their own full context (rewriting them from a cut-off context would make them worse),
        unless they have none yet.
        """
        pts = self.map.xyz
        if len(changed) > 0.5 * len(pts):
            return np.arange(len(pts)), np.ones(len(pts), bool)
        blocks = np.floor(pts / (0.5 * self.cfg.context)).astype(np.int64)
        dirty = unique_rows(blocks[changed])
        offsets = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)
        near = unique_rows((dirty[:, None, :] + offsets[None]).reshape(-1, 3))
        near_keys = pack_keys(near)
        row = key_rows(near_keys, pack_keys(blocks))  # each voxel's block among the near ones, or -1
        region = np.flatnonzero(row >= 0)
        dirty_block = np.isin(near_keys, pack_keys(dirty))  # a few hundred blocks: cheap
        return region, dirty_block[row[region]] | (self.map.labels[region] < 0)

    def clean_stamp(self) -> float | None:
        """The newest sensor stamp in the map when nothing awaits the student (its labels then hold
        for all data up to it: re-seen surfaces change nothing it reads); None while something does."""
        with self.lock:
            return None if not np.isfinite(self.newest_stamp) or not self._idle() else float(self.newest_stamp)

    def idle(self) -> bool:
        """Every change of the map is labelled: none waits for the student, and no update is running
        on some (the map is clean from the moment an update takes its changes until it writes the
        labels: a reader that checked only that would take the old labels for the new data's)."""
        with self.lock:
            return self._idle()

    def _idle(self) -> bool:
        return not self._labelling and not self.map.dirty.any()

    def update(self, force: bool = False, group: bool = True) -> UpdateStats | None:
        """Run the student where the map changed (everywhere with ``force``); None if nothing did.
        ``group=False`` leaves the instances to a ``regroup()`` call, so the labels can be
        published first (regrouping a large map takes about as long as the student)."""
        t0 = time.perf_counter()
        with self.lock:
            changed = self.map.take_dirty()
            if len(self.map) == 0 or (len(changed) == 0 and not force):
                return None
            self._labelling, changed_keys = True, self.map.keys[changed]
        try:
            return self._update(changed, force, group, t0)
        except BaseException:
            with self.lock:  # e.g. CUDA out of memory: the next update tries these changes again
                self.map.mark_dirty(changed_keys)
            raise
        finally:
            with self.lock:
                self._labelling = False

    def _update(self, changed: np.ndarray, force: bool, group: bool, t0: float) -> UpdateStats:
        with self.lock:
            region, write = ((np.arange(len(self.map)), np.ones(len(self.map), bool)) if force
                             else self._context_region(changed))
            keys = self.map.keys[region[write]]
            points = self.map.points_at(region)
            colors = self.map.colors_at(region) if self.student.cfg.reads_color else None
            stamp = float(self.newest_stamp)
            vocab, codecs = self.vocab, (self.codec, self.instance_codec)
        pred = self.student.predict_voxels(points, colors)
        # one row per student voxel holding a written map voxel (several map voxels share one)
        used, row = np.unique(pred.index[write], return_inverse=True)
        feats, inst = pred.semantic[used], None if pred.instance is None else pred.instance[used]
        labels, scores = vocab.classify(feats)
        # encoded before taking the lock, in the axes fitted here (the usual case: they hold on)
        axes, codes = self._fitted_codes(codecs, feats, inst)
        with self.lock:
            if self.vocab is not vocab:  # replaced while the student ran: these labels index the old names
                labels, scores = self.vocab.classify(feats)
            if (self.codec is not codecs[0] or self.instance_codec is not codecs[1]  # a map loaded meanwhile
                    or not self.table.fits(codes[0].shape[1], 0 if codes[1] is None else codes[1].shape[1],
                                           codes[0].dtype)):  # (or two: its rows' kind and widths)
                axes, codes = self._fitted_codes((self.codec, self.instance_codec), feats, inst)
            self._adopt_codecs(*axes)
            idx = self.map.index_of(keys)
            ok = idx >= 0  # voxels evicted meanwhile are skipped
            row = row[ok]
            fresh = self.table.append(codes[0], codes[1])  # the rows these voxels pointed at become garbage
            self.map.set_predictions(idx[ok], fresh[row], labels.numpy()[row], scores.numpy()[row])
            if self.table.wants_compaction():
                self.table.compact(self.map.feature_row)  # a view of the occupied rows: re-pointed in place
            if self.cfg.feature_rows == "auto":
                self._follow_sharing()
        if group:
            self._group_instances()
        with self.lock:
            self.version += 1
        return UpdateStats(points=len(region), changed=len(changed), seconds=time.perf_counter() - t0, stamp=stamp)

    def _fitted_codes(self, codecs: tuple[FeatureCodec | None, FeatureCodec | None], feats: torch.Tensor,
                      inst: torch.Tensor | None) -> tuple[tuple, tuple[np.ndarray, np.ndarray | None]]:
        """The axes for these semantic (and instance) features, starting from ``codecs``
        (``_fit_codec``), and the features' codes in them."""
        semantic = self._fit_codec(codecs[0], feats, "codes")
        instance = None if inst is None else self._fit_codec(codecs[1], inst, "instance_codes")
        return ((semantic[0], None if instance is None else instance[0]),
                (_encoded(semantic, feats), None if instance is None else _encoded(instance, inst)))

    def _fit_codec(self, codec: FeatureCodec | None, features: torch.Tensor, field: str
                   ) -> tuple[FeatureCodec, torch.Tensor | None]:
        """``codec`` while it still holds ``features``; else axes fitted on them (and on what the
        map already holds in ``field``, "codes" or "instance_codes", decoded from a sample of its
        rows). With the features' coordinates in the returned codec's axes when they were made
        here (None after a refit): ``_encoded``."""
        code_dim = self.code_widths[0] if field == "codes" else self.code_widths[1]
        sample = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(len(features)))[:5000]]
        # refit when new features lose codes_refit more of their variance, or twice what the fitting
        # features lost (an 8-axis instance code misses a few percent anyway): each refit rounds again
        if codec is not None and codec.residual(sample) <= codec.baseline + max(self.cfg.codes_refit, codec.baseline):
            # same axes; a coordinate beyond an axis' range would saturate, and the extremes are the
            # best answers of a query: that axis' step grows to hold it (the codec itself if none does)
            coordinates = codec.project(features)
            return codec.widened_to(coordinates), coordinates
        if codec is None:
            return FeatureCodec.fit(features, code_dim, exact=self.exact), None
        with self.lock:  # the stored rows are in the map's current axes (a loaded map may have new ones)
            current = self.codec if field == "codes" else self.instance_codec
            rows = self.map.feature_row
            rows = rows[rows >= 0]
            table = self.table.semantic if field == "codes" else self.table.instance
            old = None if current is None else take_rows(table, rows[:: max(1, len(rows) // 20_000)])
        if old is None:
            return FeatureCodec.fit(features, code_dim, exact=self.exact), None
        return FeatureCodec.fit(torch.cat([current.decode(old), features.float()]), code_dim, exact=self.exact), None

    def _adopt_codecs(self, codec: FeatureCodec, instance_codec: FeatureCodec | None) -> None:
        """Make these the map's code axes, re-expressing the stored rows when the axes changed (one
        k x k matrix: coordinates in the old axes to the new, no decode to the full feature)."""
        for rows, old, new in ((self.table.semantic, self.codec, codec),
                               (self.table.instance, self.instance_codec, instance_codec)):
            if old is None or new is None or old is new:
                continue
            recode(rows, old, new)  # a view of the table's rows: written in place
            self.code_refits += 1
        self.codec, self.instance_codec = codec, instance_codec

    def set_vocabulary(self, vocab: Vocabulary) -> None:
        """Relabel every labelled voxel from its feature row: new words need no student run."""
        self._check_dim(vocab)
        with self.lock:
            self.labelling = Labelling(vocab)  # the old instances' labels index the old names: regrouped below
            self.relabel_voxels(vocab)
            if self.cfg.instance_method == "connected":
                self.map.instances[:] = -1  # label-made groups: old ids meant other words
            # proposals do not depend on the words, so their ids carry over; only their names change
        self.regroup()

    def relabel_voxels(self, vocab: Vocabulary) -> None:
        """Label every voxel that has a feature row with ``vocab`` (under the map's lock): each row
        classified once, then its voxels take its label and score (``set_vocabulary`` names the
        instances with it too)."""
        with self.lock:
            if self.codec is None:
                return
            labels, scores = TextProjection(self.codec, vocab.embeddings).best(
                self.table.semantic, vocab.row_class, len(vocab))
            rows = self.map.feature_row
            done = np.flatnonzero(rows >= 0)
            if len(done) == len(rows):  # the usual case: no index of the labelled voxels
                self.map.set_predictions(np.s_[: len(rows)], None, labels[rows], scores[rows])
            else:
                self.map.set_predictions(done, None, labels[rows[done]], scores[rows[done]])

    def regroup(self) -> None:
        """Regroup the instances on the current labels (after ``update(group=False)``)."""
        self._group_instances()
        with self.lock:
            self.version += 1

    def _group_instances(self, saved: dict[int, tuple[int, float]] | None = None) -> None:
        """Regroup instances on a copy of the labelled voxels, outside the map lock (ingest goes on),
        then write the ids back by voxel key. ``saved``: a loaded map's instances (id -> label,
        score): its voxels keep the ids they were saved with, no regrouping (minutes at 1M voxels)."""
        with self._group_lock:
            with self.lock:
                m = self.map
                if self.codec is None:
                    return
                done = np.flatnonzero(m.labels >= 0)
                table, rows = self.table.subset(m.feature_row[done])  # the rows they use, renumbered
                # fancy indexing copies: no .copy() on top
                snap = _Labelled(keys=m.keys[done], points=m.points_at(done), colors=m.colors_at(done),
                                 labels=m.labels[done], scores=m.scores[done], previous=m.instances[done],
                                 rows=rows, table=table, codec=self.codec, instance_codec=self.instance_codec)
                vocab, cfg = self.vocab, self.cfg
            stuff = stuff_indices(vocab.names, cfg.stuff_labels)
            if saved is not None:
                ids, named = snap.previous, saved
            else:
                named = None
                if cfg.instance_method == "connected":
                    groups = connected_label_groups(snap.points, snap.labels, cfg.instance_cell,
                                                    cfg.instance_min_points, stuff)
                else:
                    groups, named = _proposal_groups(snap, vocab, cfg, stuff)
                ids, self._next_instance = stable_ids(groups, snap.previous, self._next_instance)
                if named is not None:  # proposals carry their own name and score: key them by the new id
                    group, first = np.unique(groups, return_index=True)
                    named = {int(ids[f]): named[g] for g, f in zip(group, first) if g >= 0}
            # what a text query ranks instances by: the instance head's mean feature when there is one
            instance = snap.instance_codec is not None
            codec = snap.instance_codec if instance else snap.codec
            coordinates = codec.coordinates(snap.table.instance if instance else snap.table.semantic)
            embeddings = instance_embeddings(coordinates[torch.from_numpy(snap.rows.astype(np.int64))], ids,
                                             codec.lift)
            instances = summarize(snap.points, ids, snap.labels, snap.scores, named, embeddings)
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
            return ({"points": m.points_at(keep), "colors": m.colors_at(keep), "labels": m.labels[keep],
                     "scores": m.scores[keep], "instances": m.instances[keep]}, self.labelling)

    def query(self, text_embedding: torch.Tensor, threshold: float = 0.0, max_points: int = 0,
              max_instances: int = 0) -> QueryResult:
        """Points and instances whose features match a text embedding; threshold <= -1: best only.
        Each feature row is scored once, then every voxel takes its row's score (no copy of the
        map's features); only the answer is copied out."""
        t = torch.as_tensor(text_embedding, dtype=torch.float32).reshape(-1)
        if t.numel() != self.student.cfg.feature_dim:
            raise UserError(f"query embedding is {t.numel()}-d, the map's features are "
                            f"{self.student.cfg.feature_dim}-d")
        with self.lock:
            m, labelling = self.map, self.labelling
            if self.codec is None or not len(m):
                return QueryResult(np.zeros((0, 3), np.float32), np.zeros(0, np.float32), [], labelling.names)
            # a voxel with no row yet (-1: not labelled) takes the -inf after the rows': never an answer
            rows = TextProjection(self.codec, t).scores(self.table.semantic)
            scores = np.append(rows, np.float32(-np.inf))[m.feature_row]
            keep = _best(scores, threshold if threshold > -1 else np.finfo(np.float32).min, max_points)
            points = m.points_at(keep)
        ranked = rank_instances(list(labelling.instances), t, threshold)
        return QueryResult(points, scores[keep], ranked[:max_instances] if max_instances else ranked,
                           labelling.names)

    def reset(self) -> None:
        with self.lock:
            self.map.reset()
            self._configured_rows()
            self.keyframes.reset()
            self.labelling = Labelling(self.vocab)
            self.newest_stamp = -np.inf
            self.version += 1

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write the map (PLY + npz) from a copy taken under the lock: ingest and queries go on while
        the files are compressed and written (a copy of the map's memory while it lasts). The npz
        also holds the code axes, the vocabulary and the student's fingerprint, for ``load``."""
        from ovseg3d.data.map_files import save_map

        with self.lock:
            snapshot, vocab, instances = self.map.copy(), self.vocab, self.instances
            table, snapshot.feature_row[:] = self.table.subset(snapshot.feature_row)  # no garbage rows
            codecs = {**({} if self.codec is None else self.codec.state()),
                      **({} if self.instance_codec is None else
                         {f"instance_{k}": v for k, v in self.instance_codec.state().items()})}
        return save_map(snapshot, path, table, extra={
            "label_names": np.array(vocab.names), "vocab_embeddings": vocab.embeddings.float().numpy(),
            "vocab_row_class": vocab.row_class.numpy(), "student_fingerprint": np.array(self.fingerprint),
            "feature_dim": np.array(self.student.cfg.feature_dim), **codecs,
            "instance_ids": np.array([i.id for i in instances], np.int64),
            "instance_labels": np.array([i.label for i in instances], np.int64),
            "instance_scores": np.array([i.score for i in instances], np.float32)})

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from ovseg3d.student.checkpoint import student_fingerprint

            self._fingerprint = student_fingerprint(self.student)
        return self._fingerprint

    def load(self, path: Path) -> int:
        """Replace the live map with a saved one (voxels, feature table, labels, instance ids, vocabulary);
        returns its voxel count. A map this student cannot read (another student, feature size or
        voxel size; a damaged file) is refused with one message and the live map is left as it was."""
        from ovseg3d.data.map_files import map_from_arrays, read_map_file

        arrays = read_map_file(path)
        codec, instance_codec, vocab = self._check_saved(arrays, Path(path))
        saved = self._saved_instances(arrays, len(vocab.names), Path(path))
        vmap, table = map_from_arrays(arrays, self.cfg.max_voxels, self.cfg.extent or None)
        vmap.input_cell = self._input_cell()
        with self._group_lock, self.lock:
            self.map, self.codec, self.instance_codec = vmap, codec, instance_codec
            if codec is not None:  # its rows as saved (float16 or int8, their widths): updates go on in them
                self.table, self.exact, self.code_widths = table, codec.exact, table.widths
            else:  # nothing labelled (``read_map_file``: so no voxel has a row): the configured kind of rows
                self._configured_rows()
            self.labelling = Labelling(vocab)
            ids = vmap.instances
            self._next_instance = max(self._next_instance, int(ids.max()) + 1 if len(ids) else 0)
            self.newest_stamp = float(vmap.last_seen.max()) if len(vmap) else -np.inf
        self._group_instances(saved=saved)
        with self.lock:
            self.version += 1
        return len(vmap)

    @staticmethod
    def _saved_instances(arrays: dict[str, np.ndarray], labels: int, path: Path) -> dict[int, tuple[int, float]]:
        """The saved instances' names and scores by id (their voxels carry the ids)."""
        try:
            ids, names, scores = (arrays[k] for k in ("instance_ids", "instance_labels", "instance_scores"))
        except KeyError as exc:
            raise UserError(f"{path} is an incomplete map (no {exc.args[0]})") from None
        if not len(ids) == len(names) == len(scores) or int(names.max(initial=-1)) >= labels:
            raise UserError(f"{path} is a damaged map: its instance table does not fit its vocabulary")
        return {int(i): (int(n), float(s)) for i, n, s in zip(ids, names, scores)}

    def _check_saved(self, arrays: dict[str, np.ndarray], path: Path
                     ) -> tuple[FeatureCodec | None, FeatureCodec | None, Vocabulary]:
        """The saved map's code axes and vocabulary, if this student and configuration can use them."""
        dim = self.student.cfg.feature_dim
        if "feature_dim" not in arrays or "student_fingerprint" not in arrays:
            raise UserError(f"{path} does not say which student made it; refusing to mix features")
        if int(arrays["feature_dim"]) != dim:
            raise UserError(f"{path} holds {int(arrays['feature_dim'])}-d features; this student predicts {dim}-d")
        if str(arrays["student_fingerprint"]) != self.fingerprint:
            raise UserError(f"{path} was made by another student (fingerprint {arrays['student_fingerprint']}, "
                            f"running {self.fingerprint}): its codes mean other features")
        if not np.isclose(float(arrays["voxel_size"]), self.cfg.voxel_size):
            raise UserError(f"{path} has {float(arrays['voxel_size'])} m voxels; this map uses {self.cfg.voxel_size} m")
        labelled = bool((arrays["labels"] >= 0).any())
        codec = FeatureCodec.from_state(arrays) if labelled else None
        inst_state = {k.removeprefix("instance_"): v for k, v in arrays.items() if k.startswith("instance_code_")}
        instance_codec = FeatureCodec.from_state(inst_state) if labelled and self.student.has_instance_head else None
        for name, c, codes in (("feature", codec, arrays["table_codes"]), ("instance", instance_codec,
                                                                            arrays["table_instance_codes"])):
            if c is not None and (c.dim != dim or c.code_dim != codes.shape[1] or c.dtype != codes.dtype):
                raise UserError(f"{path}: its {name} codes ({codes.shape[1]} {codes.dtype} columns, axes of "
                                f"{c.dim}-d) do not fit this student's {dim}-d features")
        if labelled and self.student.has_instance_head != (arrays["table_instance_codes"].shape[1] > 0):
            raise UserError(f"{path} was saved {'with' if arrays['table_instance_codes'].shape[1] else 'without'} "
                            "instance-head codes; this student has "
                            f"{'one' if self.student.has_instance_head else 'none'}")
        try:
            vocab = Vocabulary([str(n) for n in arrays["label_names"]], torch.from_numpy(arrays["vocab_embeddings"]),
                               torch.from_numpy(arrays["vocab_row_class"]).long())
        except KeyError:
            raise UserError(f"{path} has no vocabulary") from None
        if vocab.dim != dim or len(vocab.row_class) != len(vocab.embeddings) or (
                len(vocab.row_class) and int(vocab.row_class.max()) >= len(vocab.names)):
            raise UserError(f"{path}: its vocabulary does not fit this student's {dim}-d features")
        if int(arrays["labels"].max(initial=-1)) >= len(vocab.names):
            raise UserError(f"{path} is a damaged map: labels index past its vocabulary")
        return codec, instance_codec, vocab

    def memory(self) -> dict[str, float]:
        """Bytes per voxel of the map and of its features (``VoxelMap.nbytes_per_voxel``, with the
        feature table's share: ``table``; its live rows alone: ``table_live``; the features' bytes
        without storage kept for growth or rows awaiting compaction: ``features_in_use``)."""
        with self.lock:
            out = self.map.nbytes_per_voxel()
            n = max(len(self.map), 1)
            table = self.table.nbytes() / n
            live = self.table.in_use(self.map.feature_row)
            row_bytes = sum(self.table.widths) * self.table.dtype.itemsize
            out.update(table=table, table_live=live * row_bytes / n, rows=float(self.table.n),
                       voxels_per_row=len(self.map) / max(live, 1),
                       features_in_use=ROW_INDEX_BYTES + live * row_bytes / n)  # without storage kept for growth
            out["map"] += table
            out["held"] += table
            out["features"] += table
            return out


def _encoded(fitted: tuple[FeatureCodec, torch.Tensor | None], features: torch.Tensor) -> np.ndarray:
    """Codes of ``features`` in the axes ``_fit_codec`` returned: from the coordinates it made when
    it made them (a second 512-d projection of every updated row was a large share of an update)."""
    codec, coordinates = fitted
    return codec.encode(features) if coordinates is None else codec.encode_coordinates(coordinates)


def _best(scores: np.ndarray, threshold: float, max_points: int) -> np.ndarray:
    """Indices of the scores at least ``threshold``, best first, at most ``max_points`` (0: all):
    a partial selection, so a capped answer never sorts the whole map. A capped one is chosen
    among the scores at least a cut taken from a sample (twice the answer's share of it): when
    at least ``max_points`` pass the cut, the best ``max_points`` are all among them (the exact
    same set of scores as a selection over every score: 20k of 1M in 2 ms, against 18 ms)."""
    n = len(scores)
    if max_points and n > max_points:
        pool = None
        if n > 8 * max_points:
            sample = scores[:: max(1, n // 16_384)]
            j = int(len(sample) * (1.0 - 2.0 * max_points / n))
            pool = np.flatnonzero(scores >= np.partition(sample, j)[j])
            if len(pool) < max_points:  # the sample misjudged the tail: select over every score
                pool = None
        if pool is None:
            top = np.argpartition(scores, n - max_points)[n - max_points:]
        else:
            top = pool[np.argpartition(scores[pool], len(pool) - max_points)[len(pool) - max_points:]]
        keep = top[scores[top] >= threshold]
    else:
        keep = np.flatnonzero(scores >= threshold)
    return keep[np.argsort(-scores[keep], kind="stable")]


@dataclass
class _Labelled:
    """A copy of the labelled voxels that instance grouping works on."""

    keys: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    previous: np.ndarray  # instance ids before this regrouping
    rows: np.ndarray  # each voxel's row in ``table``
    table: FeatureTable  # the rows these voxels use (the instance head's too, when the student has one)
    codec: FeatureCodec
    instance_codec: FeatureCodec | None

    def pooled(self, segments: np.ndarray, n: int, instance: bool = False) -> torch.Tensor:
        """(n, k) mean code coordinates of each segment (``lift`` them for features: linear, so the
        mean of the lifted features is the lifted mean; likewise the codes are pooled first)."""
        table, codec = (self.table.instance, self.instance_codec) if instance else (self.table.semantic, self.codec)
        return codec.coordinates(segment_mean(table, segments, n, rows=self.rows)[0])


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
    near = Neighbourhood.of(pts, 16)  # one k-NN query: normals, superpoint graph and adjacency
    sp = point_superpoints(pts, colors=cols.numpy().astype(np.uint8), neighbours=near)
    # merged on the cells' code coordinates in an isometric basis (the cosines of the 512-d
    # features from ~50 numbers a cell), small groups dropped by their map voxels before any mask
    proposals = merge_superpoints(pts, snap.codec.isometric(snap.pooled(cell_of, n)), sp, cfg.instance_threshold,
                                  min_points=1, adjacency_dist=2.0 * cfg.instance_cell, weights=weight,
                                  min_weight=cfg.instance_min_points, neighbours=near)
    if not proposals:
        return groups, []
    if snap.instance_codec is not None:  # FOLK: the mean instance-head feature of its cells
        inst = snap.pooled(cell_of, n, instance=True)
        naming = snap.instance_codec.lift(torch.stack([inst[torch.from_numpy(p.mask)].mean(0) for p in proposals]))
    else:
        naming = snap.codec.from_isometric(torch.stack([p.feature for p in proposals]))
    preds = name_instances(torch.nn.functional.normalize(naming, dim=1), proposals, vocab, stuff)
    preds.sort(key=lambda q: -weight[q.mask].sum())
    return instance_index(preds, n).astype(np.int64)[cell_of], [(q.label, q.score) for q in preds]
