"""The node's pipeline without ROS: incremental student updates, relabelling, queries, instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg3d.errors import UserError
from ovseg3d.segment.instances import connected_label_groups, stable_ids
from ovseg3d.segment.live_map import LiveConfig, LiveSegmenter
from ovseg3d.student.model import Student, StudentConfig
from ovseg3d.text.vocabulary import Vocabulary


class CountingStudent(Student):
    """A real (random) student that records how many points each prediction ran on."""

    calls: list[int]

    def predict_voxels(self, points, colors=None):
        self.calls.append(len(points))
        return super().predict_voxels(points, colors)


def _live(**cfg) -> LiveSegmenter:
    torch.manual_seed(0)
    student = CountingStudent(StudentConfig(arch="MinkUNetSmall", feature_dim=8, voxel_size=0.1))
    student.calls = []
    vocab = Vocabulary(["wall", "chair", "table"], torch.nn.functional.normalize(torch.randn(3, 8), dim=1),
                       torch.arange(3))
    return LiveSegmenter(student.eval(), vocab, LiveConfig(voxel_size=0.05, context=0.5, instance_min_points=5,
                                                           **cfg))


def _box(centre, n=400, size=0.4, seed=0):
    return np.random.default_rng(seed).uniform(-size / 2, size / 2, (n, 3)) + np.asarray(centre)


def test_updates_run_only_near_what_changed():
    live = _live()
    live.add_points(_box([0, 0, 0]), stamp=1.0, sensor_origin=np.zeros(3))
    live.add_points(_box([5, 5, 0], seed=1), stamp=1.0, sensor_origin=np.zeros(3))
    first = live.update()
    assert first.points == len(live.map) and (live.map.labels >= 0).all()
    assert live.update() is None  # nothing changed
    far_labels = live.map.labels.copy()
    live.add_points(_box([5, 5, 0.5], n=50, size=0.1, seed=2), stamp=2.0, sensor_origin=np.zeros(3))
    second = live.update()
    near_far = np.linalg.norm(live.map.points[:, :2] - [5, 5], axis=1) < 1.0
    assert second.points == near_far.sum() < len(live.map)  # the box at the origin was not rerun
    assert second.stamp == 2.0 and live.student.calls == [first.points, second.points]
    assert (live.map.labels[: len(far_labels)][~near_far[: len(far_labels)]]
            == far_labels[~near_far[: len(far_labels)]]).all()


def test_the_map_is_not_idle_while_an_update_labels_its_changes():
    """From the moment an update takes the map's changes until it writes their labels, the map is
    clean but not labelled: ``idle()`` must say so (a replay that read only the clean map scored the
    previous labels, 4.6 mIoU off), and a failed update gives its changes back."""
    import threading

    live = _live()
    live.add_points(_box([0, 0, 0]), stamp=1.0, sensor_origin=np.zeros(3))
    running, release = threading.Event(), threading.Event()
    predict = live.student.predict_voxels

    def gated(points, colors=None):  # the real student, held at its start until the test has looked
        running.set()
        release.wait(30)
        return predict(points, colors)

    live.student.predict_voxels = gated
    assert not live.idle()
    worker = threading.Thread(target=live.update)
    worker.start()
    assert running.wait(30)
    assert not live.map.dirty.any() and (live.map.labels < 0).all()  # changes taken, labels not written
    assert not live.idle() and live.clean_stamp() is None and live.version == 0
    release.set()
    worker.join(30)
    assert live.idle() and live.version == 1 and (live.map.labels >= 0).all() and live.clean_stamp() == 1.0

    def out_of_memory(points, colors=None):
        raise RuntimeError("CUDA out of memory (injected)")

    live.add_points(_box([3, 0, 0], seed=1), stamp=2.0, sensor_origin=np.zeros(3))
    new = live.map.labels < 0
    live.student.predict_voxels = out_of_memory
    with pytest.raises(RuntimeError, match="out of memory"):
        live.update()
    assert not live.idle() and live.map.dirty[new].all() and live.version == 1
    live.student.predict_voxels = predict
    assert live.update() is not None and live.idle() and (live.map.labels >= 0).all()


def test_an_update_writes_only_near_the_change_and_revisits_cost_nothing():
    """The student sees a margin of ``context`` around the changed blocks but writes only their
    voxels (a cut-off context would make the margin's predictions worse); re-seen geometry makes
    no update for a geometry-only student."""
    live = _live()
    wall = np.stack(np.meshgrid(np.arange(0, 3, 0.05), [0.0], np.arange(0, 1, 0.05)), -1).reshape(-1, 3) + 0.01
    live.add_points(wall, 1.0, np.zeros(3))
    live.update()
    n = len(live.map)
    before = (live.voxel_codes(), live.map.labels.copy())
    live.add_points(wall[::3], 2.0, np.zeros(3))  # the same surface seen again
    assert live.update() is None and live.student.calls == [n]
    live.add_points([[0.06, 0.06, 0.06]], 3.0, np.zeros(3))  # one new voxel at one end of the wall
    live.update()
    ran = live.student.calls[-1]
    changed = np.flatnonzero((live.voxel_codes()[:n] != before[0]).any(1))
    blocks = np.floor(live.map.points[:n] / 0.25)  # context 0.5: blocks of 0.25 m
    assert len(changed) > 0 and (blocks[changed] == [0, 0, 0]).all()  # written: the new voxel's block only
    near = (np.abs(np.floor(live.map.points / 0.25)) <= 2).all(1)  # run on: two blocks around it
    assert ran == near.sum() < len(live.map)
    assert (live.map.labels >= 0).all()


def test_new_vocabulary_relabels_without_the_student_and_queries_rank():
    live = _live()
    live.add_points(_box([0, 0, 0]), 1.0, np.zeros(3))
    live.update()
    calls = len(live.student.calls)
    feats = live.codec.decode(live.voxel_codes())
    target = torch.nn.functional.normalize(feats[:5].mean(0), dim=0)
    live.set_vocabulary(Vocabulary(["thing", "other"], torch.stack([target, -target]), torch.arange(2)))
    assert len(live.student.calls) == calls and set(np.unique(live.map.labels)) <= {0, 1}
    res = live.query(target, threshold=-1, max_points=10)
    assert len(res.points) == 10 and (np.diff(res.scores) <= 1e-6).all()
    assert res.scores[0] == pytest.approx(float((torch.nn.functional.normalize(feats, dim=1) @ target).max()),
                                          abs=1e-2)
    everything = live.query(target, threshold=0.99)
    assert (everything.scores >= 0.99).all()
    with pytest.raises(UserError, match="8-d"):
        live.query(torch.ones(5))
    with pytest.raises(UserError, match="8-d"):
        live.set_vocabulary(Vocabulary(["a"], torch.ones(1, 4), torch.arange(1)))


def test_rgbd_ingest_respects_depth_limits_and_stride():
    live = _live(depth_stride=2, max_depth=2.0)
    depth = np.full((40, 60), 1.0, np.float32)
    depth[:, 30:] = 3.0  # beyond max_depth
    K = np.array([[50.0, 0, 30], [0, 50.0, 20], [0, 0, 1]])
    live.add_rgbd(depth, K, np.eye(4), 1.0, np.zeros((40, 60, 3), np.uint8))
    z = live.map.points[:, 2]
    assert len(live.map) > 0 and np.allclose(z, 1.0, atol=0.05)
    assert live.map.points[:, 0].max() < 0.05  # only the left half (x < 0 in the camera)
    live.add_rgbd(depth, K, np.eye(4), 2.0, np.zeros((20, 30, 3), np.uint8))  # half-size colour: same view
    with pytest.raises(UserError, match="different aspect ratios"):  # another view: refused
        live.add_rgbd(depth, K, np.eye(4), 3.0, np.zeros((10, 10, 3), np.uint8))


def test_a_sweep_in_its_sensor_frame_maps_like_the_same_points_in_the_world():
    rng = np.random.default_rng(3)
    sweep = rng.uniform(-8, 8, (10_000, 3))
    sweep[::50] = np.nan  # organised clouds carry NaN rows
    a = 0.4
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    pose[:3, 3] = [2.0, -1.0, 0.3]
    by_scan, by_points = _live(lidar_min_range=1.0, lidar_max_range=6.0), _live(lidar_min_range=1.0,
                                                                                  lidar_max_range=6.0)
    by_scan.add_scan(sweep, pose, stamp=1.0)
    by_points.add_points(sweep @ pose[:3, :3].T + pose[:3, 3], stamp=1.0, sensor_origin=pose[:3, 3])
    dist = np.linalg.norm(sweep, axis=1)
    kept = (dist >= 1.0) & (dist <= 6.0)
    assert by_scan.map.count.sum() == by_points.map.count.sum() == kept.sum() > 1000
    assert np.array_equal(np.sort(by_scan.map.keys), np.sort(by_points.map.keys))
    far = np.linalg.norm(by_scan.map.points - pose[:3, 3], axis=1)
    assert far.max() <= 6.0 + 1e-6 and far.min() >= 1.0 - 1e-6


def test_warming_up_the_student_leaves_the_map_alone():
    live = _live()
    live.add_points(_box([0, 0, 0]), stamp=1.0, sensor_origin=np.zeros(3))
    before, version = live.map.keys.copy(), live.version
    assert live.warm_up() > 0
    assert np.array_equal(live.map.keys, before) and live.version == version and live.map.dirty.all()


_FIRST_CALLS = """
import sys
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from ovseg3d.segment.live_map import LiveConfig, LiveSegmenter
from ovseg3d.student.model import Student, StudentConfig
from ovseg3d.text.vocabulary import Vocabulary


def variants():
    return {f"{m.__name__}.{k}": len(v.signatures) for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith("ovseg3d")
            for k, v in vars(m).items() if isinstance(v, numba.core.registry.CPUDispatcher)}


torch.manual_seed(0)
vocab = Vocabulary(["wall", "chair"], torch.nn.functional.normalize(torch.randn(2, 8), dim=1), torch.arange(2))
student = Student(StudentConfig(arch="MinkUNetSmall", feature_dim=8, voxel_size=0.1)).eval()
live = LiveSegmenter(student, vocab, LiveConfig(voxel_size=0.05, instance_min_points=5))
live.warm_up()
warm = variants()
rng = np.random.default_rng(0)
live.add_points(np.concatenate([rng.uniform(-0.3, 0.3, (2000, 3)), rng.uniform(1.7, 2.3, (2000, 3))]), 1.0,
                np.zeros(3))
K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
depth, rgb = np.full((48, 64), 1.5, np.float32), np.full((48, 64, 3), 90, np.uint8)
live.add_rgbd(depth, K, np.eye(4), 2.0, rgb)
with ThreadPoolExecutor(1) as helper:
    live.add_rgbd(depth, K, np.eye(4), 2.5, rgb, helper=helper)
pose = np.eye(4)
pose[:3, 3] = [0.1, 0, 0]
live.add_scan(rng.normal(size=(500, 3)).astype(np.float32) * 3, pose, 3.0)
live.update()
live.query(vocab.embeddings[0], max_points=100)
live.set_vocabulary(Vocabulary(["a", "b", "c"], torch.nn.functional.normalize(torch.randn(3, 8), dim=1),
                               torch.arange(3)))
assert len(live.instances) > 0
print({k: (warm.get(k, 0), n) for k, n in variants().items() if n != warm.get(k, 0)})
"""


def test_after_the_warm_up_no_first_call_compiles_a_kernel():
    """Ingest (points, RGB-D with and without the helper thread, a sweep), an update with its
    regrouping, a query and a relabel compile no numba kernel the warm-up did not (a fresh
    interpreter: compiling one holds the GIL for a second or more on a fresh install)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FIRST_CALLS], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "{}", proc.stdout


def test_instances_group_touching_same_label_cells_with_stable_ids():
    pts = np.concatenate([_box([0, 0, 0], 300), _box([0.25, 0, 0], 300, seed=1), _box([3, 0, 0], 300, seed=2),
                          _box([6, 0, 0], 3, seed=3)])
    labels = np.array([1] * 600 + [1] * 300 + [2] * 3)
    groups = connected_label_groups(pts, labels, cell=0.1, min_points=5)
    assert groups[:600].min() == groups[:600].max() == 0  # the two touching boxes are one instance
    assert (groups[600:900] == 1).all() and (groups[900:] == -1).all()  # far box separate; tiny one dropped
    assert (connected_label_groups(pts, labels, 0.1, 5, ignore={1})[:900] == -1).all()
    ids, next_id = stable_ids(groups, np.full(len(groups), -1), 0)
    assert set(ids[:900]) == {0, 1} and next_id == 2
    swapped = np.where(groups == 0, 1, np.where(groups == 1, 0, groups))  # same groups, other order
    again, next_id = stable_ids(swapped, ids, next_id)
    assert (again == ids).all() and next_id == 2


def test_keyframes_by_motion_turn_or_time():
    from ovseg3d.segment.keyframes import KeyframeGate

    gate = KeyframeGate(min_translation=0.05, min_rotation_deg=5.0, max_interval=1.0)
    pose = np.eye(4)
    assert gate.take(pose, 0.0)  # the first frame
    assert not gate.take(pose, 0.033)  # still, 30 Hz later
    moved = pose.copy()
    moved[0, 3] = 0.06
    assert gate.take(moved, 0.066)
    turn = moved.copy()
    c, s = np.cos(np.radians(6)), np.sin(np.radians(6))
    turn[:2, :2] = [[c, -s], [s, c]]
    assert not gate.take(moved, 0.1) and gate.take(turn, 0.133)
    assert not gate.take(turn, 1.0) and gate.take(turn, 1.2)  # a still camera, once a second
    assert gate.take(turn, 0.5)  # time went back (a bag restarted): taken, not waited for
    every = KeyframeGate(min_translation=0.0)
    assert all(every.take(pose, t) for t in (0.0, 0.01, 0.02))
    capped = KeyframeGate(min_interval=0.1)  # a fast robot: every 30 Hz frame moved more than 5 cm
    far = [np.eye(4) for _ in range(7)]
    for i, f in enumerate(far):
        f[0, 3] = 0.1 * i
    taken = [capped.take(f, i / 30) for i, f in enumerate(far)]
    assert taken == [True, False, False, True, False, False, True]  # 10 Hz at most (0.1 s counts)
    assert capped.take(far[0], 0.05)  # time went back: taken


def test_the_rate_cap_counts_from_the_last_frame_let_through():
    """Where frames arrive, not from the last keyframe taken (a worker behind its queue would have
    an old one and let every frame in)."""
    from ovseg3d.segment.keyframes import RateCap

    cap = RateCap()
    assert [cap.admit(i / 30, 0.1) for i in range(7)] == [True, False, False, True, False, False, True]
    assert cap.admit(0.05, 0.1)  # time went back: let through, and the reference from then on
    assert not cap.admit(0.1, 0.1)
    cap.clear()
    assert cap.admit(0.1, 0.1) and cap.admit(0.2, 0.0) and cap.admit(0.2, 0.0)


def test_a_frame_is_a_keyframe_only_once_it_is_in_the_map():
    """The node asks before decoding a frame's images; one that then fails (a corrupt image) must
    not become the reference that makes the next good frames at that pose be skipped."""
    live = _live()
    pose, K = np.eye(4), np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    assert live.is_keyframe(pose, 0.0) and live.is_keyframe(pose, 0.03)  # asked, never integrated
    live.add_rgbd(np.full((48, 64), 1.5), K, pose, 0.03)
    assert len(live.map) > 0 and not live.is_keyframe(pose, 0.06)  # integrated: the next still frame is not
    far = pose.copy()
    far[0, 3] = 1.0
    # the gate's own rate cap (0.1 s) however far the camera went
    assert not live.is_keyframe(far, 0.06) and live.is_keyframe(far, 0.13)


def test_query_answers_only_labelled_voxels():
    live = _live()
    live.add_points(_box([0, 0, 0]), 1.0, np.zeros(3))
    live.update()
    labelled = len(live.map)
    live.add_points(_box([3, 0, 0], seed=4), 2.0, np.zeros(3))  # mapped, not yet run through the student
    t = live.codec.decode(live.voxel_codes()[:1])[0]
    for cap in (0, 10 * len(live.map)):  # "best only" threshold, uncapped and capped above the map's size
        res = live.query(t, threshold=-1, max_points=cap)
        assert len(res.points) == labelled and np.isfinite(res.scores).all()
        assert (np.linalg.norm(res.points - [3, 0, 0], axis=1) > 0.5).all()


@pytest.mark.parametrize("case", ["spread", "ties", "unlabelled", "skewed", "aliased"])
def test_a_capped_answer_holds_the_best_scores_whatever_their_spread(case):
    """The answer cap selects among a sample-made cut (``_best``): the scores it returns are the
    best ``max_points`` of the map, best first, whatever the map's scores look like."""
    from ovseg3d.segment.live_map import _best

    rng = np.random.default_rng(7)
    n, cap = 300_000, 2_000
    scores = rng.normal(size=n).astype(np.float32)
    if case == "ties":  # many voxels share one student voxel's feature: whole groups score alike
        scores = np.round(scores, 1)
    elif case == "unlabelled":  # most of the map not labelled yet: -inf
        scores[rng.random(n) < 0.995] = -np.inf
    elif case == "skewed":  # the best answers all in one stretch the sample strides over
        scores[:] = 0.0
        scores[1000:1000 + cap + 5] = 1.0 + rng.random(cap + 5).astype(np.float32)
    elif case == "aliased":  # the best ones exactly where the sample looks: its cut is too high
        scores[:] = 0.0
        scores[:: n // 16_384] = 1.0 + rng.random(len(scores[:: n // 16_384])).astype(np.float32)
    for threshold in (np.finfo(np.float32).min, 0.5):
        got = _best(scores, threshold, cap)
        want = np.sort(scores[scores >= threshold])[::-1][:cap]
        assert np.array_equal(scores[got], want), case  # the same scores, in order
        assert len(np.unique(got)) == len(got)


def test_auto_rows_follow_how_many_voxels_share_a_student_voxel():
    """``feature_rows: auto``: a sparse map (one 5 cm voxel in each 10 cm student voxel: a float16 row
    of its own would cost 116 bytes a voxel) keeps int8 rows within code_bytes; once the map fills in,
    the rows go back to float16 (queries rank as the features do). Labels and answers carry over."""
    live = _live()
    assert live.exact  # a 10 cm student on a 5 cm map
    g = np.arange(50) * 0.1 + 0.05
    sparse = np.stack(np.meshgrid(g + 20.0, g, [2.05], indexing="ij"), -1).reshape(-1, 3)
    live.add_points(sparse, 1.0, np.zeros(3))
    live.update()
    memory = live.memory()
    assert not live.exact and live.table.dtype == np.int8 and memory["features_in_use"] <= 64, memory
    before = live.query(live.vocab.embeddings[1], threshold=-1, max_points=50)
    d = np.arange(400) * 0.025 + 0.0125
    dense = np.stack(np.meshgrid(d, d, [0.0125], indexing="ij"), -1).reshape(-1, 3)
    live.add_points(dense, 2.0, np.zeros(3))
    live.update()
    memory = live.memory()
    assert live.exact and live.table.dtype == np.float16 and memory["voxels_per_row"] > 3, memory
    assert memory["features_in_use"] <= 64 and (live.map.labels >= 0).all()
    after = live.query(live.vocab.embeddings[1], threshold=-1, max_points=len(live.map))
    score_at = {p: v for p, v in zip(map(tuple, after.points.round(4).tolist()), after.scores)}
    # the sparse block was not rerun (far from the new voxels): its scores moved by the rows' rounding only
    assert np.allclose([score_at[p] for p in map(tuple, before.points.round(4).tolist())], before.scores, atol=2e-3)
    fixed = _live(feature_rows="fp16")
    fixed.add_points(sparse, 1.0, np.zeros(3))
    fixed.update()
    assert fixed.exact and fixed.memory()["features_in_use"] > 64  # asked for: float16 rows whatever they cost
