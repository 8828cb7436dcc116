"""Student checkpoints: weights, the resolved config, label set, feature dimension and format version.

Saved as a plain dict (tensors, numbers, strings, lists and dicts only) so that loading works
with ``torch.load(weights_only=True)``: a checkpoint cannot run code on the machine that loads it.
Written atomically, so a crash never leaves half a checkpoint under the final name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ovseg3d.errors import UserError
from ovseg3d.serialization import atomic_write, torch_load
from ovseg3d.student.model import Student, StudentConfig, default_device

FORMAT = "ovseg3d-student"
VERSION = 1


def save_checkpoint(path: Path, student: Student, config: dict, label_set: str, **extra) -> Path:
    data = {"format": FORMAT, "version": VERSION, "student": student.config_dict(), "config": config,
            "label_set": label_set, "feature_dim": student.cfg.feature_dim,
            "state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()}, **extra}
    with atomic_write(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def read_checkpoint(path: Path) -> dict:
    data = torch_load(path, "ovseg3d student checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not an ovseg3d student checkpoint (no '{FORMAT}' format tag)")
    if int(data.get("version", -1)) > VERSION:
        raise UserError(f"{path} has checkpoint format version {data['version']}; this ovseg3d reads up to {VERSION}")
    for key in ("student", "state_dict", "feature_dim", "label_set"):
        if key not in data:
            raise UserError(f"{path} is an incomplete checkpoint (no {key!r})")
    return data


def load_student(path: Path, device: torch.device | str | None = None) -> tuple[Student, dict]:
    """(student in eval mode on ``device``, the checkpoint dict)."""
    data = read_checkpoint(path)
    try:
        cfg = StudentConfig(**data["student"])
    except TypeError as exc:
        raise UserError(f"{path}: student config does not match this ovseg3d ({exc})") from None
    student = Student(cfg)
    try:
        student.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the {cfg.arch} student ({str(exc).splitlines()[0]})") from None
    student.to(torch.device(device) if device is not None else default_device()).eval()
    return student, data


# student options added after maps were first saved: left out of the digest at these (their defaults), so a
# map saved before an option existed still loads with the same student
LATER_OPTIONS = {"stem_kernel": 5}


def student_fingerprint(student: Student) -> str:
    """A short digest of the student's configuration and weights: a saved map records the one that
    made its features, and a node running another student refuses to load it."""
    import hashlib
    import json

    config = {k: v for k, v in student.config_dict().items() if LATER_OPTIONS.get(k, object()) != v}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in sorted(student.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
