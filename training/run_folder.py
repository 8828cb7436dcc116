"""A training run's folder and the device it trains on, for every task (distill, affinity).

``<out>/<name>`` holds ``config.yaml`` (the resolved config), ``log.csv`` (one row per epoch, fixed
columns), ``last.pt`` (every epoch, with the training state an exact resume needs) and ``best.pt``.
Under torchrun every process reads ``last.pt`` to resume, but only rank 0 writes, so processes
never race on a file. Device choice lives here too: it decides which process is which GPU.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from ovseg3d.errors import UserError
from ovseg3d.student.checkpoint import read_checkpoint, save_checkpoint
from ovseg3d.student.model import Student, default_device

from .config import TrainConfig, save_config, to_dict

# sections that change what an epoch does: a run folder resumes only with the same values
RESUME_SECTIONS = ("task", "student", "data", "augment", "loss", "optim", "affinity")
# where the data lives may change between machines; which scenes and how they are sampled may not
RESUME_IGNORED = ("data.scenes", "data.targets")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(cfg: TrainConfig) -> torch.device:
    """The torch device of this process: under torchrun each process on a GPU machine takes the GPU
    of its LOCAL_RANK (two processes on one GPU would make NCCL fail mid-run with a duplicate-GPU
    error, so that is refused up front)."""
    device = default_device() if cfg.device == "auto" else torch.device(cfg.device)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise UserError(f"device={cfg.device} but torch {torch.__version__} sees no GPU (a CPU build, or no driver): "
                        "set device=auto or device=cpu")
    gpus = torch.cuda.device_count()
    if device.index is None and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        if local >= gpus:
            raise UserError(f"device: process {local} on this machine has no GPU of its own ({gpus} visible); "
                            f"start at most {gpus} process(es) per machine, or set device=cpu")
        device = torch.device("cuda", local)
    elif device.index is not None and device.index >= gpus:
        raise UserError(f"device={cfg.device} but this machine has {gpus} GPU(s)")
    if device.index is not None:
        torch.cuda.set_device(device)
    return device


class SettingsChanged(UserError):
    """A run folder's checkpoint was written under other settings than the ones asked for now."""


def check_resumable(cfg: TrainConfig, stored: dict, path: Path) -> None:
    """Refuse to resume a checkpoint written under other settings, naming the first keys that differ.

    The optimizer and schedule states come from the checkpoint, so resuming with, say, more epochs
    would silently keep the old cosine schedule.
    """
    now, defaults = to_dict(cfg), to_dict(TrainConfig())
    differ = [f"{key} {old!r} -> {new!r}" for section in RESUME_SECTIONS
              for key, old, new in _differences(section, stored.get(section), now[section], defaults[section])
              if key not in RESUME_IGNORED]
    if differ:
        raise SettingsChanged(f"{path} was trained with other settings ({'; '.join(differ[:3])}); "
                        "use a new run name, or --fresh to start this one again")


def read_resumable(cfg: TrainConfig, path: Path) -> dict:
    """The run's ``last.pt``, refused (and left as it is) when written under other settings or
    without the training state (optimizer, schedule, epoch) that an exact resume needs."""
    data = read_checkpoint(path)
    check_resumable(cfg, data.get("config", {}), path)
    if not data.get("train"):
        init = "" if cfg.task == "affinity" else f", or start a new run name from its weights with student.init={path}"
        raise UserError(f"{path} holds weights but no training state (optimizer, schedule, epoch) to resume from; "
                        f"move it out of the run folder to start over{init}")
    return data


_ABSENT = object()


def _differences(key: str, old, new, default=_ABSENT) -> list[tuple[str, object, object]]:
    """Keys whose values differ; a key the stored config lacks (written before the key existed) counts
    as its default, which by this project's rule is the behaviour from before the key."""
    if isinstance(old, dict) and isinstance(new, dict):
        default = default if isinstance(default, dict) else {}
        return [d for k in dict.fromkeys([*new, *old])
                for d in _differences(f"{key}.{k}", old.get(k, _ABSENT), new.get(k), default.get(k, _ABSENT))]
    if old is _ABSENT:
        old = default if default is not _ABSENT else None
    return [] if old == new else [(key, old, new)]


class RunFolder:
    """One run's folder and device: --fresh, resume, config.yaml, checkpoints and log.csv.

    ``log_fields`` are the log's columns, fixed for the run so every row lines up with the header.
    """

    def __init__(self, cfg: TrainConfig, log_fields: Sequence[str]):
        self.cfg = cfg
        self.path: Path = cfg.run_dir
        self.log_fields = list(log_fields)
        self.device = resolve_device(cfg)
        self.start_epoch = 0  # the first epoch still to train (after resume: the one after last.pt's)

    @property
    def writes(self) -> bool:
        """Whether this process writes the folder: rank 0 only (read at each write: torchrun's
        process group starts after the device is chosen)."""
        return world()[0] == 0

    def clear(self) -> None:
        """--fresh: forget the checkpoints and log (config.yaml is rewritten anyway)."""
        if self.writes:
            for name in ("last.pt", "best.pt", "log.csv"):
                (self.path / name).unlink(missing_ok=True)

    def resume(self) -> dict | None:
        """``last.pt`` to continue from (None: nothing to resume), refused when it cannot resume
        exactly; sets ``start_epoch`` to the epoch after the one it holds."""
        path = self.path / "last.pt"
        if not path.exists():
            return None
        data = read_resumable(self.cfg, path)
        self.start_epoch = int(data["train"]["epoch"]) + 1
        return data

    def write_config(self) -> None:
        """Save the resolved config beside the checkpoints (after a resume was accepted, so a refused
        one leaves the folder as it was)."""
        if self.writes:
            save_config(self.cfg, self.path / "config.yaml")

    def save(self, name: str, student: Student, label_set: str, **extra) -> Path:
        """Write checkpoint ``name`` (atomically) with the config and ``extra`` (e.g. ``train``: the
        state a resume needs)."""
        path = self.path / name
        if self.writes:
            save_checkpoint(path, student, to_dict(self.cfg), label_set, **extra)
        return path

    def log(self, row: dict) -> None:
        """Append one epoch's row to log.csv (None: an empty cell), with the header on a new log."""
        if not self.writes:
            return
        path = self.path / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.log_fields)
            if new:
                w.writeheader()
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
