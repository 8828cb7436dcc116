"""Felzenszwalb-Huttenlocher superpoints on normals, for meshes and bare point clouds."""

import numpy as np

from ovseg3d.data.synth.meshes import box, grid_face, merge
from ovseg3d.geometry.neighbors import Neighbourhood
from ovseg3d.geometry.superpoints import label_purity, mesh_superpoints, point_superpoints, segment_graph


def test_two_perpendicular_planes_make_two_segments():
    floor = grid_face(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 0.1)
    wall = grid_face(np.array([0, 0, 0.05]), np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), 0.1)
    v, _ = merge([floor, wall])
    seg = point_superpoints(v, k=8)  # as a bare point cloud: k-NN edges bridge the two planes
    plane = np.r_[np.zeros(len(floor[0])), np.ones(len(wall[0]))]
    assert len(np.unique(seg)) == 2
    # Only the row where the planes meet has blended PCA normals and may go either way.
    assert label_purity(seg, plane) >= 1 - 2 * 11 / len(plane)


def test_closed_form_normals_match_eigh_up_to_sign():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.random((400, 2)), 1e-3 * rng.random(400)]  # a thin slab: normal ~ z
    tilted = rng.random((400, 3)) @ np.diag([1.0, 1.0, 0.01]) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    blob = rng.normal(size=(400, 3)) * [3.0, 2.0, 1.0]  # eigenvalues apart but no flat side
    line = np.c_[rng.random(400), 1e-5 * rng.random((400, 2))]  # two tiny eigenvalues: weakly defined
    big = 1e4 + rng.random((400, 3)) * [1.0, 1.0, 1e-3]  # far from the origin: centring matters
    same = np.zeros((20, 3))  # all at one spot: no axis, but still a unit vector
    for cloud in (plane, tilted, blob, line, big, same):
        near = Neighbourhood.of(cloud, 16)
        got = near.normals(cloud, 16)
        nb = cloud[near.idx] - cloud[near.idx].mean(1, keepdims=True)
        vals, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0)
        defined = vals[:, 1] - vals[:, 0] > 1e-6 * vals[:, 2]
        assert np.allclose(np.abs((got * vecs[:, :, 0]).sum(1))[defined], 1.0, atol=1e-9)
    assert np.abs(Neighbourhood.of(plane, 16).normals(plane, 16)[:, 2]).min() > 0.9


def test_min_verts_merges_small_segments():
    # A chain of 10 vertices with alternating normals: every edge weight is 2 (never merged by
    # the threshold), so only the minimum-size pass can join them.
    edges = np.stack([np.arange(9), np.arange(1, 10)], 1)
    normals = np.tile([[0, 0, 1.0], [0, 0, -1.0]], (5, 1))
    assert len(np.unique(segment_graph(10, edges, normals, k_thresh=0.01, min_verts=1))) == 10
    assert len(np.unique(segment_graph(10, edges, normals, k_thresh=0.01, min_verts=5))) <= 2


def test_box_faces_are_separate_segments():
    v, f = box((0, 0, 0), (1, 1, 1), 0.1)
    seg = mesh_superpoints(v, f)
    assert len(np.unique(seg)) == 6


def test_superpoints_on_synthetic_scenes_are_label_pure(synth_scene, record_property):
    sem, inst = synth_scene.nyu40, synth_scene.instance_ids
    mesh_seg = mesh_superpoints(synth_scene.points, synth_scene.faces)
    cloud_seg = point_superpoints(synth_scene.points, colors=synth_scene.colors)
    purity = {"mesh_semantic": label_purity(mesh_seg, sem), "mesh_instance": label_purity(mesh_seg, inst),
              "cloud_semantic": label_purity(cloud_seg, sem), "cloud_instance": label_purity(cloud_seg, inst)}
    for key, value in purity.items():
        record_property(key, value)
    print(f"superpoint purity (point-weighted): {purity}; mesh {len(np.unique(mesh_seg))} segments, "
          f"cloud {len(np.unique(cloud_seg))} segments for {synth_scene.num_points} points")
    assert min(purity.values()) >= 0.95
    assert len(np.unique(cloud_seg)) < synth_scene.num_points / 10  # real grouping, not one per point


def test_purity_of_hand_made_segments():
    seg = np.array([0, 0, 0, 1, 1])
    lab = np.array([1, 1, 2, 3, 3])
    assert label_purity(seg, lab) == 0.8
    assert label_purity(seg, lab, ignore=2) == 1.0
