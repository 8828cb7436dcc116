"""The distillation training package: configs, losses on hand-made inputs, a one-epoch smoke run,
exact resume, and a two-process gloo DistributedDataParallel run."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import interruptible
from ovseg3d.errors import UserError
from ovseg3d.student.checkpoint import load_student, read_checkpoint, save_checkpoint
from ovseg3d.student.model import Student
from ovseg3d.text.vocabulary import Vocabulary
from ovseg3d_train.config import load_config, student_config, to_dict
from ovseg3d_train.losses import (
    adept_expert_loss,
    cosine_distillation,
    instance_mask_bce,
    reconstruct_instance_masks,
    relation_consistency,
    superpoint_distillation,
    superpoint_pseudo_labels,
    superpoint_targets,
    text_cross_entropy,
)
from ovseg3d_train.run_folder import check_resumable, resolve_device
from ovseg3d_train.trainer import Trainer, train

BIN = Path(sys.executable).parent
CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic.yaml"


# ---------------------------------------------------------------- losses, by hand
def test_cosine_distillation_by_hand():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    assert cosine_distillation(pred, target).item() == pytest.approx((0 + 1 + 0) / 3)
    assert cosine_distillation(pred, target, torch.tensor([True, False, True])).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distillation(pred, target, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_superpoint_distillation_by_hand():
    # superpoint 5: targets e0 and e1 average to (1, 1)/2; predictions (0, 2) and (2, 0) to (1, 1)
    pred = torch.tensor([[0.0, 2.0], [2.0, 0.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    sp = torch.tensor([5, 5, 9])
    # point-wise every row disagrees; per superpoint only superpoint 9 does (cos 0)
    assert cosine_distillation(pred, target).item() == pytest.approx(1.0)
    assert superpoint_distillation(pred, target, sp).item() == pytest.approx(0.5)
    # with uncertainty: superpoint 5's targets disagree (agreement cos 45 deg), superpoint 9 agrees fully
    w5, w9 = math.cos(math.pi / 4), 1.0
    expected = (w5 * 0.0 + w9 * 1.0) / (w5 + w9)
    assert superpoint_distillation(pred, target, sp, uncertainty=True).item() == pytest.approx(expected, abs=1e-6)


def test_superpoint_targets_by_hand():
    # superpoint 5: two seen points (e0, 2*e1) and one unseen; superpoint 9: one unseen point only
    target = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [3.0, 0.0]])
    sp = torch.tensor([5, 5, 5, 9])
    mask = torch.tensor([True, True, False, False])
    t, m = superpoint_targets(target, sp, mask)
    # unit targets averaged: (0.5, 0.5) on every point of superpoint 5, the unseen one included
    assert m.tolist() == [True, True, True, False]
    assert torch.allclose(t[:3], torch.tensor([[0.5, 0.5]] * 3))
    # a student predicting the superpoint's direction everywhere loses nothing against these targets,
    # but does against the raw point targets
    pred = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    assert cosine_distillation(pred, t, m).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_distillation(pred, target, mask).item() == pytest.approx(1 - math.cos(math.pi / 4), abs=1e-6)


def test_relation_consistency_and_instance_masks_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    inst = torch.tensor([0, 0, 1])
    assert relation_consistency(a, a, inst).item() == pytest.approx(0.0, abs=1e-6)
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # the two instances look alike in b
    # similarity matrices [[1,0],[0,1]] vs [[1,1],[1,1]]: MSE = 2/4
    assert relation_consistency(a, b, inst).item() == pytest.approx(0.5)
    logits = torch.tensor([[10.0, 10.0, -10.0], [-10.0, -10.0, 10.0]])
    assert instance_mask_bce(logits, inst).item() < 1e-4
    assert instance_mask_bce(-logits, inst).item() > 9
    # features that separate the two groups reconstruct their masks well; identical ones cannot
    good = reconstruct_instance_masks(a, inst, scale=20.0).item()
    assert good < reconstruct_instance_masks(b, inst, scale=20.0).item()


def test_temporal_ensembling_pseudo_labels_by_hand():
    vocab = Vocabulary(["a", "b"], torch.eye(2), torch.arange(2))
    history = torch.tensor([[1.0, 0.0], [0.0, 0.9], [1.0, 0.2], [0.1, 1.0]])
    sp = torch.tensor([3, 3, 3, 8])  # superpoint 3 averages to (2, 1.1)/3: class a
    labels = superpoint_pseudo_labels(history, sp, vocab)
    assert labels.tolist() == [0, 0, 0, 1]
    pred = torch.tensor([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    assert text_cross_entropy(pred, labels, vocab, scale=100.0).item() < 1e-6
    assert text_cross_entropy(-pred, labels, vocab, scale=100.0).item() > 50


def test_adept_expert_loss_by_hand():
    vocab = Vocabulary(["a", "b"], torch.eye(2), torch.arange(2))
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # teacher classes a, b, b
    mask = torch.tensor([True, True, False])
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    expert_a = (torch.tensor([[0.0, 1.0]] * 3), torch.tensor([True, False]))  # adept at a only
    expert_b = (torch.tensor([[1.0, 0.0]] * 3), torch.tensor([False, True]))  # adept at b only
    # point 0 (class a) is supervised by expert_a (cos 0 -> loss 1); point 1 (class b) by
    # expert_b (cos 1 -> loss 0); point 2 has no teacher target
    assert adept_expert_loss(pred, target, mask, [expert_a, expert_b], vocab).item() == pytest.approx(0.5)
    assert adept_expert_loss(pred, target, mask, [], vocab).item() == 0.0


# ---------------------------------------------------------------- configs
def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(CONFIG, ["data.scenes=/x", "data.targets=/y", "optim.epochs=3", "loss.superpoint=0.5",
                               "data.train=[a, b]"])
    assert cfg.optim.epochs == 3 and cfg.loss.superpoint == 0.5 and cfg.data.train == ["a", "b"]
    assert cfg.student.voxel_size == 0.05
    base = ["data.scenes=/x", "data.targets=/y"]
    cases = [
        (["optim.epoch=3"], "unknown config key 'optim.epoch'"),
        (["optim.epochs=three"], "config key 'optim.epochs' must be an integer"),
        (["loss.cosine=[1]"], "config key 'loss.cosine' must be a number"),
        (["augment.rotate_z=1"], "config key 'augment.rotate_z' must be true or false"),
        (["student.arch=PointNet"], "student.arch: unknown architecture"),
        (["optim=3"], "config key 'optim' is a section"),
        (["nonsense"], "must look like key=value"),
        (["threads=-1"], "config key 'threads' must be 0"),
        (["device=gpu"], "config key 'device' must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ]
    for override, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            load_config(CONFIG, base + override)
    with pytest.raises(UserError, match=r"'data\.targets' is required"):
        load_config(CONFIG, ["data.scenes=/x", "data.targets="])
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {voxel_size: [}")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_device_choice(monkeypatch):
    """auto follows the machine; an impossible GPU request is one clear line; under torchrun each
    process takes the GPU of its LOCAL_RANK and a process without one is refused before NCCL starts
    (on a one-GPU machine two NCCL ranks would share it and fail mid-run)."""
    cfg = load_config(CONFIG, ["data.scenes=/x", "data.targets=/y"])
    assert resolve_device(cfg).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        cfg.device = "cuda"
        with pytest.raises(UserError, match=r"sees no GPU .* set device=auto or device=cpu"):
            resolve_device(cfg)
    # the rank-to-GPU mapping, on a machine taken to have two GPUs (CI has none; the single-GPU path
    # ran on an H100, see README "On a robot")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    cfg.device = "cuda"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device(cfg) == torch.device("cuda", 1) and chosen == [torch.device("cuda", 1)]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(UserError, match=r"process 2 on this machine has no GPU of its own \(2 visible\)"):
        resolve_device(cfg)
    cfg.device = "cuda:3"
    with pytest.raises(UserError, match=r"device=cuda:3 but this machine has 2 GPU\(s\)"):
        resolve_device(cfg)


def test_resume_check_reads_keys_added_since_as_their_defaults():
    """A checkpoint written before a config key existed resumes under that key's default (the old
    behaviour) and is refused under any other value."""
    cfg = load_config(CONFIG, ["data.scenes=/x", "data.targets=/y"])
    stored = to_dict(cfg)
    del stored["loss"]["superpoint_point_targets"]  # as written before the key existed
    check_resumable(cfg, stored, Path("old.pt"))
    cfg.loss.superpoint_point_targets = True
    with pytest.raises(UserError, match=r"loss\.superpoint_point_targets False -> True"):
        check_resumable(cfg, stored, Path("old.pt"))
    cfg.loss.superpoint_point_targets = False
    cfg.optim.epochs += 1
    with pytest.raises(UserError, match=r"optim\.epochs"):
        check_resumable(cfg, stored, Path("old.pt"))
    cfg.optim.epochs -= 1
    cfg.data.scenes, cfg.data.targets = "/moved/x", "/moved/y"  # the data moved: the same run
    check_resumable(cfg, stored, Path("old.pt"))
    for key, value in (("voxel_samples", True), ("max_points", 30000), ("val", ["scene0009_00"])):
        setattr(cfg.data, key, value)  # what it samples changed: another run
        with pytest.raises(UserError, match=rf"data\.{key} "):
            check_resumable(cfg, stored, Path("old.pt"))
        setattr(cfg.data, key, stored["data"][key])


def test_missing_data_is_named(tmp_path, synth_root):
    cfg = load_config(CONFIG, [f"data.scenes={tmp_path / 'nope'}", f"data.targets={tmp_path}"])
    with pytest.raises(UserError, match=r"'data\.scenes'.*does not exist"):
        Trainer(cfg)
    cfg = load_config(CONFIG, [f"data.scenes={synth_root}", f"data.targets={tmp_path}", "data.train=[scene0000_00]"])
    with pytest.raises(UserError, match="no fused features for scene0000_00"):
        Trainer(cfg)


# ---------------------------------------------------------------- runs on tiny synthetic scenes
@pytest.fixture(scope="module")
def targets(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("targets")
    subprocess.run([str(BIN / "ovseg3d"), "extract", str(synth_root), "--teacher", "simulated", "--out", str(out),
                    "--stride", "6", "--teacher-option", "patch=32"], check=True, capture_output=True)
    return out


def _cfg(synth_root, targets, out, *extra):
    return load_config(CONFIG, [f"data.scenes={synth_root}", f"data.targets={targets}", f"out={out}",
                                "data.max_points=2500", "data.train=[scene0000_00,scene0001_00]", "threads=1",
                                "optim.epochs=2", *extra])


def test_one_epoch_smoke_run_writes_a_loadable_checkpoint(synth_root, targets, tmp_path, capsys):
    cfg = _cfg(synth_root, targets, tmp_path, "optim.epochs=1", "data.val=[scene0001_00]", "name=smoke")
    path = train(cfg)
    # the test world's points are 10 cm apart, the config's voxels 5 cm: the trainer says so
    assert "have no occupied neighbour" in capsys.readouterr().out
    student, data = load_student(path, "cpu")
    assert data["label_set"] == "scannet20" and data["feature_dim"] == 512
    assert data["config"]["optim"]["epochs"] == 1
    assert (tmp_path / "smoke" / "config.yaml").exists()
    log = (tmp_path / "smoke" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,loss") and len(log) == 2
    feats = student.predict(torch.rand(100, 3).numpy())
    assert feats.shape == (100, 512) and torch.isfinite(feats).all()


def _train_cmd(synth_root, targets, out, name, *extra):
    return [str(BIN / "ovseg3d-train"), "--config", str(CONFIG), f"data.scenes={synth_root}",
            f"data.targets={targets}", f"out={out}", f"name={name}", "data.max_points=2500",
            "data.train=[scene0000_00,scene0001_00]", "threads=1", "optim.epochs=2", *extra]


# MinkowskiEngine's CPU kernels use the system OpenMP runtime, not torch's: only OMP_NUM_THREADS
# (set before the process starts) makes them single-threaded and so bit-reproducible.
DETERMINISTIC = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_resume_gives_the_same_weights(synth_root, targets, tmp_path):
    subprocess.run(_train_cmd(synth_root, targets, tmp_path, "straight"), check=True, capture_output=True,
                   env=DETERMINISTIC, timeout=600)
    proc = subprocess.Popen(_train_cmd(synth_root, targets, tmp_path, "resumed"), env=DETERMINISTIC,
                            preexec_fn=interruptible,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "resumed" / "log.csv"
    end = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < end:
        if log.exists() and len(log.read_text().splitlines()) >= 2:  # epoch 1 logged, after last.pt
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["train"]["epoch"] == 0
    done = subprocess.run(_train_cmd(synth_root, targets, tmp_path, "resumed"), capture_output=True, text=True,
                          env=DETERMINISTIC, timeout=600)
    assert done.returncode == 0 and "resuming after epoch 1" in done.stdout
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_checkpoint_without_training_state_is_refused_and_kept(synth_root, targets, tmp_path):
    """A last.pt holding weights only (say, a best.pt copied over it) cannot resume exactly: a clear
    error naming the way out, and the file stays as it was."""
    cfg = _cfg(synth_root, targets, tmp_path, "name=weights_only")
    last = tmp_path / "weights_only" / "last.pt"
    last.parent.mkdir()
    save_checkpoint(last, Student(student_config(cfg)), to_dict(cfg), "scannet20")
    before = last.read_bytes()
    with pytest.raises(UserError, match=r"no training state .* student\.init="):
        train(cfg)
    assert last.read_bytes() == before


def test_self_distillation_snapshots_and_frozen_adapter(synth_root, targets, tmp_path):
    """SAS temporal ensembling and superpoint point targets, HAS-KD experts, GeoGuide's adapter and
    relation consistency train together, and a frozen backbone stays exactly as initialised while
    its adapter learns."""
    cfg = _cfg(synth_root, targets, tmp_path, "name=all", "data.val=[scene0001_00]", "data.train=[scene0000_00]",
               "loss.temporal_ensembling=0.5", "loss.te_start_epoch=1", "loss.snapshot_experts=0.5",
               "loss.snapshot_every=1", "student.adapter_hidden=32", "loss.relation=0.1", "loss.instance_masks=0.1",
               "loss.superpoint_point_targets=true")
    first = train(cfg)
    log = (tmp_path / "all" / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    row2 = dict(zip(header, log[2].split(",")))
    assert float(row2["loss_temporal_ensembling"]) > 0 and row2["loss_snapshot_experts"] != ""
    assert float(row2["loss_relation"]) > 0 and float(row2["loss_instance_masks"]) > 0
    assert len(read_checkpoint(first)["train"]["experts"]) == 2
    with pytest.raises(UserError, match=r"loss\.relation 0\.1 -> 0\.2"):  # resuming under another loss: refused
        train(_cfg(synth_root, targets, tmp_path, "name=all", "data.val=[scene0001_00]", "data.train=[scene0000_00]",
                   "loss.temporal_ensembling=0.5", "loss.te_start_epoch=1", "loss.snapshot_experts=0.5",
                   "loss.snapshot_every=1", "student.adapter_hidden=32", "loss.relation=0.2",
                   "loss.instance_masks=0.1", "loss.superpoint_point_targets=true"))
    frozen = train(_cfg(synth_root, targets, tmp_path, "name=frozen", "optim.epochs=1", "data.train=[scene0000_00]",
                        "student.adapter_hidden=32", f"student.init={first}", "student.freeze_backbone=true"))
    a, b = read_checkpoint(first)["state_dict"], read_checkpoint(frozen)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("net."))
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("adapter."))


def test_affinity_student_trains_and_drives_pooling(synth_root, targets, tmp_path):
    # a colour teacher under a geometry-only affinity student: each network gets the input it was built for
    teacher = train(_cfg(synth_root, targets, tmp_path, "name=teacher", "optim.epochs=1", "student.input=color"))

    def affinity_config(epochs: int):
        return load_config(CONFIG, [f"data.scenes={synth_root}", f"out={tmp_path}", "name=aff", "task=affinity",
                                    f"affinity.teacher={teacher}", "affinity.anchors=512", f"optim.epochs={epochs}",
                                    "threads=1", "data.train=[scene0000_00]", "data.targets="])

    affinity = train(affinity_config(2))
    log = (tmp_path / "aff" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and float(log[1].split(",")[1]) > 0
    student, data = load_student(affinity, "cpu")
    assert data["role"] == "affinity" and student.cfg.arch == "MinkUNetSmall" and student.cfg.feature_dim == 128
    before = (affinity.read_bytes(), (tmp_path / "aff" / "config.yaml").read_text())
    assert train(affinity_config(2)) == affinity  # finished: nothing more to train, nothing rewritten
    assert before[0] == affinity.read_bytes() and len((tmp_path / "aff" / "log.csv").read_text().splitlines()) == 3
    # asking the finished run for more epochs would keep its 2-epoch cosine schedule: refused, nothing changed
    longer = affinity_config(3)
    with pytest.raises(UserError, match=r"optim\.epochs 2 -> 3"):
        train(longer)
    assert before == (affinity.read_bytes(), (tmp_path / "aff" / "config.yaml").read_text())
    train(longer, fresh=True)  # --fresh starts over: a new log, not the old one continued
    assert len((tmp_path / "aff" / "log.csv").read_text().splitlines()) == 4
    out = tmp_path / "pred"
    proc = subprocess.run([str(BIN / "ovseg3d"), "infer", str(synth_root / "scene0001_00"), "--checkpoint",
                           str(teacher), "--pooling", "--affinity", str(affinity), "--pooling-steps", "2",
                           "--out", str(out), "--no-pictures"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "scene0001_00.npz").exists()


def test_contrastive_loss_prefers_the_matching_teacher_feature():
    from types import SimpleNamespace

    import numpy as np

    from ovseg3d_train.affinity import contrastive_loss

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (300, 3))
    teacher = torch.randn(300, 8)
    cfg = SimpleNamespace(affinity=SimpleNamespace(anchors=64, pool=128, global_negatives=8, local_negatives=4,
                                                   local_k=8, tau=0.07))
    good = contrastive_loss(teacher.clone(), teacher, pts, cfg, np.random.default_rng(1))
    bad = contrastive_loss(torch.randn(300, 8), teacher, pts, cfg, np.random.default_rng(1))
    assert good.item() < 0.1 < bad.item()


def test_two_process_gloo_ddp(synth_root, targets, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "ovseg3d_train.cli",
           "--config", str(CONFIG), f"data.scenes={synth_root}", f"data.targets={targets}", f"out={tmp_path}",
           "name=ddp", "data.max_points=2500", "data.train=[scene0000_00,scene0001_00]", "optim.epochs=1", "threads=1",
           "device=cpu"]  # gloo, also on a machine with one GPU (two NCCL ranks cannot share it)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout

    sums = [json.loads((tmp_path / "ddp" / f"replica{r}.json").read_text()) for r in (0, 1)]
    assert sums[0]["world"] == 2 and sums[0]["param_sum"] == sums[1]["param_sum"]
    load_student(tmp_path / "ddp" / "last.pt", "cpu")


def test_train_cli_bad_config_is_one_line(tmp_path):
    proc = subprocess.run([str(BIN / "ovseg3d-train"), "--config", str(CONFIG), "optim.epoch=3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown config key 'optim.epoch'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_segment_majority_by_hand():
    from ovseg3d.geometry.voxels import segment_majority

    values = [5, 5, 2, 7, 7, 3, 3, 9]
    segments = [0, 0, 0, 1, 1, 1, 1, 3]  # segment 1: a tie (7 twice, 3 twice) -> the smaller; 2: empty
    assert segment_majority(values, segments, 4).tolist() == [5, 3, -1, 9]


def test_voxel_samples_carry_each_voxels_mean_target(synth_root, targets, tmp_path):
    """``data.voxel_samples``: one point per student voxel, its points' centroid and mean unit teacher feature."""
    import numpy as np

    from ovseg3d.geometry.voxels import voxelize
    from ovseg3d_train.data import DistillDataset

    cfg = _cfg(synth_root, targets, tmp_path, "data.voxel_samples=true", "student.voxel_size=0.2",
               "data.max_points=1000000")
    per_point = DistillDataset(_cfg(synth_root, targets, tmp_path, "data.max_points=1000000"), ["scene0000_00"])
    per_voxel = DistillDataset(cfg, ["scene0000_00"])
    p = per_point.sample(0, 0, augment=False)
    v = per_voxel.sample(0, 0, augment=False)
    vox = voxelize(p.points, 0.2)
    assert len(v.points) == vox.num_voxels < len(p.points)
    k = int(np.bincount(vox.point_to_voxel).argmax())  # the fullest voxel
    inside = vox.point_to_voxel == k
    row = int(np.flatnonzero((np.floor(v.points / 0.2).astype(int) == vox.coords[k]).all(1))[0])
    assert np.allclose(v.points[row], p.points[inside].mean(0), atol=1e-5)
    seen = p.mask.numpy() & inside
    assert bool(v.mask[row]) == bool(seen.any())
    if seen.any():
        want = torch.nn.functional.normalize(p.target[torch.from_numpy(seen)], dim=1).mean(0)
        assert torch.allclose(v.target[row].float(), want, atol=2e-3)
    assert int(v.superpoints[row]) in set(p.superpoints[torch.from_numpy(inside)].tolist())


def test_unformed_outputs_give_the_formed_losses_and_gradients():
    """Losses on (inputs, weight, bias) equal those on the formed x @ W + b, values and gradients."""
    from ovseg3d_train.affine_features import AffineFeatures
    from ovseg3d_train.losses import instance_distillation

    g = torch.Generator().manual_seed(0)
    n, c, d = 400, 12, 64
    x0, w0, b0 = torch.randn(n, c, generator=g), torch.randn(c, d, generator=g) * 0.3, torch.randn(d, generator=g)
    target = torch.randn(n, d, generator=g)
    mask = torch.rand(n, generator=g) > 0.2
    sp = torch.randint(0, 30, (n,), generator=g) * 7  # sparse ids
    mean = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0) * 0.8
    inst = torch.randint(0, 9, (n,), generator=g)
    ids, text = torch.arange(1, 9), torch.randn(5, d, generator=g)
    inst_target = torch.nn.functional.normalize(torch.randn(8, d, generator=g), dim=1)
    usable, labels = torch.tensor([True] * 7 + [False]), torch.tensor([0, 1, 2, 3, 4, -1, 2, 1])

    def run(unformed: bool):
        x, w, b = (t.clone().requires_grad_(True) for t in (x0, w0, b0))
        pred = AffineFeatures(x, w, b) if unformed else x @ w + b
        losses = [cosine_distillation(pred, target, mask, mean), cosine_distillation(pred, target),
                  superpoint_distillation(pred, target, sp, mask, mean=mean),
                  superpoint_distillation(pred, target, sp, mask, uncertainty=True),
                  *instance_distillation(pred, inst, ids, inst_target, usable, labels, text)]
        sum(losses).backward()
        return torch.stack([v.detach() for v in losses]), x.grad, w.grad, b.grad

    formed, unformed = run(False), run(True)
    assert torch.allclose(formed[0], unformed[0], atol=1e-5), (formed[0], unformed[0])
    for a, b in zip(formed[1:], unformed[1:]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert (formed[0] > 0).all()


def test_sas_losses_from_shared_superpoint_means_equal_their_per_point_forms():
    """The training step's SAS terms (eq. 10's point loss, the superpoint loss) from one set of
    per-superpoint teacher means equal the same losses on targets formed per point: values and
    gradients, on formed and unformed outputs."""
    from ovseg3d_train.affine_features import AffineFeatures
    from ovseg3d_train.losses import segment_targets, superpoint_target_distillation

    g = torch.Generator().manual_seed(1)
    n, c, d = 500, 10, 48
    x0, w0, b0 = torch.randn(n, c, generator=g), torch.randn(c, d, generator=g) * 0.3, torch.randn(d, generator=g)
    target = torch.randn(n, d, generator=g)
    mask = torch.rand(n, generator=g) > 0.3
    sp = torch.randint(0, 40, (n,), generator=g) * 3
    sp[:25] = 1000  # a superpoint no camera saw: no target, so eq. 10 gives its points none
    mask[:25] = False
    mean = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0) * 0.8

    def run(unformed: bool, shared: bool):
        x, w, b = (t.clone().requires_grad_(True) for t in (x0, w0, b0))
        pred = AffineFeatures(x, w, b) if unformed else x @ w + b
        if shared:
            st = segment_targets(target, sp, mask)
            losses = [superpoint_target_distillation(pred, st, mean),
                      superpoint_distillation(pred, target, sp, mask, mean=mean, segments=st)]
        else:  # the per-point reference: eq. 10's targets formed on every point
            t, m = superpoint_targets(target, sp, mask)
            assert not m[:25].any()
            rows, unit = pred - mean, torch.nn.functional.normalize(target, dim=1) - mean  # SAS's superpoint loss
            sp_loss = torch.stack([1 - torch.nn.functional.cosine_similarity(
                rows[(sp == k) & mask].mean(0), unit[(sp == k) & mask].mean(0), dim=0) for k in sp[mask].unique()])
            losses = [cosine_distillation(pred, t, m, mean), sp_loss.mean()]
        sum(losses).backward()
        return torch.stack([v.detach() for v in losses]), x.grad, w.grad, b.grad

    reference = run(False, False)
    assert (reference[0] > 0.1).all()
    for unformed in (False, True):
        got = run(unformed, True)
        for a, b in zip(reference, got):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (unformed, a, b)
    # and the shared means are what eq. 10 puts on each point
    st = segment_targets(target, sp, mask)
    t, m = superpoint_targets(target, sp, mask)
    assert torch.equal(st.mean[st.seg][m], t[m])


def test_right_angle_rotations_keep_an_axis_aligned_room_on_the_grid(synth_root, targets, tmp_path):
    """``augment.rotate_z_step=90``: every augmented room is the room turned by a multiple of 90 degrees."""
    import numpy as np

    from ovseg3d_train.data import DistillDataset

    cfg = _cfg(synth_root, targets, tmp_path, "augment.rotate_z_step=90", "augment.flip_x=false",
               "augment.scale=[1.0,1.0]", "augment.jitter=0", "data.max_points=1000000")
    data = DistillDataset(cfg, ["scene0000_00"])
    plain = data.sample(0, 0, augment=False).points.astype(np.float64)
    centre = plain.mean(0)  # the augmentation turns about the mean, taken in float64
    centred = plain - centre
    turns = [np.array([[1, 0], [0, 1]]), np.array([[0, -1], [1, 0]]), np.array([[-1, 0], [0, -1]]),
             np.array([[0, 1], [-1, 0]])]
    for epoch in range(6):
        turned = data.sample(0, epoch).points - centre
        assert any(np.allclose(turned[:, :2], centred[:, :2] @ r.T, atol=1e-4) for r in turns), epoch



def test_random_shift_moves_the_whole_sample_by_less_than_half_a_shift(synth_root, targets, tmp_path):
    """``augment.shift``: each epoch's sample is the room moved by one random vector in [-shift/2, shift/2]^3."""
    import numpy as np

    from ovseg3d_train.data import DistillDataset

    cfg = _cfg(synth_root, targets, tmp_path, "augment.shift=0.1", "augment.rotate_z=false", "augment.flip_x=false",
               "augment.scale=[1.0,1.0]", "augment.jitter=0", "data.max_points=1000000")
    data = DistillDataset(cfg, ["scene0000_00"])
    plain = data.sample(0, 0, augment=False).points
    moves = []
    for epoch in range(4):
        moved = data.sample(0, epoch).points - plain
        assert np.allclose(moved, moved[0], atol=1e-4), epoch  # one vector for the whole room
        assert (np.abs(moved[0]) <= 0.05 + 1e-4).all(), moved[0]
        moves.append(moved[0])
    assert len({tuple(np.round(m, 4)) for m in moves}) == 4  # a new shift every epoch


def test_class_balance_weights_and_teacher_classes_by_hand():
    from ovseg3d_train.config import validate
    from ovseg3d_train.losses import class_balance_weights, teacher_classes

    for bad in ("loss.class_balance=-0.5", "augment.shift=-0.1"):
        with pytest.raises(UserError, match="must be >= 0"):
            validate(load_config(CONFIG, ["data.scenes=x", "data.targets=y", bad]))
    counts = torch.tensor([300, 30, 0, 3])
    w = class_balance_weights(counts, 0.5)
    share = counts.double() / counts.sum()
    assert w[2] == 0  # a class no point has weighs nothing
    assert math.isclose(float((share * w.double()).sum()), 1.0, rel_tol=1e-6)  # mean weight over the points: 1
    assert math.isclose(float(w[3] / w[0]), 10.0, rel_tol=1e-5)  # (300 / 3) ** 0.5
    assert torch.allclose(class_balance_weights(counts, 0.0), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    text = torch.eye(3)
    rows = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, -1.0, 0.5]])
    assert teacher_classes(rows, text).tolist() == [1, 0, 2]


@pytest.mark.parametrize("unformed", [False, True])
def test_class_balanced_point_losses_are_the_weighted_means_of_the_plain_ones(unformed):
    """Weights of one give the plain losses; other weights give the weighted mean of the per-point
    losses (eq. 10's weights are per superpoint, given to each of its points)."""
    from ovseg3d_train.affine_features import AffineFeatures
    from ovseg3d_train.losses import segment_targets, superpoint_target_distillation

    g = torch.Generator().manual_seed(2)
    n, c, d = 400, 8, 32
    x, w, b = torch.randn(n, c, generator=g), torch.randn(c, d, generator=g), torch.randn(d, generator=g)
    pred = AffineFeatures(x, w, b) if unformed else x @ w + b
    formed = x @ w + b
    target = torch.randn(n, d, generator=g)
    mask = torch.rand(n, generator=g) > 0.3
    sp = torch.randint(0, 30, (n,), generator=g)
    st = segment_targets(target, sp, mask)
    ones = torch.ones(len(st.count))
    unweighted = superpoint_target_distillation(pred, st)
    assert torch.allclose(superpoint_target_distillation(pred, st, None, ones), unweighted)
    sp_w = torch.rand(len(st.count), generator=g) * 3
    t, m = superpoint_targets(target, sp, mask)
    per_point = 1 - torch.nn.functional.cosine_similarity(formed[m], t[m], dim=1)
    pw = sp_w[st.seg[m]]
    assert torch.allclose(superpoint_target_distillation(pred, st, None, sp_w), (pw * per_point).sum() / pw.sum(),
                          atol=1e-5)
    point_w = torch.rand(n, generator=g)
    plain = 1 - torch.nn.functional.cosine_similarity(formed[mask], target[mask], dim=1)
    want = (point_w[mask] * plain).sum() / point_w[mask].sum()
    assert torch.allclose(cosine_distillation(pred, target, mask, None, point_w), want, atol=1e-5)
    assert torch.allclose(cosine_distillation(pred, target, mask, None, torch.ones(n)),
                          cosine_distillation(pred, target, mask), atol=1e-6)


def test_class_balance_counts_the_training_rooms_teacher_classes(synth_root, targets, tmp_path):
    """``loss.class_balance``: the trainer weighs each target row by its teacher class's share of the
    training rooms' eq. 10 targets; the commonest class weighs least."""
    from ovseg3d_train.losses import class_balance_weights

    cfg = _cfg(synth_root, targets, tmp_path, "loss.class_balance=0.5", "loss.superpoint_point_targets=true",
               "name=balance")
    t = Trainer(cfg)
    text = t.vocab.class_embeddings().float()
    counts = t.data.teacher_class_counts(text, superpoint_means=True)
    plain = t.data.teacher_class_counts(text, superpoint_means=False)
    # eq. 10 gives targets to points no camera saw, in superpoints that have some
    assert int(counts.sum()) > int(plain.sum()) > 0
    weights = t.class_weights(text)  # each class's text embedding is its own best match
    assert torch.allclose(weights, class_balance_weights(counts, 0.5).to(weights.device))
    seen = counts > 0
    assert int(seen.sum()) >= 5 and weights[counts.argmax()] == weights[seen].min() < 1 < weights[seen].max()
    assert (weights[~seen] == 0).all()
