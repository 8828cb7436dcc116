"""Metrics on hand-computed cases; the ScanNet benchmark export format; `ovseg3d eval`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovseg3d.eval.instance import InstanceMeter, average_precision
from ovseg3d.eval.scannet_export import export_instances, export_semantic
from ovseg3d.eval.semantic import SemanticMeter, miou_difference, semantic_scores
from ovseg3d.labels import IGNORE, load_label_set
from ovseg3d.segment.proposals import InstancePrediction

OVSEG3D = str(Path(sys.executable).parent / "ovseg3d")


def test_miou_by_hand_with_ignored_points_and_absent_classes():
    gt = np.array([0, 0, 1, 1, IGNORE, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 3])  # class 3 never appears in the ground truth
    s = semantic_scores(pred, gt, 4)
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2: TP 2, FN 1 -> 2/3
    assert s.iou[:3] == pytest.approx([1 / 2, 2 / 3, 2 / 3])
    assert np.isnan(s.iou[3]) and not s.present[3]
    assert s.miou == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    assert s.macc == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert s.points == 7


def test_long_tail_split_means_by_hand():
    s = semantic_scores(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)  # IoU 1, 1/2, 1/2, absent
    splits = ("head", "head", "tail", "tail")
    assert s.split_mious(splits) == pytest.approx({"head": 0.75, "tail": 0.5})
    s200 = load_label_set("scannet200")
    assert s200.splits.count("head") == 66 and s200.splits.count("common") == 68 and s200.splits.count("tail") == 66
    assert s200.splits[s200.names.index("fire extinguisher")] == "tail"


def _rooms(*flips: list[float]) -> list[SemanticMeter]:
    """One meter per list, over the same rooms: each mislabels the given fraction of each room's points."""
    rng = np.random.default_rng(0)
    meters = [SemanticMeter(4, keep_scenes=True) for _ in flips]
    for fracs in zip(*flips):
        gt = rng.integers(0, 4, 2000)
        for meter, frac in zip(meters, fracs):
            meter.update(np.where(rng.random(2000) < frac, (gt + 1) % 4, gt), gt)
    return meters


def test_miou_difference_is_the_dataset_difference_with_an_interval_around_it():
    noisy, perfect = _rooms([0.1, 0.2, 0.3, 0.05, 0.15], [0.0] * 5)
    d = miou_difference(noisy, perfect)
    assert d.delta == pytest.approx(perfect.compute().miou - noisy.compute().miou)
    assert 0 < d.low < d.delta < d.high  # better in every room: the interval excludes 0
    assert d.scenes_better == 5 and d.scenes == 5
    back = miou_difference(perfect, noisy)  # the same comparison the other way round
    assert back.delta == pytest.approx(-d.delta) and back.high == pytest.approx(-d.low)
    assert miou_difference(noisy, noisy).low == miou_difference(noisy, noisy).high == 0


def test_miou_difference_straddles_zero_when_rooms_disagree():
    a, b = _rooms([0.05, 0.3, 0.05, 0.3], [0.3, 0.05, 0.3, 0.05])  # b wins two rooms, loses two by as much
    d = miou_difference(a, b)
    assert d.low < 0 < d.high and d.scenes_better == 2
    with pytest.raises(ValueError, match="same scenes"):
        miou_difference(a, _rooms([0.1])[0])
    with pytest.raises(ValueError, match="keep_scenes"):
        miou_difference(SemanticMeter(4), SemanticMeter(4))


def test_no_prediction_is_a_miss_not_a_false_positive():
    s = semantic_scores(np.array([-1, 0]), np.array([0, 0]), 2)
    assert s.iou[0] == pytest.approx(0.5) and s.acc[0] == pytest.approx(0.5)


def test_accumulating_equals_functional_and_an_independent_count():
    rng = np.random.default_rng(0)
    gt = rng.integers(-1, 6, 5000)
    pred = rng.integers(0, 6, 5000)
    meter = SemanticMeter(6)
    for part in np.array_split(np.arange(5000), 7):
        meter.update(pred[part], gt[part])
    a, b = meter.compute(), semantic_scores(pred, gt, 6)
    assert np.allclose(a.iou, b.iou) and a.miou == b.miou
    for k in range(6):  # a direct count per class
        valid = gt >= 0
        inter = np.sum((pred == k) & (gt == k) & valid)
        union = np.sum(((pred == k) | (gt == k)) & valid)
        assert a.iou[k] == pytest.approx(inter / union)


def test_average_precision_by_hand():
    # 2 ground-truth instances; predictions ranked: TP, FP, TP
    # thresholds high->low: (P=1, R=.5), (P=.5, R=.5), (P=2/3, R=1); ScanNet's step widths
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    precision = [2 / 3, 1 / 2, 1.0, 1.0]  # from the lowest threshold up, then the appended 1
    recall = [1.0, 0.5, 0.5, 0.0]
    conv = [recall[0], *recall, 0.0]
    steps = np.convolve(conv, [-0.5, 0, 0.5], "valid")
    assert ap == pytest.approx(float(np.dot(precision, steps)))
    assert average_precision(np.array([0.9]), np.array([True]), 1) == pytest.approx(1.0)
    assert average_precision(np.array([]), np.array([], bool), 3) == 0.0
    assert np.isnan(average_precision(np.array([]), np.array([], bool), 0))


def test_instance_ap_on_hand_made_scene():
    n = 400
    gt_inst = np.zeros(n, int)
    gt_inst[:150] = 1
    gt_inst[150:300] = 2
    gt_inst[300:350] = 3  # too small (< 100 points): ignored
    gt_lab = np.full(n, -1)
    gt_lab[:300] = 4
    gt_lab[300:350] = 4
    m1 = np.zeros(n, bool)
    m1[:140] = True  # IoU 140/150 with instance 1
    m2 = np.zeros(n, bool)
    m2[150:250] = True  # IoU 100/150 = 0.67 with instance 2
    m3 = np.zeros(n, bool)
    m3[300:340] = True  # on the small, ignored instance: not a false positive
    meter = InstanceMeter(5, classes=[4])
    meter.update([InstancePrediction(m1, 4, 0.9), InstancePrediction(m2, 4, 0.8), InstancePrediction(m3, 4, 0.7)],
                 gt_inst, gt_lab)
    r = meter.compute()
    assert r["AP50"] == pytest.approx(1.0) and r["AP25"] == pytest.approx(1.0)
    # above IoU 0.67 only the first matches: AP over 0.5..0.9 mixes full and half recall
    assert 0.5 < r["AP"] < 1.0
    assert r["per_class"][4]["AP50"] == pytest.approx(1.0)


def test_scannet_export_exact_text(tmp_path):
    labels = load_label_set("scannet20")
    export_semantic(tmp_path / "semantic", "scene0000_00", np.array([0, 4, -1, 19]), labels)
    assert (tmp_path / "semantic" / "scene0000_00.txt").read_text() == "1\n5\n0\n39\n"
    m = np.array([True, False, True])
    export_instances(tmp_path / "instance", "scene0000_00", [InstancePrediction(m, 4, 0.75)], labels)
    assert (tmp_path / "instance" / "scene0000_00.txt").read_text() == "pred_mask/scene0000_00_0.txt 5 0.750000\n"
    assert (tmp_path / "instance" / "pred_mask" / "scene0000_00_0.txt").read_text() == "1\n0\n1\n"


def test_eval_cli_on_predictions(synth_root, synth_scene, tmp_path):
    labels = load_label_set("scannet20")
    gt = synth_scene.semantic(labels)
    pred = np.where(gt >= 0, gt, 0)
    pred[:500] = 3  # some mistakes
    out = tmp_path / "pred"
    out.mkdir()
    objects = np.where(synth_scene.instance_ids > 6, synth_scene.instance_ids, 0)  # no floor/ceiling/walls
    objects[gt < 0] = 0  # nor boxes (outside ScanNet20)
    present, inst = np.unique(objects, return_inverse=True)
    inst = inst - 1  # 0 (no object) becomes -1
    inst_labels = [int(np.bincount(gt[inst == k]).argmax()) for k in range(len(present) - 1)]
    np.savez(out / "scene0000_00.npz", labels=pred.astype(np.int16), names=np.array(labels.names),
             instance_ids=inst, instance_labels=np.array(inst_labels), instance_scores=np.ones(inst.max() + 1))
    proc = subprocess.run([OVSEG3D, "eval", str(out), "--gt", str(synth_root), "--export-scannet",
                           str(tmp_path / "export")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "eval.json").read_text())
    expected = semantic_scores(pred, gt, 20).miou
    assert report["mIoU"] == pytest.approx(expected) and 0.8 < expected < 1.0
    assert report["instances"]["AP50"] > 0.9  # ground-truth instances as predictions
    assert (tmp_path / "export" / "semantic" / "scene0000_00.txt").exists()
    assert len((tmp_path / "export" / "instance" / "scene0000_00.txt").read_text().splitlines()) == inst.max() + 1
    bad = subprocess.run([OVSEG3D, "eval", str(tmp_path / "nothing"), "--gt", str(synth_root)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a folder of predictions" in bad.stderr
