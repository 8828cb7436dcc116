"""Vocabularies: class names and their CLIP text embeddings, built once and cached on disk.

One function, ``build_vocabulary``, turns words into embeddings for every part of the project
(extraction, training, evaluation, the node, queries): each class's prompt names are put into
each template ("a {} in a scene" by default), encoded, averaged over templates and
L2-normalised (open_clip's zero-shot classifier recipe). A class with several prompt names
(nuScenes' finer names) keeps one row per name and scores as the best of them, which is how
OpenScene maps the finer names back to the 16 classes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ovseg3d.errors import UserError
from ovseg3d.labels import LabelSet
from ovseg3d.serialization import atomic_write, torch_load
from ovseg3d.text.clip_model import ClipSpec, load_clip

DEFAULT_TEMPLATES = ("a {} in a scene",)
VOCAB_FORMAT = "ovseg3d-vocabulary-1"


@dataclass
class Vocabulary:
    names: list[str]  # K class names
    embeddings: torch.Tensor  # (R, D) unit rows, R >= K
    row_class: torch.Tensor  # (R,) class index of each row
    source: str = ""  # which encoder and templates made it

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def class_embeddings(self) -> torch.Tensor:
        """(K, D): the mean of each class's rows, re-normalised (one vector per class)."""
        K = len(self.names)
        out = torch.zeros(K, self.dim).index_add_(0, self.row_class, self.embeddings)
        return torch.nn.functional.normalize(out, dim=1)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, K) cosine similarity of each feature to each class (best row of the class)."""
        f = torch.nn.functional.normalize(features.float(), dim=-1)
        sim = f @ self.embeddings.T.float()
        if len(self.row_class) == len(self.names):
            return sim
        out = torch.full((sim.shape[0], len(self.names)), -2.0, dtype=sim.dtype)
        return out.scatter_reduce(1, self.row_class.expand(sim.shape[0], -1), sim, reduce="amax")

    def classify(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(label index, score) per feature."""
        s = self.scores(features)
        score, label = s.max(dim=1)
        return label, score


def default_cache_dir() -> Path:
    base = os.environ.get("OVSEG3D_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"),
                                                           "ovseg3d")
    return Path(base) / "text"


def _validate_templates(templates) -> tuple[str, ...]:
    templates = tuple(templates)
    if not templates:
        raise UserError("no prompt templates given")
    for t in templates:
        if t.count("{}") != 1:
            raise UserError(f"prompt template {t!r} must contain exactly one '{{}}'")
    return templates


def fill_template(template: str, prompt: str) -> str:
    """``template`` with its one '{}' replaced by ``prompt``. Not ``str.format``: templates and
    prompts come from users (a ROS service), and format fields such as ``{0.__class__}`` or a lone
    ``{`` would be evaluated or raise; here every other character is kept as written."""
    head, tail = template.split("{}", 1)
    return head + prompt + tail


def encode_texts(texts: list[str], spec: ClipSpec, batch: int = 64) -> torch.Tensor:
    """(len(texts), D) L2-normalised CLIP text embeddings."""
    model, tokenizer = load_clip(spec)
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            out.append(model.encode_text(tokenizer(texts[i:i + batch]), normalize=True).float())
    return torch.cat(out)


def embed_prompts(prompts: list[str], spec: ClipSpec, templates=DEFAULT_TEMPLATES) -> torch.Tensor:
    """(len(prompts), D): each prompt in every template, averaged over templates, L2-normalised.

    A template of just "{}" embeds the prompt as it is (captions).
    """
    templates = _validate_templates(templates)
    emb = encode_texts([fill_template(t, p) for p in prompts for t in templates], spec)
    return torch.nn.functional.normalize(emb.reshape(len(prompts), len(templates), -1).mean(1), dim=1)


def build_vocabulary(classes: LabelSet | list[str], spec: ClipSpec | None = None,
                     templates=DEFAULT_TEMPLATES, cache_dir: Path | None = None, cache: bool = True) -> Vocabulary:
    """Text embeddings of a label set (or a list of words), cached on disk by model, weights and
    prompts (``cache=False``: neither read nor written)."""
    spec = spec or ClipSpec()
    if isinstance(classes, LabelSet):
        names, prompts = list(classes.names), [list(p) for p in classes.prompts]
    else:
        names = [str(c).strip() for c in classes]
        prompts = [[n] for n in names]
    if not names or any(not n for n in names):
        raise UserError("the vocabulary is empty or has an empty label")
    templates = _validate_templates(templates)
    rows = [(k, p) for k, ps in enumerate(prompts) for p in ps]
    key = hashlib.sha256(json.dumps([spec.identity(), templates, names, prompts]).encode()).hexdigest()[:24]
    path = (cache_dir or default_cache_dir()) / f"{key}.pt"
    source = f"{spec.identity()} templates={list(templates)}"
    if cache and path.exists():
        try:
            return load_vocabulary(path)
        except UserError:
            pass  # a damaged cache entry is rebuilt
    vocab = Vocabulary(names=names, embeddings=embed_prompts([p for _, p in rows], spec, templates),
                       row_class=torch.tensor([k for k, _ in rows]), source=source)
    if cache:
        with contextlib.suppress(OSError):  # a read-only cache only costs speed
            save_vocabulary(path, vocab)
    return vocab


def save_vocabulary(path: Path, vocab: Vocabulary) -> None:
    """A precomputed embedding file (names + vectors) for robots that carry no text encoder."""
    with atomic_write(path) as tmp:
        torch.save({"format": VOCAB_FORMAT, "names": list(vocab.names), "embeddings": vocab.embeddings.float(),
                    "row_class": vocab.row_class.long(), "source": vocab.source}, tmp)


def load_vocabulary(path: Path) -> Vocabulary:
    data = torch_load(path, "vocabulary embedding file")
    if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
        raise UserError(f"{path} is not an ovseg3d vocabulary file (format {VOCAB_FORMAT})")
    emb, row_class, names = data["embeddings"], data["row_class"], list(data["names"])
    if emb.ndim != 2 or len(row_class) != len(emb) or (len(names) and int(row_class.max()) >= len(names)):
        raise UserError(f"{path}: inconsistent vocabulary file")
    if not names:
        raise UserError(f"{path}: the vocabulary is empty")
    return Vocabulary(names=names, embeddings=torch.nn.functional.normalize(emb.float(), dim=1),
                      row_class=row_class.long(), source=str(data.get("source", "")))
