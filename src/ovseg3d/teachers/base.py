"""The teacher interface and the registry of teachers by name.

A teacher maps a posed frame to dense features (C, h, w) in the CLIP text space, optionally
with a per-pixel confidence; multi-view fusion then puts them on points. A teacher may instead
provide per-point features for a whole scene (precomputed OpenScene files). Teachers are frozen:
they hold no trainable state and run under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ovseg3d.data.scannet import Frame, ScanNetScene
from ovseg3d.errors import UserError
from ovseg3d.labels import LabelSet
from ovseg3d.text.clip_model import ClipSpec


@dataclass
class FeatureMap:
    """What a teacher makes of one frame: dense features and, optionally, how much to trust each cell."""

    features: torch.Tensor  # (C, h, w)
    confidence: torch.Tensor | None = None  # (h, w), >= 0


@dataclass
class TeacherContext:
    """What building a teacher may need: the text encoder and the label set of the vocabulary."""

    clip: ClipSpec = field(default_factory=ClipSpec)
    labels: LabelSet | None = None
    templates: tuple[str, ...] = ("a {} in a scene",)
    options: dict = field(default_factory=dict)  # teacher-specific options (name=value from the CLI)


class Teacher:
    name: str = "teacher"

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def begin_scene(self, scene: ScanNetScene) -> None:
        """Called before the frames of a scene (teachers that need scene data override it)."""

    def scene_features(self, scene: ScanNetScene) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-point (features [M, C], mask [N]) for the whole scene, or None to fuse frames."""
        return None

    def __call__(self, frame: Frame) -> FeatureMap:
        raise NotImplementedError


TeacherFactory = Callable[[TeacherContext], Teacher]
_REGISTRY: dict[str, tuple[TeacherFactory, str]] = {}


def register(name: str, description: str):
    def wrap(factory: TeacherFactory) -> TeacherFactory:
        _REGISTRY[name] = (factory, description)
        return factory
    return wrap


def available_teachers() -> dict[str, str]:
    _load_builtin()
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def build_teacher(name: str, ctx: TeacherContext) -> Teacher:
    _load_builtin()
    if name not in _REGISTRY:
        raise UserError(f"unknown teacher {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    teacher = _REGISTRY[name][0](ctx)
    teacher.name = name
    return teacher


def _load_builtin() -> None:
    # Importing the modules registers their teachers.
    from ovseg3d.teachers import label_teacher, maskclip, precomputed, simulated  # noqa: F401
