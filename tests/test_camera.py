"""Pinhole projection, intrinsics under resizing, OpenScene's occlusion test, depth alignment."""

import numpy as np
import pytest

from ovseg3d.data.scannet import align_depth
from ovseg3d.data.synth.render import look_at
from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import (
    backproject,
    backproject_strided,
    project,
    scale_intrinsics,
    visible_points,
    world_to_camera,
)

K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])


def test_backproject_then_project_is_exact():
    rng = np.random.default_rng(0)
    pose = look_at(np.array([1.0, -2.0, 1.5]), np.array([0.3, 0.5, 0.8]))
    depth = rng.uniform(0.5, 6.0, size=(48, 64))
    K_small = scale_intrinsics(K, (640, 480), (64, 48))
    pts, pix = backproject(depth, K_small, pose)
    uv, z = project(world_to_camera(pts, pose), K_small)
    np.testing.assert_allclose(uv[:, 0], pix[:, 1], atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], pix[:, 0], atol=1e-9)
    np.testing.assert_allclose(z, depth[pix[:, 0], pix[:, 1]], atol=1e-9)


def test_scale_intrinsics_keeps_pixel_centres():
    K2 = scale_intrinsics(K, (640, 480), (320, 240))
    # The image centre stays the centre; the corner pixel centres map onto each other.
    assert K2[0, 2] == pytest.approx(159.5) and K2[1, 2] == pytest.approx(119.5)
    assert K2[0, 0] == pytest.approx(250.0)


def test_occlusion_keeps_a_point_behind_a_wall_out():
    pose = np.eye(4)  # camera at the origin looking down +z
    depth = np.full((480, 640), 2.0)  # a wall at z = 2 m fills the view
    pts = np.array([[0.0, 0.0, 2.0],    # on the wall: visible
                    [0.1, 0.0, 2.4],    # 0.4 m behind the wall, within 0.25 * 2 m: visible
                    [0.0, 0.1, 3.0],    # 1 m behind the wall: occluded
                    [0.0, 0.0, -1.0],   # behind the camera
                    [50.0, 0.0, 2.0]])  # outside the image
    vis = visible_points(pts, pose, K, (640, 480), depth)
    assert vis.index.tolist() == [0, 1]
    tight = visible_points(pts, pose, K, (640, 480), depth, occlusion_ratio=0.1)
    assert tight.index.tolist() == [0]


def test_holes_and_nan_depth_hide_points():
    depth = np.full((480, 640), 2.0)
    depth[240, 320] = 0.0
    depth[240, 330] = np.nan
    pts = np.array([[0.0, 0.0, 2.0], [10 * 2.0 / 500, 0.0, 2.0], [0.0, 0.0, 2.0]])
    pts[0, 0] += 0.5 * 2.0 / 500  # lands on pixel u = 320.5 -> rounds to 320 (the hole)
    vis = visible_points(pts[:2], np.eye(4), K, (640, 480), depth)
    assert vis.index.tolist() == []


def test_mismatched_depth_size_is_a_clear_error():
    with pytest.raises(UserError, match="depth image is 320x240, expected 640x480"):
        visible_points(np.zeros((1, 3)), np.eye(4), K, (640, 480), np.ones((240, 320)))


def test_align_depth_into_another_camera_is_exact_on_a_fronto_parallel_plane():
    K_depth = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    depth = np.full((240, 320), 3.0)
    depth[:, :160] = 1.5  # left half closer
    K_target = scale_intrinsics(K, (640, 480), (640, 480))
    out = align_depth(depth, K_depth, K_target, (640, 480))
    # The target sees 0.64 (horizontal) and 0.48 (vertical) in tan-angle, the depth camera
    # 0.533 and 0.4: inside that, left pixels read the closer half; outside, no reading.
    assert (out[60:420, 60:300] == 1.5).all() and (out[60:420, 340:580] == 3.0).all()
    assert (out[:, :50] == 0).all() and (out[:30] == 0).all()


def test_strided_backprojection_matches_the_full_resolution_pixels():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, (30, 40)).astype(np.float32)
    K = np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    pts, pix = backproject_strided(depth, K, pose, stride=3, min_depth=1.0, max_depth=3.0)
    full, _ = backproject(depth, K, pose, pixels=pix)
    assert np.allclose(pts, full) and (pix % 3 == 0).all()
    z = depth[pix[:, 0], pix[:, 1]]
    assert ((z >= 1.0) & (z <= 3.0)).all()
    assert len(pts) == int(((depth[::3, ::3] >= 1.0) & (depth[::3, ::3] <= 3.0)).sum())
    depth[0, 3], depth[3, 0], depth[3, 3], depth[6, 6] = np.inf, np.nan, 0.0, -1.0  # no reading: no point
    pts, pix = backproject_strided(depth, K, pose, stride=3)
    assert np.isfinite(pts).all() and len(pts) == depth[::3, ::3].size - 4
    assert np.allclose(pts, backproject(depth, K, pose, pixels=pix)[0], rtol=0, atol=1e-12)


def test_colors_from_a_camera_of_its_own():
    from ovseg3d.geometry.camera import GREY, colors_from_camera

    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3], rgb[:, 3:] = (255, 0, 0), (0, 0, 255)
    K = np.array([[2.0, 0, 2.5], [0, 2.0, 1.5], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [10.0, 0, 0]  # the camera sits at x = 10 looking down +z
    pts = np.array([[9.5, 0, 1.0], [10.5, 0, 1.0], [10.0, 0, -1.0], [30.0, 0, 1.0]])
    got = colors_from_camera(pts, rgb, K, pose)
    assert got.tolist() == [[255, 0, 0], [0, 0, 255], [GREY] * 3, [GREY] * 3]  # left, right, behind, outside
