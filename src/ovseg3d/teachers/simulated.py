"""The simulated teacher: a test instrument standing in for a 2D vision-language segmenter.

No pretrained weights can be had on the project's machines, so this teacher looks at the
scene's labelled mesh through each camera (ray casting at its coarse patch resolution) and
fails the way real teachers do: per view it misidentifies whole objects following a per-class
confusion table, lets labels bleed over object boundaries, sees only one label per patch, and
adds feature noise. Errors drawn per view mostly average away when views are fused, which real
teachers' do not: ``simulated_hard`` (``consistent``) misreads an object the same way from every
view (a chair read as a sofa from all sides), bleeds wider, and never labels some objects at all
(``unseen``), so fusion cannot remove its mistakes and only a student that generalises across
objects can. Its labels then go through the same label-teacher path as a real mask +
label segmenter: they are embedded by the configured CLIP text encoder. It needs ground-truth
labels, so it runs on labelled scenes only (the synthetic world, or annotated real scans).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ovseg3d.data.scannet import Frame, ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.geometry.raycast import MeshRaycaster, vertex_index_grid
from ovseg3d.labels import IGNORE, LabelSet
from ovseg3d.teachers.base import FeatureMap, Teacher, TeacherContext, register
from ovseg3d.teachers.label_teacher import LabelTeacher, Segment

Confusion = dict[str, dict[str, float]]

# Mistakes real open-vocabulary segmenters make on indoor scenes (similar shape or context).
TYPICAL_CONFUSIONS: Confusion = {
    "chair": {"sofa": 0.1}, "sofa": {"chair": 0.1, "bed": 0.05}, "table": {"desk": 0.15},
    "desk": {"table": 0.2}, "cabinet": {"counter": 0.1, "bookshelf": 0.05}, "bookshelf": {"cabinet": 0.1},
    "picture": {"window": 0.1}, "window": {"picture": 0.05}, "door": {"wall": 0.1},
    "curtain": {"shower curtain": 0.1}, "shower curtain": {"curtain": 0.2}, "sink": {"toilet": 0.05},
    "refrigerator": {"cabinet": 0.1}, "counter": {"table": 0.1}, "otherfurniture": {"table": 0.15, "chair": 0.1},
}
# Two teachers that fail on different classes (the setting of SAS's multi-teacher fusion).
CONFUSIONS_A: Confusion = {
    "chair": {"sofa": 0.6}, "picture": {"wall": 0.6}, "desk": {"table": 0.6}, "cabinet": {"bookshelf": 0.6},
    "curtain": {"window": 0.6},
}
CONFUSIONS_B: Confusion = {
    "door": {"wall": 0.6}, "toilet": {"sink": 0.6}, "bed": {"sofa": 0.6}, "refrigerator": {"cabinet": 0.6},
    "counter": {"table": 0.6},
}


@dataclass(frozen=True)
class SimulatedTeacherConfig:
    patch: int = 16  # one label per patch x patch pixels, like a ViT's patch grid
    confusion: Confusion = field(default_factory=lambda: dict(TYPICAL_CONFUSIONS))
    bleed_cells: int = 1  # how far labels bleed over object boundaries, in patches
    bleed_prob: float = 0.4  # chance that a boundary patch takes its neighbour's label
    noise: float = 0.3  # norm of the Gaussian noise vector added to each unit feature (relative to 1)
    seed: int = 0
    consistent: bool = False  # draw each object's misreading once per object, not once per view
    unseen: float = 0.0  # chance that an object is never labelled (drawn once per object)


def parse_confusion(text: str) -> Confusion:
    """"chair>sofa:0.6,picture>wall:0.3" -> {"chair": {"sofa": 0.6}, "picture": {"wall": 0.3}}."""
    out: Confusion = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            pair, prob = item.rsplit(":", 1)
            src, dst = pair.split(">")
            out.setdefault(src.strip(), {})[dst.strip()] = float(prob)
        except ValueError:
            raise UserError(f"bad confusion entry {item!r}; expected 'class>other:probability'") from None
    return out


class SimulatedSegmenter:
    """Ground truth seen through a camera, corrupted per view."""

    def __init__(self, labels: LabelSet, cfg: SimulatedTeacherConfig):
        self.labels, self.cfg = labels, cfg
        for src, row in cfg.confusion.items():
            if sum(row.values()) > 1 + 1e-9 or any(p < 0 for p in row.values()):
                raise UserError(f"confusion row of {src!r} has probabilities outside [0, 1] or summing over 1")
        if not 0 <= cfg.unseen <= 1:
            raise UserError(f"teacher option unseen is a probability in [0, 1], got {cfg.unseen}")
        self.scene: ScanNetScene | None = None

    def begin_scene(self, scene: ScanNetScene) -> None:
        mesh = scene.source_mesh() or scene  # reconstructed scenes keep their generating mesh
        if mesh.faces is None:
            raise UserError(f"the simulated teacher needs a mesh with faces; {scene.name} has none")
        self.scene = scene
        self.caster = MeshRaycaster(mesh.points, mesh.faces)
        self.semantic = mesh.semantic(self.labels)
        try:
            self.instance, raw = mesh.instance_ids, mesh.instance_raw_labels
        except UserError:  # no instance annotation: each class is one object
            self.instance, raw = self.semantic + 1, [""]
        # words for points outside the label set: the annotation's raw category, if any
        self.other_words = {i: w for i, w in enumerate(raw) if w}
        self.scene_key = zlib.crc32(scene.name.encode())

    def _cell_labels(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = frame.image_size
        grid = (max(1, w // self.cfg.patch), max(1, h // self.cfg.patch))
        vi = vertex_index_grid(self.caster, frame.pose, frame.K, (w, h), grid)
        hit = vi >= 0
        sem = np.where(hit, self.semantic[np.maximum(vi, 0)], IGNORE)
        inst = np.where(hit, self.instance[np.maximum(vi, 0)], -1)
        return sem, inst, hit

    def __call__(self, frame: Frame) -> list[Segment]:
        if self.scene is None:
            raise UserError("the simulated teacher was not given its scene (begin_scene)")
        rng = np.random.default_rng([self.cfg.seed, self.scene_key, frame.frame_id])
        sem, inst, hit = self._cell_labels(frame)
        # a class is named by its (first) prompt name, as the vocabulary embeds it
        names = np.array([*(p[0] for p in self.labels.prompts), ""], dtype=object)
        words = np.where(sem >= 0, names[sem], "")
        for i in np.unique(inst[hit & (sem == IGNORE)]):
            words[(inst == i) & (sem == IGNORE)] = self.other_words.get(int(i), "")
        # whole objects misidentified in this view (consistent: the same way in every view) or not labelled
        for i in np.unique(inst[hit & (sem >= 0)]):
            obj_rng = np.random.default_rng([self.cfg.seed, self.scene_key, int(i), 1]) if self.cfg.consistent else rng
            if self.cfg.unseen > 0 and obj_rng.random() < self.cfg.unseen:
                words[inst == i] = ""
                continue
            cls = self.labels.names[int(np.bincount(sem[inst == i][sem[inst == i] >= 0]).argmax())]
            row = {k: v for k, v in self.cfg.confusion.get(cls, {}).items() if k in self.labels.names}
            if row and obj_rng.random() < sum(row.values()):
                others, probs = zip(*row.items())
                other = obj_rng.choice(others, p=np.asarray(probs) / sum(probs))
                words[inst == i] = self.labels.prompts[self.labels.names.index(other)][0]
        words = self._bleed(words, rng)
        return [Segment(mask=words == w, label=str(w)) for w in np.unique(words) if w]

    def _bleed(self, words: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for _ in range(self.cfg.bleed_cells):
            out = words.copy()
            for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                nb = np.roll(words, (dy, dx), axis=(0, 1))
                valid = np.ones_like(words, dtype=bool)
                if dy:
                    valid[0 if dy > 0 else -1, :] = False
                if dx:
                    valid[:, 0 if dx > 0 else -1] = False
                take = valid & (nb != words) & (nb != "") & (rng.random(words.shape) < self.cfg.bleed_prob / 4)
                out[take] = nb[take]
            words = out
        return words


class SimulatedTeacher(LabelTeacher):
    def __init__(self, labels: LabelSet, ctx: TeacherContext, cfg: SimulatedTeacherConfig):
        super().__init__(SimulatedSegmenter(labels, cfg), ctx.clip, ctx.templates)
        self.cfg = cfg

    def begin_scene(self, scene: ScanNetScene) -> None:
        self.segmenter.begin_scene(scene)

    def __call__(self, frame: Frame) -> FeatureMap:
        fm = super().__call__(frame)
        if self.cfg.noise > 0:
            g = torch.Generator().manual_seed(int(self.segmenter.scene_key) * 100003 + frame.frame_id + self.cfg.seed)
            seen = fm.confidence > 0
            d = fm.features.shape[0]  # per-dimension std noise / sqrt(D): the noise vector's norm is ~noise
            fm.features[:, seen] += self.cfg.noise / d**0.5 * torch.randn(d, int(seen.sum()), generator=g)
        return fm


def _simulated(confusion: Confusion, consistent: bool = False, bleed_cells: int = 1, bleed_prob: float = 0.4,
               unseen: float = 0.0):
    def build(ctx: TeacherContext) -> Teacher:
        if ctx.labels is None:
            raise UserError("the simulated teacher needs a label set (--labels)")
        o = ctx.options
        cfg = SimulatedTeacherConfig(
            patch=_option(o, "patch", 16, int),
            confusion=parse_confusion(o["confusion"]) if "confusion" in o else dict(confusion),
            bleed_cells=_option(o, "bleed_cells", bleed_cells, int),
            bleed_prob=_option(o, "bleed_prob", bleed_prob, float),
            noise=_option(o, "noise", 0.3, float), seed=_option(o, "seed", 0, int),
            consistent=_option(o, "consistent", consistent, bool), unseen=_option(o, "unseen", unseen, float))
        return SimulatedTeacher(ctx.labels, ctx, cfg)
    return build


def _option(options: dict, key: str, default, kind: type):
    """A teacher option (``--teacher-option KEY=VALUE`` text, or the preset's default) in its type, or one
    clear line naming the option."""
    value = options.get(key, default)
    try:
        if kind is not bool:
            return kind(value)
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(text)
        return text in ("true", "1", "yes")
    except (TypeError, ValueError):
        what = "true or false" if kind is bool else f"a{'n' if kind is int else ''} {kind.__name__}"
        raise UserError(f"teacher option {key} must be {what}, got {value!r}") from None


_OPTS = "options: patch, confusion ('a>b:p,...'), bleed_cells, bleed_prob, noise, seed, consistent, unseen"
register("simulated", f"TEST INSTRUMENT: ground truth corrupted like a real segmenter; {_OPTS}")(
    _simulated(TYPICAL_CONFUSIONS))
_A = "TEST INSTRUMENT: simulated teacher failing on chair, picture, desk, cabinet, curtain"
_B = "TEST INSTRUMENT: simulated teacher failing on door, toilet, bed, refrigerator, counter"
register("simulated_a", f"{_A}; {_OPTS}")(_simulated(CONFUSIONS_A))
register("simulated_b", f"{_B}; {_OPTS}")(_simulated(CONFUSIONS_B))
register("simulated_hard", "TEST INSTRUMENT: simulated teacher whose mistakes do not average out over views: "
         "an object misread is misread from every side (confusions at twice the typical rate), labels bleed two "
         f"patches over borders, 10 % of objects are never labelled; {_OPTS}")(
    _simulated({c: {o: 2 * p for o, p in row.items()} for c, row in TYPICAL_CONFUSIONS.items()}, consistent=True,
               bleed_cells=2, bleed_prob=0.6, unseen=0.1))
