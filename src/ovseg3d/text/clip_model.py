"""Loading open_clip models from a pretrained tag or a local weights file (or random weights).

No weights can be downloaded on the project's machines, so ``pretrained=None`` builds random
weights from a fixed seed (reproducible across processes, so every stage shares one text
space) and says loudly that it did. A real deployment names a tag (``openai``,
``laion2b_s34b_b88k``, ...) or a ``.pt`` / ``.safetensors`` file.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

import ovseg3d_torchvision_hook
from ovseg3d.errors import UserError

log = logging.getLogger(__name__)
ovseg3d_torchvision_hook.install()  # open_clip imports torchvision


DEFAULT_CLIP_MODEL = "ViT-B-16"


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP: an open_clip model name and its weights."""

    model: str = DEFAULT_CLIP_MODEL
    pretrained: str | None = None  # open_clip tag, or a local .pt/.bin/.safetensors file; None = random
    seed: int = 0  # initialisation seed when pretrained is None

    @property
    def is_random(self) -> bool:
        return self.pretrained is None

    def is_file(self) -> bool:
        return self.pretrained is not None and (Path(self.pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
                                                or "/" in self.pretrained)

    def identity(self) -> str:
        """What makes two specs give the same embeddings (for cache keys)."""
        if self.is_random:
            return f"{self.model}|random-seed{self.seed}"
        if self.is_file():
            p = Path(self.pretrained).resolve()
            st = p.stat()
            return f"{self.model}|file:{p}|{st.st_size}|{st.st_mtime_ns}"
        return f"{self.model}|tag:{self.pretrained}"


def checkpoint_text_encoder(ckpt: dict, model: str = DEFAULT_CLIP_MODEL, weights: str | None = None) -> ClipSpec:
    """The text encoder to label with a student: the one given (``model``/``weights``, e.g. from
    --clip-model/--clip-weights), else, while those are at their defaults, the one the checkpoint
    (a student checkpoint's dict) was trained against."""
    cfg = ckpt.get("config", {})
    if weights is None and model == DEFAULT_CLIP_MODEL and (cfg.get("clip_model") or cfg.get("clip_weights")):
        return ClipSpec(model=cfg.get("clip_model", model), pretrained=cfg.get("clip_weights") or None)
    return ClipSpec(model=model, pretrained=weights)


_warned: set[str] = set()


def warn_random(spec: ClipSpec) -> None:
    if spec.is_random and spec.model not in _warned:
        _warned.add(spec.model)
        print(f"ovseg3d: WARNING: CLIP {spec.model} has RANDOM weights (seed {spec.seed}): no pretrained "
              "weights were given, so text and image features carry no real-world meaning. Pass a "
              "pretrained tag or a local weights file for real use.", file=sys.stderr)


def _check(spec: ClipSpec) -> None:
    import open_clip

    if spec.model not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if spec.model.lower()[:4] in m.lower()][:8]
        raise UserError(f"unknown open_clip model {spec.model!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    if spec.is_file():
        path = Path(spec.pretrained)
        if not path.is_file():
            raise UserError(f"CLIP weights file {path} does not exist")
    elif spec.pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        if spec.pretrained not in tags:
            raise UserError(f"{spec.pretrained!r} is neither a weights file nor a pretrained tag of {spec.model} "
                            f"(tags: {', '.join(tags) or 'none'})")


@lru_cache(maxsize=4)
def load_clip(spec: ClipSpec) -> tuple[torch.nn.Module, object]:
    """(model in eval mode on CPU, tokenizer); cached per process."""
    import open_clip

    _check(spec)
    warn_random(spec)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = open_clip.create_model(spec.model, pretrained=spec.pretrained)
    except UserError:
        raise
    except Exception as exc:  # a corrupt or mismatched file surfaces as many error types
        raise UserError(f"cannot load CLIP {spec.model} weights {spec.pretrained!r}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, open_clip.get_tokenizer(spec.model)
