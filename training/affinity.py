"""GeoPurify's affinity student: geometry learned contrastively from a frozen 3D teacher.

For 4096 anchor points per scene the student's embedding, through a projection head, must pick
the frozen teacher's feature of the same point out of negatives: 48 macro-negatives (the points
of a random pool least similar to the anchor in the teacher's space, for global structure) and
16 micro-negatives (the anchor's spatial neighbours whose teacher features differ most, for
boundaries); InfoNCE with temperature 0.07. No semantic labels are used. At inference the
affinity embeddings drive geometry-guided pooling (``ovseg3d infer --pooling --affinity``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg3d.data.scannet import ScanNetScene, list_scenes
from ovseg3d.errors import UserError
from ovseg3d.geometry.neighbors import knn
from ovseg3d.progress import bar
from ovseg3d.student.checkpoint import load_student
from ovseg3d.student.model import Student

from .config import TrainConfig, affinity_student_config
from .run_folder import RunFolder

LOG_FIELDS = ["epoch", "loss_infonce", "seconds"]


def contrastive_loss(student: torch.Tensor, teacher: torch.Tensor, points: np.ndarray, cfg, rng: np.random.Generator
                     ) -> torch.Tensor:
    """InfoNCE over anchors with macro (global) and micro (local) negatives chosen in teacher space."""
    a = cfg.affinity
    n = len(points)
    anchors = torch.as_tensor(rng.choice(n, min(a.anchors, n), replace=False))
    t = F.normalize(teacher, dim=1)
    s = F.normalize(student[anchors], dim=1)
    ta = t[anchors]
    pool = torch.as_tensor(rng.choice(n, min(a.pool, n), replace=False))
    sim_pool = ta @ t[pool].T  # (A, P)
    macro = pool[sim_pool.topk(min(a.global_negatives, len(pool)), dim=1, largest=False).indices]
    _, nb = knn(points, min(a.local_k + 1, n), query=points[anchors.numpy()])
    nb = torch.as_tensor(nb[:, 1:])
    sim_nb = (ta[:, None, :] * t[nb]).sum(-1)
    micro = torch.gather(nb, 1, sim_nb.topk(min(a.local_negatives, nb.shape[1]), dim=1, largest=False).indices)
    candidates = torch.cat([anchors[:, None], macro, micro], dim=1)  # the positive first
    logits = (s[:, None, :] * t[candidates]).sum(-1) / a.tau
    return F.cross_entropy(logits, torch.zeros(len(anchors), dtype=torch.long))


class Projection(torch.nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(cin, cin), torch.nn.ReLU(inplace=True),
                                       torch.nn.Linear(cin, cout))

    def forward(self, x):
        return self.mlp(x)


def train_affinity(cfg: TrainConfig, fresh: bool = False) -> Path:
    run = RunFolder(cfg, LOG_FIELDS)
    device = run.device
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teacher, _ = load_student(Path(cfg.affinity.teacher), device)
    names = list(cfg.data.train) or [p.name for p in list_scenes(cfg.data.scenes)]
    scenes = [ScanNetScene(Path(cfg.data.scenes) / n) for n in names]
    student = Student(affinity_student_config(cfg)).to(device)
    proj = Projection(cfg.affinity.dim, teacher.net.backbone_dim).to(device)
    params = list(student.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.optim.epochs)
    if fresh:
        run.clear()
    data = run.resume()
    if data is not None:
        student.load_state_dict(data["state_dict"])
        proj.load_state_dict(data["train"]["projection"])
        opt.load_state_dict(data["train"]["optimizer"])
        sched.load_state_dict(data["train"]["scheduler"])
    run.write_config()
    # the frozen teacher's geometric features, once per scene (colours used if it takes them); none
    # are needed when a finished run is asked for no more epochs
    todo = run.start_epoch < cfg.optim.epochs
    targets = [teacher.predict_backbone(s.points, s.colors) for s in scenes] if todo else []
    print(f"ovseg3d-train (affinity): {len(scenes)} scene(s), teacher {cfg.affinity.teacher}; run folder {run.path}")
    for epoch in range(run.start_epoch, cfg.optim.epochs):
        t0 = time.perf_counter()
        total = 0.0
        student.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(scenes))
        with bar(len(order), f"epoch {epoch + 1}/{cfg.optim.epochs}", "scene") as pbar:
            for i in order:
                rng = np.random.default_rng([cfg.seed, epoch, int(i)])
                s = scenes[i]
                emb = student(student.make_field([s.points], [s.colors]))
                loss = contrastive_loss(proj(emb), targets[i].to(device), s.points, cfg, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
                pbar.update()
        sched.step()
        run.save("last.pt", student, cfg.labels, role="affinity",
                 train={"epoch": epoch, "projection": proj.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict()})
        run.log({"epoch": epoch + 1, "loss_infonce": total / len(scenes),
                 "seconds": round(time.perf_counter() - t0, 2)})
        print(f"epoch {epoch + 1}: InfoNCE {total / len(scenes):.4f}", flush=True)
    if not (run.path / "last.pt").exists():
        raise UserError("no epoch was trained")
    return run.path / "last.pt"
