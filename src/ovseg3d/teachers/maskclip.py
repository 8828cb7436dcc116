"""MaskCLIP-style dense features from an open_clip ViT (Zhou et al., ECCV 2022).

The last transformer block's query-key attention mixes every patch with the whole image, which
is what makes CLIP's image embedding global. MaskCLIP keeps the value path alone: for each patch
token x of the last block, ``out_proj(W_v ln_1(x) + b_v)``, then the model's own ``ln_post`` and
``proj`` map it into the joint text-image space. Position embeddings are interpolated
(bicubic) from the training grid to the image's patch grid, so any image size works.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ovseg3d.data.scannet import Frame
from ovseg3d.errors import UserError
from ovseg3d.teachers.base import FeatureMap, Teacher, TeacherContext, register
from ovseg3d.text.clip_model import ClipSpec, load_clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def interpolate_positional_embedding(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1 + gh*gw, C) position embeddings for a (gh, gw) patch grid from a square training grid."""
    cls, patches = pos[:1], pos[1:]
    n = round(math.sqrt(patches.shape[0]))
    if n * n != patches.shape[0]:
        raise UserError(f"position embeddings of {patches.shape[0]} patches are not a square grid")
    if (n, n) == tuple(grid):
        return pos
    p = patches.reshape(1, n, n, -1).permute(0, 3, 1, 2)
    p = F.interpolate(p, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls, p.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def vit_tokens_before_last_block(visual: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, 1 + gh*gw, width) input of the last block, with interpolated position embeddings."""
    x = visual.conv1(images)
    B, C, gh, gw = x.shape
    x = x.reshape(B, C, gh * gw).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(B, 1, -1)
    x = torch.cat([cls, x], dim=1) + interpolate_positional_embedding(visual.positional_embedding, (gh, gw)).to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x, (gh, gw)


def value_path(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's attention with query-key mixing removed: out_proj(V(ln_1(x)))."""
    attn = block.attn
    width = x.shape[-1]
    w_v = attn.in_proj_weight[2 * width:]
    b_v = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    return attn.out_proj(F.linear(block.ln_1(x), w_v, b_v))


def maskclip_dense(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, D, gh, gw) dense CLIP features of normalised images (H, W multiples of the patch size)."""
    visual = model.visual
    if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
        raise UserError("maskclip needs an open_clip ViT (a VisionTransformer visual tower)")
    x, (gh, gw) = vit_tokens_before_last_block(visual, images)
    v = value_path(visual.transformer.resblocks[-1], x)[:, 1:]
    v = visual.ln_post(v)
    if visual.proj is not None:
        v = v @ visual.proj
    return v.reshape(v.shape[0], gh, gw, -1).permute(0, 3, 1, 2)


class MaskClipTeacher(Teacher):
    def __init__(self, spec: ClipSpec, image_size: tuple[int, int] = (320, 240)):
        self.model, _ = load_clip(spec)
        patch = self.model.visual.conv1.kernel_size
        w, h = image_size
        # the input is resized to a multiple of the patch size
        self.input_size = (max(patch[1], round(w / patch[1]) * patch[1]),
                           max(patch[0], round(h / patch[0]) * patch[0]))
        proj = self.model.visual.proj
        self._dim = int(proj.shape[1]) if proj is not None else int(self.model.visual.conv1.out_channels)

    @property
    def dim(self) -> int:
        return self._dim

    def preprocess(self, color: np.ndarray) -> torch.Tensor:
        img = torch.from_numpy(np.array(color, dtype=np.float32)).permute(2, 0, 1).div(255)[None]
        w, h = self.input_size
        img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (img - mean) / std

    def __call__(self, frame: Frame) -> FeatureMap:
        with torch.no_grad():
            feats = maskclip_dense(self.model, self.preprocess(frame.color))[0]
        return FeatureMap(F.normalize(feats, dim=0))


@register("maskclip", "dense open_clip ViT features (MaskCLIP value path); options: image_w, image_h")
def _build(ctx: TeacherContext) -> Teacher:
    size = (int(ctx.options.get("image_w", 320)), int(ctx.options.get("image_h", 240)))
    return MaskClipTeacher(ctx.clip, size)
