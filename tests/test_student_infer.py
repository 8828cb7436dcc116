"""Student checkpoints, geometric pooling, the 2D-3D ensemble and `ovseg3d infer`."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg3d.errors import UserError
from ovseg3d.segment.labeling import ensemble_2d_3d
from ovseg3d.student.checkpoint import load_student, save_checkpoint
from ovseg3d.student.model import Student, StudentConfig
from ovseg3d.student.pooling import affinity_matrix, geometric_pooling, propagate
from ovseg3d.text.vocabulary import Vocabulary

OVSEG3D = str(Path(sys.executable).parent / "ovseg3d")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    student = Student(StudentConfig(voxel_size=0.05))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.pt", student, {"note": "test"}, "scannet20")


def test_student_slices_back_to_every_point_in_order(checkpoint):
    student, data = load_student(checkpoint, "cpu")
    pts = np.random.default_rng(0).uniform(0, 2, (500, 3)).astype(np.float32)
    pts[1] = pts[0] + 0.001  # two points in one voxel share its feature
    f = student.predict(pts)
    assert f.shape == (500, 512) and torch.allclose(f[0], f[1])
    assert torch.allclose(student.predict(pts[::-1].copy()).flip(0), f, atol=1e-5)
    assert data["version"] == 1 and data["student"]["voxel_size"] == 0.05


def test_the_stem_kernel_is_an_option_that_old_checkpoints_and_saved_maps_read_as_five(tmp_path):
    """``student.stem_kernel``: a 3^3 stem is a 3^3 convolution, saved and loaded with its student; a
    checkpoint written before the option existed loads with MinkUNet's 5^3 stem, and the fingerprint
    that saved maps record is the one it had before the option existed."""
    import hashlib

    from ovseg3d.student.checkpoint import student_fingerprint

    torch.manual_seed(0)
    small = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=32, voxel_size=0.1, stem_kernel=3))
    assert small.net.stem[0].kernel.shape[0] == 27
    pts = np.random.default_rng(2).uniform(0, 2, (800, 3))
    saved = save_checkpoint(tmp_path / "k3.pt", small, {}, "scannet20")
    loaded, _ = load_student(saved, "cpu")
    assert loaded.cfg.stem_kernel == 3 and torch.allclose(loaded.predict(pts), small.predict(pts), atol=1e-6)

    old = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=32, voxel_size=0.1))
    data = torch.load(save_checkpoint(tmp_path / "k5.pt", old, {}, "scannet20"), weights_only=False)
    del data["student"]["stem_kernel"]  # as written before the option
    torch.save(data, tmp_path / "old.pt")
    before, _ = load_student(tmp_path / "old.pt", "cpu")
    assert before.net.stem[0].kernel.shape[0] == 125
    digest = hashlib.sha256(json.dumps(data["student"], sort_keys=True).encode())
    for name, tensor in sorted(old.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    assert student_fingerprint(before) == student_fingerprint(old) == digest.hexdigest()[:16]
    assert student_fingerprint(small) != student_fingerprint(old)
    for bad in (0, 4):
        with pytest.raises(UserError, match="stem_kernel"):
            StudentConfig(stem_kernel=bad).validate()


@pytest.mark.parametrize("extra", [{"instance_hidden": 16}, {"adapter_hidden": 32}])
def test_features_per_voxel_are_what_every_point_gets(extra):
    """``predict_voxels`` (the live map's: one row per student voxel) against ``predict_instance``."""
    torch.manual_seed(0)
    student = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=32, voxel_size=0.1, **extra)).eval()
    pts = np.random.default_rng(1).uniform(0, 2, (3000, 3))
    pred = student.predict_voxels(pts)
    sem, inst = student.predict_instance(pts)
    assert len(pred.semantic) < len(pts) and pred.index.shape == (len(pts),)
    assert torch.allclose(pred.semantic[pred.index], sem, atol=1e-5)
    assert (pred.instance is None) == (inst is None)
    if inst is not None:
        assert torch.allclose(pred.instance[pred.index], inst, atol=1e-5)


@pytest.mark.parametrize("inputs", ["height", "color_height"])
def test_a_height_student_reads_how_high_a_voxel_is_and_nothing_finer(inputs):
    """Occupancy alone is the same for a shape and the shape lifted by whole voxels (convolutions are
    translation-invariant); with height input the lift changes the answer, a move inside the voxels
    does not (the voxel centre's z: a function of the cell, as the live map's update logic needs)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    cells = np.unique(rng.integers(0, 10, (800, 3)), axis=0)
    pts = (cells + 0.5) * 0.1  # voxel centres: lifting them stays clear of cell borders
    colors = rng.integers(0, 256, (len(cells), 3), dtype=np.uint8)
    lifted = pts + np.array([0.0, 0.0, 1.6])  # 16 voxels up: the U-Net's coarsest grid (stride 16) stays aligned
    inside = (cells + rng.uniform(0.1, 0.9, pts.shape)) * 0.1  # the same cells, other points
    students = {name: Student(StudentConfig(arch="MinkUNetSmall", feature_dim=16, voxel_size=0.1, input=name))
                .eval() for name in ("occupancy", inputs)}
    same = {name: torch.allclose(s.predict(pts, colors), s.predict(lifted, colors), atol=1e-5)
            for name, s in students.items()}
    assert same == {"occupancy": True, inputs: False}
    assert torch.allclose(students[inputs].predict(pts, colors), students[inputs].predict(inside, colors), atol=1e-5)
    if inputs == "color_height":
        with pytest.raises(UserError, match="colour input"):
            students[inputs].predict(pts)


def test_the_demo_can_train_a_student_on_every_input():
    from ovseg3d.commands.demo import INPUT_WORDS
    from ovseg3d.student.model import INPUTS

    assert set(INPUT_WORDS) == set(INPUTS)


def test_the_student_runs_without_minkowski_engine_notices_users_cannot_act_on():
    """ME's CPU-only notice (expected where torch sees no GPU) and torch's deprecation that ME's own
    sparse-matrix code triggers at every forward pass stay out of every command's output."""
    code = ("import numpy as np; from ovseg3d.student.model import Student, StudentConfig; "
            "print(Student(StudentConfig()).predict(np.random.rand(500, 3).astype('float32')).shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "[500, 512]" in proc.stdout, proc.stderr
    assert "SparseTensor" not in proc.stderr
    if not torch.cuda.is_available():
        assert "CPU_ONLY" not in proc.stderr


def test_bad_checkpoints_are_clear_errors(tmp_path, checkpoint):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError, match="not a valid ovseg3d student checkpoint"):
        load_student(junk)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    empty, text = tmp_path / "empty.pt", tmp_path / "text.pt"
    empty.write_bytes(b"")
    text.write_text("hello world\n")
    for bad in (cut, empty, text):  # torch's own messages here are bare ("", "101", "Invalid argument")
        with pytest.raises(UserError, match=r"not a valid ovseg3d student checkpoint \(not written by torch.save"):
            load_student(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="not an ovseg3d student checkpoint"):
        load_student(other)
    data = torch.load(checkpoint, weights_only=True)
    data["state_dict"].pop("net.head.kernel")
    broken = tmp_path / "broken.pt"
    torch.save(data, broken)
    with pytest.raises(UserError, match="weights do not fit"):
        load_student(broken)
    with pytest.raises(UserError, match="does not exist"):
        load_student(tmp_path / "missing.pt")
    student, _ = load_student(checkpoint, "cpu")
    for bad in (np.zeros((0, 3)), np.full((4, 3), np.nan), np.zeros((4, 2))):
        with pytest.raises(UserError):
            student.predict(bad)


def test_a_failed_save_keeps_the_checkpoint_it_would_replace(tmp_path, checkpoint):
    path = tmp_path / "student.pt"
    path.write_bytes(checkpoint.read_bytes())
    student, _ = load_student(path, "cpu")
    with pytest.raises((pickle.PicklingError, AttributeError)):  # an unpicklable config fails mid-write
        save_checkpoint(path, student, {"hook": lambda: 0}, "scannet20")
    assert path.read_bytes() == checkpoint.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.pt"]  # no temporary file left behind


def test_geometric_pooling_smooths_within_geometry_not_across():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 0.3, (60, 3))
    b = rng.uniform(0, 0.3, (60, 3)) + np.array([2.0, 0, 0])  # far away: never a neighbour of a
    pts = np.concatenate([a, b])
    feats = torch.zeros(120, 2)
    feats[:60, 0] = 1.0
    feats[60:, 1] = 1.0
    feats[5] = torch.tensor([0.0, 1.0])  # a wrong feature inside cluster a
    aff = torch.zeros(120, 4)
    aff[:60, 0] = 1.0
    aff[60:, 1] = 1.0  # affinity features say which object a point belongs to
    A = affinity_matrix(pts, aff, k=16, sharpen=20.0)
    assert torch.allclose(A.to_dense().sum(1), torch.ones(120), atol=1e-5)  # row-stochastic
    out = geometric_pooling(pts, feats, aff, k=16, steps=5)
    assert out[5, 0] > out[5, 1]  # the outlier is pulled to its object's feature
    assert (out[60:, 0] < 1e-6).all()  # nothing leaks into the other object
    assert torch.equal(geometric_pooling(pts, feats, aff, steps=0), feats)


def test_pooling_over_seen_points_only_fills_unseen_ones_from_their_object():
    """GeoPurify pools fused 2D features, which unseen points lack: their zeros must not dilute anything."""
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform(0, 0.3, (60, 3)), rng.uniform(0, 0.3, (60, 3)) + np.array([2.0, 0, 0])])
    aff = torch.zeros(120, 2)
    aff[:60, 0] = aff[60:, 1] = 1.0
    feats = torch.zeros(120, 2)
    feats[:60, 0] = 3.0
    seen = torch.ones(120, dtype=torch.bool)
    seen[::3] = False  # a third of each object unseen: no feature there
    seen[60:] = False  # and nothing at all of the second object
    feats[~seen] = 0.0
    A = affinity_matrix(pts, aff, k=16, sharpen=20.0)
    steps = dict((t, (f, r)) for t, f, r in propagate(A, feats, [4, 1, 2], valid=seen))
    assert sorted(steps) == [1, 2, 4]
    f, reached = steps[4]
    assert reached[:60].all() and not reached[60:].any()  # nothing seen reaches the second object
    assert torch.allclose(f[:60], torch.tensor([3.0, 0.0]).expand(60, 2), atol=1e-5)  # a mean, not diluted
    assert (f[60:] == 0).all()
    plain = next(propagate(A, feats, [4]))[1]  # without the mask the unseen zeros pull the mean down
    assert plain[:60, 0].mean() < 2.9
    assert torch.allclose(geometric_pooling(pts, feats, aff, k=16, steps=4, valid=seen), f)
    with pytest.raises(UserError, match="pooling needs"):
        geometric_pooling(pts, feats, aff, k=0)


def test_ensemble_keeps_the_more_confident_feature():
    vocab = Vocabulary(["a", "b"], torch.eye(2), torch.arange(2))
    f3d = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    f2d = torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([True, True, False])
    out, chose = ensemble_2d_3d(f3d, f2d, mask, vocab)
    assert chose.tolist() == [False, True, False]
    assert torch.allclose(out[1], f2d[1]) and torch.allclose(out[2], f3d[2])


def test_infer_modes(synth_root, checkpoint, tmp_path):
    feats = tmp_path / "feat"
    subprocess.run([OVSEG3D, "extract", str(synth_root), "--teacher", "simulated", "--out", str(feats), "--stride",
                    "8", "--teacher-option", "patch=32"], check=True, capture_output=True)
    for mode in ("3d", "2d", "ensemble"):
        out = tmp_path / mode
        proc = subprocess.run([OVSEG3D, "infer", str(synth_root / "scene0000_00"), "--checkpoint", str(checkpoint),
                               "--features", str(feats), "--mode", mode, "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        pred = np.load(out / "scene0000_00.npz")
        assert pred["labels"].shape == pred["scores"].shape and len(pred["names"]) == 20
        assert (out / "scene0000_00.png").exists() and (out / "scene0000_00.ply").exists()
    unseen = np.load(tmp_path / "2d" / "scene0000_00.npz")["labels"] == -1
    assert unseen.any()  # unseen points: no label
    assert (np.load(tmp_path / "3d" / "scene0000_00.npz")["labels"] >= 0).all()
    # GeoPurify's own use: the student's backbone guides pooling of the fused 2D features, which
    # then reach points no camera saw
    out = tmp_path / "2d-pooled"
    proc = subprocess.run([OVSEG3D, "infer", str(synth_root / "scene0000_00"), "--checkpoint", str(checkpoint),
                           "--features", str(feats), "--mode", "2d", "--pooling", "--pooling-k", "8",
                           "--pooling-steps", "3", "--out", str(out), "--no-pictures"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pooled = np.load(out / "scene0000_00.npz")["labels"]
    assert (pooled[unseen] >= 0).sum() > 0 and (pooled[~unseen] >= 0).all()
    report = json.loads((out / "infer.json").read_text())["pooling"]
    assert report == {"k": 8, "sharpen": 20.0, "steps": 3, "affinity": "student backbone"}


@pytest.mark.parametrize("args,message", [
    (["--mode", "3d"], "needs --checkpoint"),
    (["--mode", "2d"], "needs --features"),
    (["--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["--mode", "2d", "--features", "/tmp", "--pooling"], "--pooling needs --affinity"),
    (["--checkpoint", "/nonexistent.pt", "--pooling", "--pooling-steps", "-1"], "pooling needs K >= 1"),
])
def test_infer_bad_input(synth_root, tmp_path, args, message):
    proc = subprocess.run([OVSEG3D, "infer", str(synth_root), "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_labelling_uses_the_text_encoder_the_student_was_trained_against():
    """infer, query and replay: the checkpoint's CLIP model and weights unless others are given."""
    from ovseg3d.text.clip_model import checkpoint_text_encoder

    ckpt = {"config": {"clip_model": "ViT-B-32", "clip_weights": "/models/clip.pt"}}
    chosen = checkpoint_text_encoder(ckpt)
    assert (chosen.model, chosen.pretrained) == ("ViT-B-32", "/models/clip.pt")
    given = checkpoint_text_encoder(ckpt, "RN50", "/other.pt")
    assert (given.model, given.pretrained) == ("RN50", "/other.pt")
    plain = checkpoint_text_encoder({"config": {}})
    assert (plain.model, plain.pretrained) == ("ViT-B-16", None)
