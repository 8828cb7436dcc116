"""Label teachers: mask + label (or caption) segmenters mapped into the CLIP text space.

SAS aligns a segmenter that outputs masks with labels (SEEM, Grounded-SAM, ...) with dense CLIP
teachers through text: every mask's label or caption is embedded by the shared text encoder and
painted onto its pixels. Any segmenter fits behind ``LabelTeacher``; ``label_files`` reads
segmentations saved by a segmenter run elsewhere (per frame: a uint16 PNG of segment ids, 0 =
none, and a JSON list of {"id", "label", "score", optional "caption": true}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ovseg3d.data.scannet import Frame, ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.teachers.base import FeatureMap, Teacher, TeacherContext, register
from ovseg3d.text.clip_model import ClipSpec
from ovseg3d.text.vocabulary import DEFAULT_TEMPLATES, embed_prompts


@dataclass
class Segment:
    mask: np.ndarray  # (h, w) bool
    label: str  # a class name, or a caption when ``caption`` is set
    score: float = 1.0  # the segmenter's confidence, used as the fusion weight
    caption: bool = False  # embed the text as is, without prompt templates


Segmenter = Callable[[Frame], list[Segment]]


class LabelTeacher(Teacher):
    def __init__(self, segmenter: Segmenter, clip: ClipSpec, templates=DEFAULT_TEMPLATES,
                 output_size: tuple[int, int] | None = None):
        self.segmenter = segmenter
        self.clip = clip
        self.templates = tuple(templates)
        self.output_size = output_size
        self._cache: dict[tuple[str, bool], torch.Tensor] = {}
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["object"])[0].shape[0])
        return self._dim

    def embed(self, labels: list[str], caption: bool = False) -> list[torch.Tensor]:
        missing = sorted({t for t in labels if (t, caption) not in self._cache})
        if missing:
            emb = embed_prompts(missing, self.clip, ("{}",) if caption else self.templates)
            self._cache.update({(t, caption): e for t, e in zip(missing, emb)})
        return [self._cache[(t, caption)] for t in labels]

    def __call__(self, frame: Frame) -> FeatureMap:
        segments = self.segmenter(frame)
        if segments:
            h, w = segments[0].mask.shape
        else:
            w, h = self.output_size or frame.image_size
        feats = torch.zeros(self.dim, h, w)
        conf = torch.zeros(h, w)
        for seg in sorted(segments, key=lambda s: s.score):  # confident masks are painted last
            if seg.mask.shape != (h, w):
                raise UserError(f"segment masks of one frame differ in size: {seg.mask.shape} vs {(h, w)}")
            m = torch.from_numpy(np.asarray(seg.mask, dtype=bool))
            feats[:, m] = self.embed([seg.label], seg.caption)[0][:, None]
            conf[m] = float(seg.score)
        return FeatureMap(feats, conf)


class LabelFileSegmenter:
    """Segments saved per frame under ``<scene>/<folder>/<frame>.png`` + ``.json``."""

    def __init__(self, folder: str = "teacher_labels"):
        self.folder = folder
        self.scene: ScanNetScene | None = None

    def begin_scene(self, scene: ScanNetScene) -> None:
        if not (scene.path / self.folder).is_dir():
            raise UserError(f"scene {scene.name} has no {self.folder}/ folder of saved segmentations")
        self.scene = scene

    def __call__(self, frame: Frame) -> list[Segment]:
        base = self.scene.path / self.folder / str(frame.frame_id)
        try:
            with Image.open(base.with_suffix(".png")) as im:
                ids = np.asarray(im).astype(np.int64)
            entries = json.loads(base.with_suffix(".json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read saved segmentation {base}.png/.json: {exc}") from None
        return [Segment(mask=ids == int(e["id"]), label=str(e["label"]), score=float(e.get("score", 1.0)),
                        caption=bool(e.get("caption", False))) for e in entries if (ids == int(e["id"])).any()]


class _FileLabelTeacher(LabelTeacher):
    def begin_scene(self, scene: ScanNetScene) -> None:
        self.segmenter.begin_scene(scene)


@register("label_files", "masks + labels/captions saved by any segmenter, embedded through text; option: folder")
def _build(ctx: TeacherContext) -> Teacher:
    return _FileLabelTeacher(LabelFileSegmenter(ctx.options.get("folder", "teacher_labels")), ctx.clip, ctx.templates)
