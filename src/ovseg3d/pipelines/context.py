"""A ready pipeline context: the student, its text encoder, the label set and the vocabulary, with
their dimensions checked once. The node, `infer`, `query` and the benchmarks all start from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ovseg3d.errors import UserError
from ovseg3d.labels import LabelSet, load_label_set
from ovseg3d.student.checkpoint import load_student
from ovseg3d.student.model import Student, default_device
from ovseg3d.text.clip_model import DEFAULT_CLIP_MODEL, ClipSpec, checkpoint_text_encoder
from ovseg3d.text.vocabulary import DEFAULT_TEMPLATES, Vocabulary, build_vocabulary, embed_prompts, load_vocabulary


@dataclass
class PipelineContext:
    vocab: Vocabulary
    labels: LabelSet | None  # None: a vocabulary file alone, no label set asked for
    device: torch.device
    student: Student | None = None
    checkpoint: dict = field(default_factory=dict)  # the checkpoint's contents (config, label set, ...)
    checkpoint_path: Path | None = None
    text_encoder: ClipSpec | None = None  # None: a precomputed vocabulary file and no encoder
    templates: tuple[str, ...] = DEFAULT_TEMPLATES

    @property
    def names(self) -> list[str]:  # the vocabulary's classes: what labels index
        return list(self.vocab.names)

    def embed_text(self, text: str) -> torch.Tensor:
        """(D,) unit embedding of a free-text query, in the student's feature space."""
        if self.text_encoder is None:
            raise UserError("free-text queries need a text encoder (none is configured)")
        return embed_prompts([text], self.text_encoder, self.templates)[0]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA where it works, else the CPU; otherwise the named torch device."""
    if name == "auto":
        return default_device()
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"unknown device {name!r} ({exc})") from None


def load_context(checkpoint: Path | None, *, device: str = "auto", label_set: str | None = None,
                 vocabulary_file: Path | None = None, clip_model: str | None = DEFAULT_CLIP_MODEL,
                 clip_weights: str | None = None, templates: tuple[str, ...] = DEFAULT_TEMPLATES,
                 clip_from_checkpoint: bool = True, cache_vocabulary: bool = True,
                 load_labels: bool = True) -> PipelineContext:
    """Load the student (when ``checkpoint`` is given), choose the text encoder, load the label set
    (``label_set``, else the checkpoint's, else scannet20) and build the vocabulary (from
    ``vocabulary_file`` when given), refusing a vocabulary whose dimension the student cannot match.

    ``clip_model`` empty means no text encoder; ``clip_from_checkpoint`` lets a checkpoint trained
    against another encoder choose it while ``clip_model``/``clip_weights`` are at their defaults.
    With a vocabulary file the label set only colours pictures: ``load_labels=False`` skips it (a
    robot carrying only a vocabulary file may not have the checkpoint's label set).
    """
    dev = resolve_device(device)
    student, ckpt = load_student(Path(checkpoint).expanduser(), dev) if checkpoint is not None else (None, {})
    if not clip_model:
        encoder = None
    elif clip_from_checkpoint:
        encoder = checkpoint_text_encoder(ckpt, clip_model, clip_weights)
    else:
        encoder = ClipSpec(model=clip_model, pretrained=clip_weights or None)
    labels = (load_label_set(label_set or ckpt.get("label_set", "scannet20"))
              if load_labels or vocabulary_file is None else None)
    if vocabulary_file is not None:
        vocab = load_vocabulary(Path(vocabulary_file).expanduser())
    elif encoder is None:
        raise UserError("no text encoder (clip.model is empty) and no vocabulary_file")
    else:
        vocab = build_vocabulary(labels, encoder, templates, cache=cache_vocabulary)
    if student is not None and vocab.dim != student.cfg.feature_dim:
        raise UserError(f"the vocabulary is {vocab.dim}-d but the student predicts "
                        f"{student.cfg.feature_dim}-d features")
    return PipelineContext(vocab=vocab, labels=labels, device=dev, student=student, checkpoint=ckpt,
                           checkpoint_path=checkpoint, text_encoder=encoder, templates=tuple(templates))
