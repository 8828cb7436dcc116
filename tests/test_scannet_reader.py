"""The ScanNet-layout reader on synthetic scenes, and its handling of broken scene folders."""

import shutil

import numpy as np
import pytest

from ovseg3d.data.scannet import ScanNetScene, list_scenes, read_label_map
from ovseg3d.data.synth.furniture import NYU40
from ovseg3d.data.synth.generate import SYNTH_PRESETS, build_geometry
from ovseg3d.errors import UserError
from ovseg3d.labels import IGNORE, load_label_set


def _generated(seed=7, index=0):
    """What the generator built for scene ``index``, recomputed from the same seed."""
    room, caster, _ = build_geometry(np.random.default_rng([seed, index]), SYNTH_PRESETS["test"])
    return room, caster


def test_reader_returns_the_generated_labels(synth_scene):
    room, caster = _generated()
    assert synth_scene.num_points == len(caster.vertices)
    np.testing.assert_allclose(synth_scene.points, caster.vertices, atol=1e-5)
    expected_nyu = np.array([NYU40[c][0] for c in room.instance_categories])[caster.vertex_instance]
    assert np.array_equal(synth_scene.nyu40, expected_nyu)
    # Instances come from the aggregation: objectId + 1 per vertex, with their raw categories.
    assert np.array_equal(synth_scene.instance_ids, caster.vertex_instance + 1)
    assert synth_scene.instance_raw_labels[1:] == room.instance_categories


def test_semantic_label_sets(synth_scene):
    s20 = load_label_set("scannet20")
    sem = synth_scene.semantic(s20)
    assert set(np.unique(sem)) == set(range(20)) | {IGNORE}  # every class, plus ceiling/boxes ignored
    assert (sem[synth_scene.nyu40 == 22] == IGNORE).all()  # the ceiling is not a ScanNet20 class
    s200 = load_label_set("scannet200")
    sem200 = synth_scene.semantic(s200)
    chair20, chair200 = s20.names.index("chair"), s200.names.index("chair")
    assert np.array_equal(sem == chair20, sem200 == chair200)
    assert (sem200[synth_scene.nyu40 == 22] == s200.names.index("ceiling")).all()


def test_label_map_tsv_has_scannet_columns(synth_root):
    mapping = read_label_map(synth_root / "scannetv2-labels.combined.tsv")
    assert mapping["chair"] == 5 and mapping["couch"] == 6 and mapping["ottoman"] == 39


def test_frames_stream_with_aligned_depth(synth_scene):
    frames = list(synth_scene.frames(stride=6))
    assert [f.frame_id for f in frames] == [0, 6, 12, 18]
    f = frames[0]
    assert f.color.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    assert 0.9 < (f.depth > 0).mean() < 1.0  # noisy sensor: most pixels, not all
    small = next(synth_scene.frames(image_size=(320, 240)))
    assert small.color.shape == (240, 320, 3) and small.depth.shape == (240, 320)
    assert small.K[0, 0] == pytest.approx(f.K[0, 0] / 2)


@pytest.fixture
def broken_scene(synth_root, tmp_path):
    dst = tmp_path / "scene0000_00"
    shutil.copytree(synth_root / "scene0000_00", dst)
    return dst


def test_bad_frames_are_counted_and_skipped(broken_scene):
    (broken_scene / "pose" / "1.txt").write_text("-inf -inf -inf -inf\n" * 4)  # ScanNet's invalid pose
    (broken_scene / "depth" / "2.png").unlink()
    from PIL import Image

    Image.new("RGB", (320, 240)).save(broken_scene / "color" / "3.jpg")  # wrong size
    Image.fromarray(np.zeros((480, 640), np.uint16)).save(broken_scene / "depth" / "4.png")  # all holes
    (broken_scene / "color" / "5.jpg").write_bytes(b"not a jpeg")
    scene = ScanNetScene(broken_scene)
    ids = [f.frame_id for f in scene.frames(frame_ids=list(range(8)))]
    assert ids == [0, 6, 7]
    assert scene.skipped == {"invalid or missing pose": 1, "missing or unreadable image": 2,
                             "image size differs from the scene's first frame": 1, "depth has no valid pixel": 1}


def test_not_a_scene_is_a_clear_error(tmp_path):
    (tmp_path / "notascene").mkdir()
    with pytest.raises(UserError, match="is not a ScanNet scene folder"):
        ScanNetScene(tmp_path / "notascene")
    with pytest.raises(UserError, match="does not exist"):
        list_scenes(tmp_path / "missing")
    with pytest.raises(UserError, match="holds no ScanNet scene folders"):
        list_scenes(tmp_path)


def test_missing_annotations_are_clear_errors(broken_scene):
    (broken_scene / "scene0000_00_vh_clean_2.labels.ply").unlink()
    (broken_scene / "scene0000_00.aggregation.json").write_text("{not json")
    scene = ScanNetScene(broken_scene)
    with pytest.raises(UserError, match="has no semantic labels"):
        _ = scene.nyu40
    with pytest.raises(UserError, match="cannot read the instance annotation"):
        _ = scene.instance_ids
