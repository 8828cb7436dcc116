"""The distillation loop: student, losses, schedule, checkpoints, exact resume, DistributedDataParallel.

Under torchrun each process trains on its own share of every epoch's samples and gradients are
averaged (gloo on CPU, NCCL on GPUs); rank 0 validates, logs and writes checkpoints. The run
folder (``run_folder.RunFolder``) holds ``config.yaml``, ``log.csv`` (one row per epoch),
``last.pt`` (every epoch, with optimizer, schedule and RNG state for an exact resume) and
``best.pt`` (best validation mIoU). The loss terms and their order are ``loss_terms.LOSS_TERMS``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ovseg3d.errors import UserError
from ovseg3d.eval.semantic import SemanticMeter
from ovseg3d.geometry.voxels import isolated_voxel_fraction, segment_mean
from ovseg3d.labels import load_label_set
from ovseg3d.progress import bar
from ovseg3d.segment.instances import majority_label
from ovseg3d.student.checkpoint import read_checkpoint
from ovseg3d.student.model import Student
from ovseg3d.text.clip_model import ClipSpec
from ovseg3d.text.vocabulary import build_vocabulary

from .affine_features import AffineFeatures
from .config import TrainConfig, student_config, uses_instances
from .data import DistillDataset, split_scenes
from .loss_terms import LOSS_TERMS, LOSSES, on_device
from .losses import class_balance_weights, label_guided_targets, rows_of, teacher_classes, zero_loss
from .run_folder import RunFolder, world

LOG_FIELDS = ["epoch", "lr", "loss", *(f"loss_{k}" for k in LOSSES), "val_miou", "val_macc", "val_instance_acc",
              "seconds"]


def _init_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def _lr_factor(cfg: TrainConfig, epoch: int) -> float:
    if cfg.optim.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * epoch / cfg.optim.epochs))


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.run = RunFolder(cfg, LOG_FIELDS)
        self.device = self.run.device
        _init_distributed(self.device)
        self.rank, self.world = world()
        torch.manual_seed(cfg.seed)
        train, self.val_names = split_scenes(cfg)
        self.data = DistillDataset(cfg, train)
        self.val = DistillDataset(cfg, self.val_names)
        self.student = Student(student_config(cfg)).to(self.device)
        if cfg.student.init:
            self._init_weights(Path(cfg.student.init))
        trainable = list(self.student.parameters())
        if cfg.student.freeze_backbone:  # GeoGuide: only the adapter (or the head) learns
            keep = [self.student.adapter if self.student.adapter is not None else self.student.net.head]
            if self.student.instance_head is not None:
                keep.append(self.student.instance_head)
            for p in self.student.parameters():
                p.requires_grad_(False)
            trainable = [p for m in keep for p in m.parameters()]
            for p in trainable:
                p.requires_grad_(True)
        self.model = self.student
        if self.world > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(self.student)
        self.opt = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.target_mean = self.data.target_mean().to(self.device)  # mean unit teacher feature
        if cfg.optim.head_init_mean and not cfg.student.init:
            self._init_head_to_mean()
        self.history: Student | None = None  # SAS temporal-ensembling model
        self.experts: list[tuple[Student, np.ndarray]] = []  # HAS-KD snapshots and their per-class IoU
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda e: _lr_factor(cfg, e))
        self.best = -1.0
        self.labels = load_label_set(cfg.labels)
        self._vocab = None
        self._class_iou: np.ndarray | None = None
        self._class_weights: torch.Tensor | None = None  # loss.class_balance: per vocabulary class
        self._instance_targets: dict[str, tuple] = {}  # FOLK: per scene (ids, target, usable, labels)
        # the losses that are on need no formed (N, 512) outputs: train on (inputs, weight, bias), same numbers
        L = cfg.loss
        self.unformed = (self.student.adapter is None and L.relation == 0 and L.instance_masks == 0
                         and L.temporal_ensembling == 0 and L.snapshot_experts == 0)

    @property
    def vocab(self):
        if self._vocab is None:
            spec = ClipSpec(model=self.cfg.clip_model, pretrained=self.cfg.clip_weights or None)
            self._vocab = build_vocabulary(self.labels, spec)
            if self._vocab.dim != self.cfg.student.feature_dim:
                raise UserError(f"the text encoder gives {self._vocab.dim}-d embeddings but student.feature_dim "
                                f"is {self.cfg.student.feature_dim}")
        return self._vocab

    def class_weights(self, targets: torch.Tensor) -> torch.Tensor:
        """``loss.class_balance``: each target row's weight, from its teacher class's share of the
        training rooms' points (counted once, on first use)."""
        text = self.vocab.class_embeddings().float()
        if self._class_weights is None:
            counts = self.data.teacher_class_counts(text, self.cfg.loss.superpoint_point_targets)
            self._class_weights = class_balance_weights(counts, self.cfg.loss.class_balance).to(self.device)
            if self.rank == 0:
                top = sorted(zip(self._class_weights.tolist(), self.labels.names), reverse=True)
                print("ovseg3d-train: class-balanced point loss, weights by teacher class: "
                      + ", ".join(f"{n} {w:.2f}" for w, n in top), flush=True)
        return self._class_weights[teacher_classes(targets, text)]

    def _clone(self) -> Student:
        """A frozen copy of the student (MinkowskiEngine modules do not survive copy.deepcopy)."""
        twin = Student(self.student.cfg).to(self.device)
        twin.load_state_dict(self.student.state_dict())
        for p in twin.parameters():
            p.requires_grad_(False)
        return twin.eval()

    def _init_head_to_mean(self) -> None:
        """Start predicting the targets' mean direction: the plain cosine loss otherwise spends its
        first many steps only turning a random output towards it."""
        with torch.no_grad():
            if self.student.adapter is not None:
                last = self.student.adapter[-1]
                last.weight.mul_(0.1)
                last.bias.copy_(self.target_mean)
            else:
                self.student.net.head.kernel.mul_(0.1)
                self.student.net.head.bias.copy_(self.target_mean)

    def _init_weights(self, path: Path) -> None:
        state = read_checkpoint(path)["state_dict"]
        own = self.student.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise UserError(f"config key 'student.init': {path} has no weights that fit this student")
        self.student.load_state_dict(usable, strict=False)
        fresh = sorted(set(own) - set(usable))
        if self.rank == 0 and fresh:
            print(f"student.init: {len(usable)} tensors from {path}; {len(fresh)} start fresh "
                  f"({', '.join(fresh[:4])}{', ...' if len(fresh) > 4 else ''})")

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        if mode and self.cfg.student.freeze_backbone:
            self.student.net.eval()  # frozen batch-norm statistics stay as they were

    # ---------------------------------------------------------------- checkpoints
    def _state(self, epoch: int) -> dict:
        def weights(m: Student) -> dict:
            return {k: v.detach().cpu() for k, v in m.state_dict().items()}

        return {"epoch": epoch, "best_val_miou": self.best, "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "history": weights(self.history) if self.history is not None else None,
                "experts": [{"weights": weights(m), "iou": [float(x) for x in iou]} for m, iou in self.experts]}

    def resume(self) -> bool:
        data = self.run.resume()
        if data is None:
            return False
        self.student.load_state_dict(data["state_dict"])
        train = data["train"]
        self.opt.load_state_dict(train["optimizer"])
        self.sched.load_state_dict(train["scheduler"])
        torch.set_rng_state(train["torch_rng"])
        if train.get("history") is not None:
            self.history = self._clone()
            self.history.load_state_dict(train["history"])
        for e in train.get("experts", []):
            expert = self._clone()
            expert.load_state_dict(e["weights"])
            self.experts.append((expert, np.asarray(e["iou"])))
        self.best = float(train.get("best_val_miou", -1.0))
        return True

    def save(self, name: str, epoch: int) -> Path:
        return self.run.save(name, self.student, self.labels.name, train=self._state(epoch))

    # ---------------------------------------------------------------- steps
    def _losses(self, pred: torch.Tensor, sample, extra: dict) -> dict[str, torch.Tensor]:
        """One sample's loss terms that are on, by name, in LOSS_TERMS order (the order they are summed)."""
        sample = on_device(sample, self.device)
        out = {}
        for name, term in LOSS_TERMS.items():
            value = term(self, pred, sample, extra)
            if value is not None:
                out[name] = value
        return out

    def folk_targets(self, name: str) -> tuple:
        """A training scene's label-guided instance targets (computed once)."""
        if name not in self._instance_targets:
            table = self.data.instance_table(name)
            text = self.vocab.class_embeddings().float()
            target, usable, consistent = label_guided_targets(table.teacher, table.labels, text)
            self._instance_targets[name] = (table.ids, target, usable, table.labels)
            if self.rank == 0:
                n, c = int(usable.sum()), int(consistent.sum())
                print(f"  {name}: {len(table.ids)} instances, {n} usable, teacher label-consistent on {c}", flush=True)
        return self._instance_targets[name]

    def _extra_targets(self, samples, offsets) -> list[dict]:
        """Per sample: the history model's features and the adept experts' features, if enabled."""
        extras: list[dict] = [{} for _ in range(len(offsets) - 1)]

        def field():  # each network needs its own field: MinkowskiEngine keys its maps per forward
            return self.student.make_field([s.points for s in samples], [s.colors for s in samples])

        if self.cfg.loss.relation > 0:  # geometric features of the student itself, with gradients
            b = self.student.backbone_features(field())
            for e, lo, hi in zip(extras, offsets[:-1], offsets[1:]):
                e["backbone"] = b[lo:hi]
        with torch.no_grad():
            if self.history is not None:
                h = self.history(field())
                for e, lo, hi in zip(extras, offsets[:-1], offsets[1:]):
                    e["history"] = h[lo:hi]
            if self.experts and self.cfg.loss.snapshot_experts > 0:
                current = self._class_iou if self._class_iou is not None else np.zeros(len(self.labels))
                feats = [(m(field()), np.asarray(iou) > current) for m, iou in self.experts]
                best = np.argmax(np.stack([iou for _, iou in self.experts]), axis=0)
                for e, lo, hi in zip(extras, offsets[:-1], offsets[1:]):
                    e["experts"] = [(f[lo:hi], torch.as_tensor((best == i) & better))
                                    for i, (f, better) in enumerate(feats)]
        return extras

    def _update_history(self) -> None:
        m = self.cfg.loss.te_momentum
        with torch.no_grad():
            for ph, ps in zip(self.history.parameters(), self.student.parameters()):
                ph.mul_(m).add_(ps.detach(), alpha=1 - m)
            for bh, bs in zip(self.history.buffers(), self.student.buffers()):
                bh.copy_(bs)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.train()
        if self.cfg.loss.temporal_ensembling > 0 and epoch >= self.cfg.loss.te_start_epoch and self.history is None:
            self.history = self._clone()
        order = np.random.default_rng([self.cfg.seed, epoch, 7]).permutation(len(self.data))
        mine = order[self.rank::self.world]
        B = self.cfg.optim.batch_scenes
        sums: dict[str, float] = {}
        steps = 0
        with bar(len(mine), f"epoch {epoch + 1}/{self.cfg.optim.epochs}", "sample") as pbar:
            if self.rank != 0:
                pbar.disable = True
            for b in range(0, len(mine), B):
                samples = [self.data.sample(int(i), epoch) for i in mine[b:b + B]]
                field = self.student.make_field([s.points for s in samples], [s.colors for s in samples])
                inst = None
                if uses_instances(self.cfg):
                    pred, inst = self.model(field, True, self.unformed)
                else:
                    pred = self.model(field, False, self.unformed)
                if self.unformed:
                    pred, inst = AffineFeatures(*pred), None if inst is None else AffineFeatures(*inst)
                offsets = np.cumsum([0] + [len(s.points) for s in samples])
                extras = self._extra_targets(samples, offsets)
                if inst is not None:
                    for e, lo, hi in zip(extras, offsets[:-1], offsets[1:]):
                        e["instance"] = rows_of(inst, slice(lo, hi))
                total = zero_loss(pred)
                for s, lo, hi, extra in zip(samples, offsets[:-1], offsets[1:], extras):
                    for name, value in self._losses(rows_of(pred, slice(lo, hi)), s, extra).items():
                        weight = getattr(self.cfg.loss, name)
                        total = total + weight * value / len(samples)
                        sums[name] = sums.get(name, 0.0) + value.item() / len(samples)
                self.opt.zero_grad(set_to_none=True)
                total.backward()
                if self.cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.optim.grad_clip)
                self.opt.step()
                if self.history is not None:
                    self._update_history()
                steps += 1
                sums["loss"] = sums.get("loss", 0.0) + total.item()
                pbar.update(len(samples))
                pbar.set_postfix(loss=f"{sums['loss'] / steps:.4f}")
        return {k: v / max(steps, 1) for k, v in sums.items()}

    @torch.no_grad()
    def validate(self) -> tuple[float, float, float]:
        """Validation mIoU, mAcc and (with an instance head) the accuracy of naming annotated
        instances from their pooled instance-head features."""
        if not self.val_names:
            return float("nan"), float("nan"), float("nan")
        meter = SemanticMeter(len(self.labels))
        right = total = 0
        for name in self.val_names:
            scene = self.val.scene(name)
            sem = scene.semantic(self.labels)
            feats, inst_feats = self.student.predict_instance(scene.points, scene.colors)
            if inst_feats is not None:
                r, t = _instance_naming(inst_feats, scene.instance_ids, sem, self.vocab)
                right, total = right + r, total + t
            meter.update(self.vocab.classify(feats)[0].numpy(), sem)
        s = meter.compute()
        self._class_iou = np.nan_to_num(s.iou, nan=0.0)
        return s.miou, s.macc, (right / total if total else float("nan"))

    def _snapshot(self, epoch: int) -> None:
        """HAS-KD: keep the current student as an expert with its per-class validation IoU."""
        if self.cfg.loss.snapshot_experts <= 0 or (epoch + 1) % self.cfg.loss.snapshot_every:
            return
        if self.rank != 0 or self._class_iou is None:
            self.validate()  # every process needs the experts' IoU; validation is deterministic
        self.experts.append((self._clone(), self._class_iou.copy()))
        self.experts = self.experts[-self.cfg.loss.max_experts:]

    # ---------------------------------------------------------------- the run
    def _warn_sparse_voxels(self) -> None:
        """Voxels finer than the point spacing leave the full-resolution convolutions nothing to see."""
        name, voxel = self.data.names[0], self.cfg.student.voxel_size
        share = isolated_voxel_fraction(self.data.points(name), voxel)
        if share > 0.3:
            print(f"ovseg3d-train: warning: {share:.0%} of {name}'s voxels at student.voxel_size={voxel} have no "
                  "occupied neighbour (the points are sparser than the voxels); a larger student.voxel_size "
                  "lets the convolutions see their neighbours", flush=True)

    def fit(self) -> Path:
        self.run.write_config()
        print(f"ovseg3d-train: {len(self.data)} training scene(s), {len(self.val_names)} validation, "
              f"{self.world} process(es) on {self.device}; run folder {self.run.path}"
              + (f"; resuming after epoch {self.run.start_epoch}" if self.run.start_epoch else ""), flush=True)
        if self.rank == 0:
            self._warn_sparse_voxels()
        for epoch in range(self.run.start_epoch, self.cfg.optim.epochs):
            t0 = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]
            stats = self.train_epoch(epoch)
            self.sched.step()
            self._class_iou = None
            miou = macc = inst_acc = float("nan")
            last = epoch + 1 == self.cfg.optim.epochs
            if self.rank == 0 and self.val_names and ((epoch + 1) % self.cfg.val_every == 0 or last):
                miou, macc, inst_acc = self.validate()
            self._snapshot(epoch)
            if self.rank == 0:
                if not math.isnan(miou) and miou > self.best:
                    self.best = miou
                    self.save("best.pt", epoch)
                self.save("last.pt", epoch)
                row = {"epoch": epoch + 1, "lr": lr, "loss": stats.get("loss"),
                       **{f"loss_{k}": stats.get(k) for k in LOSSES}, "val_miou": miou, "val_macc": macc,
                       "val_instance_acc": inst_acc, "seconds": round(time.perf_counter() - t0, 2)}
                self.run.log(row)
                print(f"epoch {epoch + 1}: loss {stats.get('loss', float('nan')):.4f}"
                      + (f", val mIoU {miou * 100:.1f}" if not math.isnan(miou) else "")
                      + (f", instances named right {inst_acc * 100:.1f} %" if not math.isnan(inst_acc) else "")
                      + f" ({row['seconds']} s)", flush=True)
            if self.world > 1:
                dist.barrier()
        self._report_replicas()
        return self.run.path / "last.pt"

    def _report_replicas(self) -> None:
        """Each process records a checksum of its weights: replicas must agree after DDP."""
        checksum = float(sum(p.detach().double().sum() for p in self.student.parameters()))
        (self.run.path / f"replica{self.rank}.json").write_text(json.dumps({"rank": self.rank, "world": self.world,
                                                                           "param_sum": checksum}))


def _instance_naming(inst_feats: torch.Tensor, instance_ids: np.ndarray, semantic: np.ndarray, vocab
                     ) -> tuple[int, int]:
    """(right, total) over annotated instances with a class: pooled instance feature named right."""
    ids, inv = np.unique(instance_ids, return_inverse=True)
    pooled, _ = segment_mean(inst_feats, torch.from_numpy(inv.reshape(-1)), len(ids))
    named = vocab.classify(pooled)[0].numpy()
    truth = np.array([majority_label(semantic[instance_ids == i]) for i in ids])
    keep = (ids > 0) & (truth >= 0)
    return int((named[keep] == truth[keep]).sum()), int(keep.sum())


def train(cfg: TrainConfig, fresh: bool = False) -> Path:
    if cfg.task == "affinity":
        from .affinity import train_affinity

        return train_affinity(cfg, fresh)
    trainer = Trainer(cfg)
    if fresh:
        trainer.run.clear()
    if trainer.world > 1:
        dist.barrier()
    if not fresh:
        trainer.resume()
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
