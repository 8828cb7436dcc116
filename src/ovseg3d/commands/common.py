"""Arguments shared by several commands: text encoder, label set, teachers, sharding."""

from __future__ import annotations

import argparse
import os

from ovseg3d.errors import UserError


def add_clip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("text encoder (open_clip)")
    g.add_argument("--clip-model", default="ViT-B-16", help="open_clip model name (default ViT-B-16)")
    g.add_argument("--clip-weights", default=None,
                   help="pretrained tag (e.g. openai) or local .pt/.safetensors file; default: random "
                        "weights (seed 0), announced loudly")
    g.add_argument("--template", action="append", dest="templates",
                   help="prompt template with one {} (repeatable; default 'a {} in a scene')")


def clip_spec(args: argparse.Namespace):
    from ovseg3d.text.clip_model import ClipSpec

    return ClipSpec(model=args.clip_model, pretrained=args.clip_weights)


def templates(args: argparse.Namespace) -> tuple[str, ...]:
    from ovseg3d.text.vocabulary import DEFAULT_TEMPLATES

    return tuple(args.templates) if args.templates else DEFAULT_TEMPLATES


def add_teacher_args(p: argparse.ArgumentParser, multiple: bool = True) -> None:
    p.add_argument("--teacher", action="append" if multiple else "store", required=True,
                   help="teacher name" + (" (repeat for several)" if multiple else "")
                   + "; `ovseg3d teachers` lists them")
    p.add_argument("--teacher-option", action="append", default=[], metavar="[TEACHER:]KEY=VALUE",
                   help="teacher option, e.g. patch=16 or simulated_a:noise=0.1 (repeatable)")
    p.add_argument("--labels", default="scannet20", help="label set of the vocabulary (default scannet20)")


def teacher_options(args: argparse.Namespace, name: str) -> dict[str, str]:
    out = {}
    for item in args.teacher_option:
        target, _, kv = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("", "", item)
        if "=" not in kv:
            raise UserError(f"bad --teacher-option {item!r}; expected [TEACHER:]KEY=VALUE")
        if target in ("", name):
            key, value = kv.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def build_teachers(args: argparse.Namespace, names: list[str]):
    """(label set, text encoder, teachers) from the command line's teacher arguments."""
    from ovseg3d.pipelines.extract import build_teachers as build

    spec = clip_spec(args)
    labels, teachers = build(names, args.labels, spec, templates(args), {n: teacher_options(args, n) for n in names})
    return labels, spec, teachers


def add_shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process every N-th scene starting at I (0-based); under torchrun, RANK/WORLD_SIZE "
                        "are used when --shard is not given")


def shard(args: argparse.Namespace) -> tuple[int, int]:
    if args.shard:
        try:
            i, n = (int(x) for x in args.shard.split("/"))
        except ValueError:
            raise UserError(f"--shard must look like I/N, got {args.shard!r}") from None
    else:
        i, n = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= i < n:
        raise UserError(f"shard {i}/{n} is out of range (0 <= I < N)")
    return i, n
