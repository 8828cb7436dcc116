"""Typed training configs: YAML files plus ``key.sub=value`` overrides, checked key by key.

Every key must exist in the dataclasses below and every value must have the declared type; a
mistake names the key. The resolved config is saved beside every checkpoint (``config.yaml``)
and inside it, so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ovseg3d.errors import UserError


@dataclass
class StudentSection:
    arch: str = "MinkUNet18A"
    feature_dim: int = 512
    voxel_size: float = 0.02
    input: str = "occupancy"  # occupancy (geometry only) | color
    adapter_hidden: int = 0  # GeoGuide: > 0 puts a two-layer MLP adapter on the backbone instead of the head
    instance_hidden: int = 0  # FOLK: > 0 adds an instance head (two-layer MLP of this width) on the backbone
    stem_kernel: int = 5  # the first convolution's kernel in voxels (3: a fifth cheaper a step at 10 cm voxels)
    init: str = ""  # checkpoint whose weights start the run (e.g. a pretrained 3D backbone)
    freeze_backbone: bool = False  # GeoGuide: train only the adapter (or head) on a frozen backbone


@dataclass
class DataSection:
    scenes: str = ""  # dataset root in ScanNet's layout
    targets: str = ""  # folder of fused teacher features (OpenScene <scene>_0.pt)
    train: list[str] = field(default_factory=list)  # scene names; empty: every scene with targets not in val
    val: list[str] = field(default_factory=list)
    chunk: float = 0.0  # metres: train on random square columns of this side (0: whole scenes)
    max_points: int = 300000  # points per training sample at most (random subset beyond)
    # Train on one point per occupied student voxel (its points' centroid, mean teacher feature, majority
    # superpoint and instance), computed once per scene: the student's convolutions see the whole
    # geometry at a voxel's cost, where a random point subset (max_points) leaves voxels out at random.
    voxel_samples: bool = False


@dataclass
class AugmentSection:
    rotate_z: bool = True  # random rotation about the vertical axis
    # degrees; > 0: the rotation is a random multiple of this (90: an axis-aligned room stays on the voxel
    # grid; any angle turns 1-voxel-thick walls into staircases the student must learn to see through)
    rotate_z_step: float = 0.0
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    jitter: float = 0.005  # metres, Gaussian
    flip_x: bool = True
    # metres: a random shift of the whole sample, uniform in [-shift/2, shift/2] per axis; one student voxel
    # re-cuts every voxel's neighbourhood each epoch, which neither turns nor flips of a room on the grid do
    shift: float = 0.0


@dataclass
class LossSection:
    cosine: float = 1.0  # OpenScene: 1 - cos(student, fused teacher) on every point with a target
    # Ours: subtract the training targets' mean direction from student and teacher features before
    # the cosine (point and superpoint losses). CLIP embeddings of different classes share most of
    # their direction, so the plain cosine is dominated by that shared part; centring measures the
    # class-discriminative part and learns it several times faster on small budgets.
    center_targets: bool = False
    superpoint: float = 0.0  # SAS: the same on superpoint-averaged student and teacher features
    superpoint_uncertainty: bool = False  # GeoGuide: weight superpoints by their teachers' agreement
    # SAS (eq. 10): the point loss (``cosine``) learns each point's superpoint-averaged teacher feature
    # instead of the point's own, and points without one inherit their superpoint's: the teacher's
    # view-to-view noise is averaged out of the point targets too, not only out of the superpoint loss.
    superpoint_point_targets: bool = False
    # Ours: the point loss weighs each point by how rare its teacher class is in the training rooms,
    # (share of points) ** -class_balance, normalised to a mean weight of 1 (0: off; 0.5: inverse square
    # root). A point's class is the training vocabulary's (``labels``) best match to its target (eq. 10's
    # superpoint mean where that is on): no annotation is read. mIoU weighs every class alike, while the
    # plain loss is mostly walls and floors, and the rare classes (sinks, toilets) are those a student
    # trained for a few minutes learns last.
    class_balance: float = 0.0
    superpoint_k_thresh: float = 0.01
    superpoint_min_verts: int = 20
    # GeoGuide inter-instance relation consistency, with superpoints as the geometric instances:
    # the superpoint-to-superpoint similarities of the backbone (geometric) features and of the
    # output (semantic) features should agree (MSE), over at most `relation_groups` superpoints.
    relation: float = 0.0
    relation_groups: int = 64
    # GeoGuide instance mask reconstruction, superpoints standing in for class-agnostic instances:
    # each group's mean feature, as a query, must reconstruct the group's mask over the sample's
    # points (BCE on scaled cosine logits).
    instance_masks: float = 0.0
    instance_mask_scale: float = 10.0
    # SAS temporal-ensembling self-distillation: a history (EMA) copy of the student labels each
    # superpoint by the argmax of its averaged features; the student learns those labels (CE).
    temporal_ensembling: float = 0.0
    te_momentum: float = 0.9999
    te_start_epoch: int = 1  # epochs of plain distillation before the history model starts
    te_logit_scale: float = 100.0  # CLIP's logit scale for the student's text logits
    # HAS-KD adept snapshot distillation: snapshots taken every `snapshot_every` epochs; each
    # supervises (cosine) only the points of the classes on which it has the best validation IoU.
    snapshot_experts: float = 0.0
    snapshot_every: int = 5
    max_experts: int = 2
    # FOLK label-guided instance distillation (needs student.instance_hidden > 0 and instance-teacher
    # targets <scene>_instances.pt from `ovseg3d extract --instance-teacher` in data.targets): each
    # annotated instance's mean instance-head feature learns the teacher's embedding of it where that
    # embedding names the annotated class, the class's text embedding where it does not; and
    # `instance_label_ce` adds cross-entropy of the instance's text logits against the annotated class.
    instance_distill: float = 0.0
    instance_label_ce: float = 0.0
    instance_logit_scale: float = 100.0


@dataclass
class AffinitySection:
    """GeoPurify: a light affinity student learns geometry contrastively from a frozen 3D teacher."""

    teacher: str = ""  # checkpoint of the frozen 3D teacher (our distilled student serves)
    dim: int = 128  # affinity embedding size
    anchors: int = 4096
    global_negatives: int = 48  # macro-negatives: the least similar points (teacher space) of a random pool
    local_negatives: int = 16  # micro-negatives: the most dissimilar of the anchor's spatial neighbours
    local_k: int = 32
    pool: int = 2048  # candidates for the macro-negatives
    tau: float = 0.07


@dataclass
class OptimSection:
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_scenes: int = 1  # samples per step on each process
    schedule: str = "cosine"  # cosine | constant
    grad_clip: float = 0.0
    head_init_mean: bool = True  # start the output head at the targets' mean direction (fresh runs)


@dataclass
class TrainConfig:
    name: str = "run"
    task: str = "distill"  # distill: the 3D student from fused 2D targets; affinity: GeoPurify's affinity student
    out: str = "runs"  # the run folder is <out>/<name>
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    labels: str = "scannet20"  # label set of the validation mIoU and of the checkpoint
    clip_model: str = "ViT-B-16"  # text encoder of the validation vocabulary
    clip_weights: str = ""  # tag or file; empty: random weights (seed 0)
    val_every: int = 1  # epochs
    threads: int = 0  # CPU threads of torch and MinkowskiEngine (0: their defaults)
    student: StudentSection = field(default_factory=StudentSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    affinity: AffinitySection = field(default_factory=AffinitySection)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name


def _check_value(key: str, value, typ):
    origin = typing.get_origin(typ)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"config key {key!r} must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(typ)
        return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"config key {key!r} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {key!r} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if typ is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float):
            raise UserError(f"config key {key!r} must be a string, got {type(value).__name__}")
        return str(value)
    raise UserError(f"config key {key!r} has an unsupported type {typ}")  # pragma: no cover


def _apply(obj, data: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise UserError(f"unknown config key {full!r} (known here: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"config key {full!r} is a section; give its keys ({full}.KEY=...)")
            _apply(current, value, f"{full}.")
        else:
            typ = hints[key]
            if isinstance(typ, types.UnionType):  # pragma: no cover - not used
                typ = typing.get_args(typ)[0]
            setattr(obj, key, _check_value(full, value, typ))


def _nest(key: str, value) -> dict:
    out: dict = {}
    cur = out
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    cfg = TrainConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {path} must hold a mapping of keys")
        _apply(cfg, data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _apply(cfg, _nest(key.strip(), value))
    validate(cfg)
    return cfg


def student_config(cfg: TrainConfig):
    """The StudentConfig the student section describes: each of its fields is the section's key of
    the same name (so a new student option is one line in StudentSection; a field the section lacks
    fails here rather than silently keeping its default). The section's other keys, ``init`` and
    ``freeze_backbone``, say how training starts, not what the student is."""
    from ovseg3d.student.model import StudentConfig

    return StudentConfig(**{f.name: getattr(cfg.student, f.name) for f in dataclasses.fields(StudentConfig)})


# GeoPurify's affinity student is its own small network: of the student section it shares only the input
AFFINITY_FROM_STUDENT = ("voxel_size", "input")


def affinity_student_config(cfg: TrainConfig):
    """The affinity student's StudentConfig: MinkUNetSmall of width ``affinity.dim`` on the student's input."""
    from ovseg3d.student.model import StudentConfig

    return StudentConfig(arch="MinkUNetSmall", feature_dim=cfg.affinity.dim,
                         **{k: getattr(cfg.student, k) for k in AFFINITY_FROM_STUDENT})


def uses_instances(cfg: TrainConfig) -> bool:
    """Whether FOLK's instance losses are on (they need the instance head and instance targets)."""
    return cfg.loss.instance_distill > 0 or cfg.loss.instance_label_ce > 0


def validate(cfg: TrainConfig) -> None:
    student_config(cfg).validate()
    if not cfg.data.scenes:
        raise UserError("config key 'data.scenes' is required: the dataset root")
    if cfg.task not in ("distill", "affinity"):
        raise UserError(f"config key 'task' must be distill or affinity, got {cfg.task!r}")
    if cfg.task == "affinity" and not cfg.affinity.teacher:
        raise UserError("config key 'affinity.teacher' is required for task affinity: the frozen 3D teacher checkpoint")
    if cfg.task == "distill" and not cfg.data.targets:
        raise UserError("config key 'data.targets' is required: the folder of fused teacher features")
    if cfg.optim.epochs < 1 or cfg.optim.batch_scenes < 1:
        raise UserError("config keys 'optim.epochs' and 'optim.batch_scenes' must be >= 1")
    if cfg.optim.schedule not in ("cosine", "constant"):
        raise UserError(f"config key 'optim.schedule' must be cosine or constant, got {cfg.optim.schedule!r}")
    if len(cfg.augment.scale) != 2 or cfg.augment.scale[0] <= 0 or cfg.augment.scale[0] > cfg.augment.scale[1]:
        raise UserError("config key 'augment.scale' must be [low, high] with 0 < low <= high")
    if cfg.loss.class_balance < 0 or cfg.augment.shift < 0:
        raise UserError("config keys 'loss.class_balance' and 'augment.shift' must be >= 0")
    if cfg.loss.snapshot_experts > 0 and not cfg.data.val:
        raise UserError("config key 'loss.snapshot_experts' needs validation scenes (data.val) to find "
                        "each snapshot's adept classes")
    if not 0 < cfg.loss.te_momentum < 1:
        raise UserError("config key 'loss.te_momentum' must be in (0, 1)")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device):
        raise UserError(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    if cfg.threads < 0:
        raise UserError(f"config key 'threads' must be 0 (the defaults) or a positive count, got {cfg.threads}")
    if cfg.student.freeze_backbone and not cfg.student.init:
        raise UserError("config key 'student.freeze_backbone' needs 'student.init' (the backbone to freeze)")
    if uses_instances(cfg) and cfg.student.instance_hidden <= 0:
        raise UserError("config keys 'loss.instance_distill'/'loss.instance_label_ce' need an instance head: "
                        "set 'student.instance_hidden' (e.g. 256)")
    if cfg.student.instance_hidden > 0 and not uses_instances(cfg):
        raise UserError("config key 'student.instance_hidden' adds an instance head that nothing trains: "
                        "set 'loss.instance_distill' and/or 'loss.instance_label_ce'")
    if cfg.loss.cosine <= 0 and cfg.loss.superpoint <= 0:
        raise UserError("config keys 'loss.cosine' and 'loss.superpoint' are both 0: nothing to train")


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
