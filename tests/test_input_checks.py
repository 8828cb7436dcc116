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


def test_tf_tree_refuses_bad_frame_ids_cycles_and_reparenting_while_current():
    buf = TransformBuffer(cache_seconds=10.0)
    buf.set("map", "base_link", 100.0, np.eye(4))
    buf.set("base_link", "lidar", 0.0, np.eye(4), static=True)
    for parent, child, kind in (("other", "/lidar", "frame_id"), ("", "lidar", "frame_id"),
                                ("map", "map", "tf_invalid"), ("lidar", "map", "tf_cycle"),
                                ("base_link", "map", "tf_cycle"), ("evil", "lidar", "tf_reparent"),
                                ("evil", "base_link", "tf_reparent"), ("map", "x" * 300, "frame_id")):
        with pytest.raises(Rejected) as err:
            buf.set(parent, child, 100.05, np.eye(4))
        assert err.value.kind == kind, (parent, child)
    assert np.allclose(buf.lookup("map", "lidar", 100.0), np.eye(4))
    # a dynamic link that went quiet for longer than the cache may move to another parent
    buf.set("odom", "base_link", 200.0, np.eye(4))
    assert "odom" in buf._chain("lidar")


def test_tf_frames_are_bounded_and_frames_in_use_survive_a_flood_of_new_names():
    buf = TransformBuffer(max_frames=50)
    buf.set("map", "base_link", 1.0, np.eye(4))
    buf.set("base_link", "lidar", 0.0, np.eye(4), static=True)
    buf.lookup("map", "lidar", 1.0)  # in use
    for i in range(5000):
        buf.set("map", f"junk_{i}", 1.0, np.eye(4))
    assert len(buf) == 50 and buf.evicted_frames == 5000 + 2 - 50
    assert np.allclose(buf.lookup("map", "lidar", 1.0), np.eye(4))


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
    assert order.check("lidar", 10.0, wall=0.0) == "ok"
    order.accept("lidar", 10.0)
    assert order.check("lidar", 9.9, wall=0.1) == "late"  # reordered in transit
    assert order.check("lidar", 10.1, wall=0.2) == "ok"
    order.accept("lidar", 10.1)  # a newer message resets the count: one stray old stamp never clears anything
    assert [order.check("lidar", 1.0, wall=w) for w in (0.3, 0.4, 0.5, 1.4)] == ["late", "late", "late", "jump"]
    order.clear()
    assert order.check("lidar", 1.0, wall=1.5) == "ok" and order.last("lidar") is None


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
