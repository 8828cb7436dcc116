"""The checks where input enters the node, in plain Python: transforms, the TF tree, the order of
stamps, client-given paths and prompt templates, camera intrinsics. The same inputs sent through
real ROS to a node process are in tests/adversarial/."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Transform

from ovseg3d.errors import Rejected, UserError
from ovseg3d.paths import path_inside
from ovseg3d.ros.images import camera_info, camera_matrix
from ovseg3d.ros.stamps import StreamOrder
from ovseg3d.ros.transforms import TransformBuffer, transform_to_matrix
from ovseg3d.text.vocabulary import _validate_templates, fill_template


def _tf(x=0.0, q=(0.0, 0.0, 0.0, 1.0)) -> Transform:
    t = Transform()
    t.translation.x = x
    t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = q
    return t


@pytest.mark.parametrize("bad", [_tf(q=(0, 0, 0, 0)), _tf(q=(np.nan, 0, 0, 1)), _tf(x=np.nan), _tf(x=np.inf),
                                 _tf(q=(1e300, 0, 0, 1)), _tf(q=(0, 0, 0, 1.2))])
def test_transforms_that_are_not_rigid_motions_are_refused(bad):
    with pytest.raises(Rejected) as err:
        transform_to_matrix(bad)
    assert err.value.kind == "tf_invalid"


def test_a_nearly_unit_quaternion_is_normalised_as_tf2_does():
    T = transform_to_matrix(_tf(q=(0, 0, 0, 1.004)))
    assert np.allclose(T[:3, :3], np.eye(3))


def test_tf_tree_refuses_bad_frame_ids_cycles_reparenting_and_static_dynamic_conflicts():
    buf = TransformBuffer(cache_seconds=10.0)
    buf.set("map", "base_link", 100.0, np.eye(4))
    buf.set("base_link", "lidar", 0.0, np.eye(4), static=True)
    for parent, child, stamp, static, kind in (
            ("other", "/lidar", 100.05, False, "frame_id"), ("", "lidar", 100.05, False, "frame_id"),
            ("map", "map", 100.05, False, "tf_invalid"), ("lidar", "map", 100.05, False, "tf_cycle"),
            ("base_link", "map", 100.05, False, "tf_cycle"), ("evil", "lidar", 100.05, False, "tf_reparent"),
            ("evil", "base_link", 100.05, False, "tf_reparent"), ("map", "x" * 300, 100.05, False, "frame_id"),
            # a static transform's stamp says nothing: far ahead, it still may not take a live frame over
            ("evil", "base_link", 1e9, True, "tf_reparent"), ("map", "base_link", 0.0, True, "tf_conflict"),
            ("base_link", "lidar", 100.05, False, "tf_conflict")):
        with pytest.raises(Rejected) as err:
            buf.set(parent, child, stamp, np.eye(4), static)
        assert err.value.kind == kind, (parent, child)
    assert np.allclose(buf.lookup("map", "lidar", 100.0), np.eye(4))
    # a dynamic link that went quiet for longer than the cache may move to another parent
    buf.set("map", "other_robot", 200.0, np.eye(4))
    buf.set("odom", "base_link", 200.0, np.eye(4))
    assert "odom" in buf._chain("lidar")


def test_repeated_stamps_are_ignored_and_samples_per_frame_are_bounded():
    buf = TransformBuffer(max_samples=100)
    T = np.eye(4)
    assert buf.set("map", "base_link", 1.0, T)
    assert not any(buf.set("map", "base_link", 1.0, T + 1) for _ in range(1000))  # tf2: TF_REPEATED_DATA
    assert np.allclose(buf.lookup("map", "base_link", 1.0), T)
    for k in range(1000):  # 1000 samples within the 10 s cache window
        buf.set("map", "base_link", 2.0 + 0.001 * k, T)
    assert len(buf._times["base_link"]) == 100


def test_tf_frames_are_bounded_and_static_or_used_frames_survive_a_flood_of_new_names():
    buf = TransformBuffer(max_frames=50)
    buf.set("map", "base_link", 1.0, np.eye(4))
    buf.set("base_link", "lidar", 0.0, np.eye(4), static=True)  # latched once, not yet used by any lookup
    buf.set("base_link", "camera", 0.0, np.eye(4), static=True)
    buf.lookup("map", "camera", 1.0)  # in use
    for i in range(5000):
        buf.set("map", f"junk_{i}", 1.0, np.eye(4))
    assert len(buf) == 50 and buf.evicted_frames == 5000 + 3 - 50
    assert np.allclose(buf.lookup("map", "lidar", 1.0), np.eye(4))
    for i in range(5000):  # static names beyond the bound are refused: static frames are never evicted
        try:
            buf.set("map", f"static_junk_{i}", 0.0, np.eye(4), static=True)
        except Rejected as exc:
            assert exc.kind == "tf_frames"
    assert len(buf) == 50 and np.allclose(buf.lookup("map", "camera", 1.0), np.eye(4))


def test_tf_gatekeeper_for_tf2_refuses_new_names_instead_of_evicting():
    buf = TransformBuffer(max_frames=10, evict=False)
    for i in range(10):
        buf.set("map", f"f{i}", 1.0, np.eye(4))
    with pytest.raises(Rejected) as err:
        buf.set("map", "one_more", 1.0, np.eye(4))
    assert err.value.kind == "tf_frames" and len(buf) == 10 and buf.evicted_frames == 0


def test_tf_clear_forgets_dynamic_transforms_and_keeps_static_ones():
    buf = TransformBuffer()
    buf.set("map", "base_link", 1.0, np.eye(4))
    buf.set("base_link", "lidar", 0.0, np.eye(4), static=True)
    buf.set("map", "base_link", 1e9, np.eye(4))  # far ahead: the buffer now prunes everything older
    with pytest.raises(LookupError):
        buf.lookup("map", "base_link", 2.0)
    buf.clear()
    buf.set("map", "base_link", 2.0, np.eye(4))
    assert np.allclose(buf.lookup("map", "lidar", 2.0), np.eye(4))


def test_stream_order_tells_late_messages_from_time_going_back():
    order = StreamOrder(confirm_seconds=1.0, confirm_count=3)
    assert order.check("lidar", 10.0, wall=0.0) == ("ok", None)
    order.accept("lidar", 10.0, wall=0.0)
    assert order.check("lidar", 9.9, wall=0.1) == ("late", 10.0)  # reordered in transit
    assert order.check("lidar", 10.1, wall=0.2)[0] == "ok"
    order.accept("lidar", 10.1, wall=0.2)  # a newer message resets the count: one stray old stamp never clears
    verdicts = [order.check("lidar", 1.0, wall=w)[0] for w in (0.3, 0.4, 0.5, 1.4)]
    assert verdicts == ["late", "late", "late", "jump"]
    order.clear()
    assert order.check("lidar", 1.0, wall=1.5) == ("ok", None)


def test_old_stamps_on_one_stream_do_not_clear_time_while_another_stream_flows():
    order = StreamOrder(confirm_seconds=1.0, confirm_count=3)
    order.accept("lidar", 100.0, wall=0.0)
    for k in range(30):  # a client sends old LiDAR stamps while the camera keeps being accepted
        wall = 0.1 * (k + 1)
        order.accept("rgbd", 100.0 + wall, wall=wall)
        assert order.check("lidar", 1.0, wall=wall)[0] == "late"
    assert order.check("lidar", 1.0, wall=4.1)[0] == "jump"  # everything stopped for a second: time went back


def test_client_paths_are_checked_before_the_filesystem_sees_them(tmp_path):
    root = tmp_path / "maps"
    assert path_inside(root, " run1/map ") == root.resolve() / "run1" / "map"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "out").symlink_to(tmp_path)
    for bad, why in (("", "empty"), ("../x", "leaves"), ("/etc/x", "leaves"), ("a/../../x", "leaves"),
                     ("/".join(["d"] * 5000), "characters long"), ("/".join(["d"] * 20), "folders deep"),
                     ("x" * 300, "longer than"), ("a\x00b", "control"), ("sub/out/x", "leads out")):
        with pytest.raises(UserError, match=why):
            path_inside(root, bad)
    assert not (root / "d").exists()


@pytest.mark.parametrize("template", ["a {} near {x}", "{1} {}", "a {} {", "{0.__class__} {}", "%s {} %n"])
def test_prompt_templates_are_filled_without_str_format(template):
    _validate_templates([template])
    text = fill_template(template, "chair {0}")
    assert text == template.replace("{}", "chair {0}", 1)


def test_camera_intrinsics_must_describe_a_camera():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    assert np.allclose(camera_matrix(camera_info(K, 64, 48)), K)
    for bad in ([[1e-6, 0, 32], [0, 1e-6, 24], [0, 0, 1]], [[1e6, 0, 32], [0, 1e6, 24], [0, 0, 1]],
                [[100, 0, 5000], [0, 100, 24], [0, 0, 1]], [[100, 0, 32], [1, 100, 24], [0, 0, 1]]):
        with pytest.raises(UserError, match="CameraInfo"):
            camera_matrix(camera_info(np.array(bad, float), 64, 48))
