"""The world-frame voxel map: merging, dirty tracking, eviction, saving."""

import numpy as np
import pytest

from ovseg3d.data.map_files import save_map
from ovseg3d.data.ply import read_ply
from ovseg3d.errors import UserError
from ovseg3d.geometry.camera import backproject_strided
from ovseg3d.geometry.voxel_map import VoxelMap
from ovseg3d.geometry.voxel_reduce import pack_keys, reduce_depth, reduce_points


def test_points_in_one_voxel_merge_into_their_mean():
    m = VoxelMap(voxel_size=0.1)
    assert m.insert([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07]], [[0, 0, 0], [100, 200, 50]], stamp=1.0) == 1
    assert m.insert([[0.5, 0.5, 0.5]], stamp=2.0) == 1
    assert m.insert([[0.05, 0.03, 0.02]], [[200, 100, 250]], stamp=3.0) == 0
    assert len(m) == 2
    first = np.argmin(m.points[:, 0])
    assert m.points[first] == pytest.approx([0.03, 0.03, 0.1 / 3], abs=1e-6)
    assert m.colors[first].tolist() == [100, 100, 100] and m.count[first] == 3
    assert m.last_seen[first] == 3.0


def _reference_sums(points: np.ndarray, colors: np.ndarray, voxel: float):
    """The numpy way the compiled reduction replaced: sorted keys, position and colour sums, counts."""
    keys, inv = np.unique(pack_keys(np.floor(points / voxel)), return_inverse=True)
    sums = [np.stack([np.bincount(inv, v[:, c], minlength=len(keys)) for c in range(3)], 1) for v in (points, colors)]
    return keys, sums[0], sums[1], np.bincount(inv, minlength=len(keys))


@pytest.mark.parametrize("voxel", [0.02, 0.05, 0.1])
def test_one_pass_depth_reduction_matches_backprojecting_then_grouping(voxel):
    rng = np.random.default_rng(1)
    v, u = np.mgrid[0:96, 0:128]
    depth = (1.0 + 0.01 * u + 0.02 * v + 0.01 * rng.random(u.shape)).astype(np.float32)
    depth[::7, ::5] = 0  # holes, out-of-range, NaN and inf pixels are all skipped
    depth[10:12] = np.nan
    depth[20, :] = np.inf
    depth[30, :] = 9.0
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    a = 0.7
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    pose[:3, 3] = [-3.0, 12.5, 0.4]
    got = reduce_depth(depth, K, pose, voxel, stride=2, min_depth=0.3, max_depth=4.0, rgb=rgb)
    pts, pix = backproject_strided(depth, K, pose, 2, 0.3, 4.0)
    keys, xyz, col, cnt = _reference_sums(pts, rgb[pix[:, 0], pix[:, 1]].astype(np.float64), voxel)
    order = np.argsort(got.keys)
    assert np.array_equal(got.keys[order], keys) and np.array_equal(got.count[order], cnt)
    assert np.allclose(got.xyz[order], xyz, rtol=1e-12, atol=1e-9) and np.array_equal(got.rgb[order], col)
    also = reduce_points(pts, rgb[pix[:, 0], pix[:, 1]], voxel)  # the same for a bare cloud
    assert np.array_equal(np.sort(also.keys), keys) and also.count.sum() == cnt.sum() == len(pts)


def test_a_frame_with_far_more_voxels_than_the_last_overflows_its_table_and_is_reduced_again_whole():
    """The hash table is sized for the voxels the last frame of its kind brought: a frame that
    brings many more (a coarse frame, then a fine one) fills it and runs again on a table with
    room for every point -- the sums are those of the numpy reference either way, and the table
    is clean for the frames after it."""
    from ovseg3d.geometry import voxel_reduce

    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 4, (20_000, 3))
    colors = rng.integers(0, 256, (20_000, 3)).astype(np.float64)
    for voxel in (1.0, 0.001, 1.0, 0.001):  # 64 voxels, then ~20,000: far past 1.5 x 64 + 1024
        before = voxel_reduce._TABLE.voxels.get("points")
        got = reduce_points(pts, colors, voxel)
        keys, xyz, col, cnt = _reference_sums(pts, colors, voxel)
        order = np.argsort(got.keys)
        assert np.array_equal(got.keys[order], keys) and np.array_equal(got.count[order], cnt)
        assert np.allclose(got.xyz[order], xyz) and np.array_equal(got.rgb[order], col)
        if voxel < 0.1 and before is not None:
            assert before < 100 and len(got) > 19_000  # this frame did overflow the table it was given
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])
    depth = (1.0 + rng.random((96, 128))).astype(np.float32)
    for voxel in (2.0, 0.0005, 2.0, 0.0005):
        got = reduce_depth(depth, K, np.eye(4), voxel)
        pts, _ = backproject_strided(depth, K, np.eye(4), 1, 0.0, np.inf)
        keys, xyz, _, cnt = _reference_sums(pts, np.zeros_like(pts), voxel)
        order = np.argsort(got.keys)
        assert np.array_equal(got.keys[order], keys) and np.array_equal(got.count[order], cnt)
        assert np.allclose(got.xyz[order], xyz)
    assert not (voxel_reduce._TABLE.slots[:, 0] != -1).any()  # every slot emptied again


def test_a_registered_colour_image_of_another_resolution_is_sampled_at_the_nearest_pixel():
    """A camera's colour at a multiple (or fraction) of its depth's resolution, or a JPEG decoded at
    half size: the same sums as the colour resampled to the depth's pixels first."""
    rng = np.random.default_rng(2)
    depth = (1.0 + 0.5 * rng.random((48, 64))).astype(np.float32)
    K, pose = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]]), np.eye(4)
    for size in ((24, 32), (96, 128), (36, 48)):
        rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        rows, cols = np.arange(48) * size[0] // 48, np.arange(64) * size[1] // 64
        resampled = rgb[rows][:, cols]
        for stride in (1, 2, 3):
            got = reduce_depth(depth, K, pose, 0.05, stride, rgb=rgb)
            want = reduce_depth(depth, K, pose, 0.05, stride, rgb=resampled)
            assert np.array_equal(got.keys, want.keys) and np.array_equal(got.rgb, want.rgb), (size, stride)
    with pytest.raises(UserError, match="aspect"):  # another view, not another resolution
        reduce_depth(depth, K, pose, 0.05, rgb=np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(UserError, match="does not match"):
        reduce_depth(depth, K, pose, 0.05, rgb=np.zeros((0, 0, 3), np.uint8))


@pytest.mark.parametrize("rows,stride", [(96, 2), (101, 3), (90, 4), (5, 1), (1, 2)])
def test_a_frame_reduced_in_two_bands_on_two_threads_is_the_frame_reduced_whole(rows, stride):
    """``reduce_depth_bands`` (the node's keyframes on two cores): the bands' sums together are
    those of one pass -- same pixels on the stride's grid, colour sampled from the whole image of
    another resolution -- and a map that merges the bands holds what it holds after one pass."""
    from concurrent.futures import ThreadPoolExecutor

    from ovseg3d.geometry.voxel_reduce import reduce_depth_bands

    rng = np.random.default_rng(4)
    depth = (1.0 + 0.02 * np.arange(rows)[:, None] + 0.5 * rng.random((rows, 128))).astype(np.float32)
    depth[::5, ::3] = 0
    rgb = rng.integers(0, 256, (-(-rows // 2), 64, 3), dtype=np.uint8)  # a JPEG decoded at half size
    K = np.array([[100.0, 0, 63.5], [0, 100.0, rows / 2], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1.0, -2.0, 0.5]
    whole = reduce_depth(depth, K, pose, 0.05, stride, 0.3, 4.0, rgb)
    with ThreadPoolExecutor(1) as helper:
        bands = reduce_depth_bands(depth, K, pose, 0.05, stride, 0.3, 4.0, rgb, helper)
    assert len(bands) == 2
    keys = np.concatenate([b.keys for b in bands])
    joined, inv = np.unique(keys, return_inverse=True)
    order = np.argsort(whole.keys)
    assert np.array_equal(joined, whole.keys[order])
    for field in ("xyz", "rgb"):
        total = np.zeros((len(joined), 3))
        np.add.at(total, inv, np.concatenate([getattr(b, field) for b in bands]))
        assert np.allclose(total, getattr(whole, field)[order], rtol=1e-12, atol=1e-9), field
    assert np.array_equal(np.bincount(inv, np.concatenate([b.count for b in bands])).astype(int),
                          whole.count[order])
    one, two = VoxelMap(0.05), VoxelMap(0.05)
    one.insert_sums(whole)
    for b in bands:
        two.insert_sums(b)
    a, b = np.argsort(one.keys), np.argsort(two.keys)
    assert np.array_equal(one.keys[a], two.keys[b]) and np.array_equal(one.count[a], two.count[b])
    assert np.allclose(one.points[a], two.points[b], atol=1e-6) and np.abs(one.colors[a] - two.colors[b]).max() <= 1


def test_a_voxel_seen_again_without_colour_stays_grey():
    m = VoxelMap(voxel_size=0.1)
    cloud = [[0.01, 0.01, 0.01], [0.55, 0.55, 0.55], [1.05, 0.05, 0.05]]
    m.insert(cloud, stamp=1.0)
    m.insert(cloud, stamp=2.0)  # every voxel revisited, no colours: the merge reads three grey columns
    assert m.colors.tolist() == [[128, 128, 128]] * 3 and m.count.tolist() == [2, 2, 2]


def test_read_only_images_use_the_kernels_compiled_up_front():
    from ovseg3d.geometry import voxel_map, voxel_reduce
    from ovseg3d.geometry.voxel_map import compile_ingest

    compile_ingest()
    kernels = (voxel_reduce._reduce_depth, voxel_reduce._reduce_points, voxel_map._merge, voxel_map._insert_rows,
               voxel_map._forget, voxel_map._find_all, voxel_map._beyond)
    before = [len(k.signatures) for k in kernels]
    depth, rgb = np.full((8, 8), 1.0, np.float32), np.zeros((8, 8, 3), np.uint8)
    depth.flags.writeable = rgb.flags.writeable = False  # as Pillow's images and message buffers come
    pose = np.eye(4)
    pose.flags.writeable = False
    m = VoxelMap(0.1)
    m.insert_sums(reduce_depth(depth, np.eye(3), pose, 0.1, rgb=rgb))
    m.insert_sums(reduce_points(np.ones((2, 3)), None, 0.1, pose=pose))
    assert [len(k.signatures) for k in kernels] == before  # no compile on a robot's first frames
    with pytest.raises(UserError, match="8-bit"):
        reduce_depth(depth, np.eye(3), pose, 0.1, rgb=rgb.astype(np.float32))
    with pytest.raises(UserError, match="does not match"):
        reduce_depth(depth, np.eye(3), pose, 0.1, rgb=rgb[..., 0])


def test_reduction_refuses_points_off_the_grid_and_keeps_the_map():
    m = VoxelMap(voxel_size=0.02)
    m.insert([[1.0, 2.0, 3.0]])
    with pytest.raises(UserError, match="too far"):
        m.insert([[0.0, 0.0, 0.0], [1e5, 0.0, 0.0]])  # 5,000,000 voxels out: beyond the packed range
    with pytest.raises(UserError, match="too far"):
        reduce_depth(np.full((4, 4), 1e30, np.float32), np.eye(3), np.eye(4), 0.02)
    with pytest.raises(UserError, match="does not fit"):  # reduced for another grid (the map was replaced)
        m.insert_sums(reduce_points(np.zeros((1, 3)), None, 0.05))
    assert len(m) == 1 and m.count.tolist() == [1]
    assert len(reduce_depth(np.full((4, 4), np.nan, np.float32), np.eye(3), np.eye(4), 0.02)) == 0


def test_non_finite_points_are_dropped_and_the_map_keeps_what_it_had():
    m = VoxelMap(voxel_size=0.1)
    m.insert([[0, 0, 0]])
    assert m.insert([[np.nan, 0, 0], [np.inf, 1, 1]]) == 0 and len(m) == 1
    with pytest.raises(UserError, match="too far"):
        m.insert([[1e6, 0, 0]])
    assert len(m) == 1


def test_dirty_flags_follow_changes():
    m = VoxelMap(voxel_size=0.1)
    m.insert(np.random.default_rng(0).uniform(0, 1, (200, 3)))
    assert m.dirty.all()
    assert m.take_dirty().tolist() == list(range(len(m)))
    m.set_predictions(np.arange(len(m)), np.arange(len(m)), np.zeros(len(m)), np.ones(len(m)))
    assert not m.dirty.any()
    m.insert([m.points[0], [5, 5, 5]])
    assert m.dirty.sum() == 2  # the revisited voxel and the new one
    assert m.labels[m.dirty].tolist() in ([0, -1], [-1, 0])


def test_a_revisit_is_dirty_only_when_it_moves_what_the_reader_sees():
    """input_cell: a geometry-only student reads which cell of its grid a voxel's mean falls in,
    so a camera re-seeing mapped surfaces must not make it run again; colours and cell changes do."""
    m = VoxelMap(voxel_size=0.05, input_cell=0.1)
    m.insert([[0.01, 0.01, 0.01], [0.31, 0.31, 0.31]])
    m.take_dirty()
    m.insert([[0.02, 0.02, 0.02]])  # same voxel, its mean stays in the same 10 cm cell
    assert not m.dirty.any()
    m.insert([[0.349, 0.31, 0.31]] * 50)  # mean 0.3488 -> still the cell [0.3, 0.4)
    assert not m.dirty.any()
    m = VoxelMap(voxel_size=0.05, input_cell=0.03)  # a finer reader grid: the mean crosses 0.03
    m.insert([[0.01, 0.01, 0.01]])
    m.take_dirty()
    m.insert([[0.049, 0.01, 0.01]] * 10)
    assert m.dirty.tolist() == [True]
    m = VoxelMap(voxel_size=0.05)  # no input_cell: every revisit (its colour may have changed)
    m.insert([[0.01, 0.01, 0.01]])
    m.take_dirty()
    m.insert([[0.02, 0.02, 0.02]])
    assert m.dirty.tolist() == [True]
    with pytest.raises(UserError, match="input_cell"):
        VoxelMap(voxel_size=0.05, input_cell=0.0)


def test_eviction_by_extent_and_by_size():
    m = VoxelMap(voxel_size=0.1, extent=2.0)
    m.insert([[0, 0, 0], [3, 0, 0]], robot=np.zeros(3))
    assert len(m) == 1 and m.evicted == 1  # 3 m away: outside the extent
    m = VoxelMap(voxel_size=0.1, max_voxels=3)
    for t in range(5):
        m.insert([[t, 0, 0]], stamp=float(t))
    assert len(m) == 3 and sorted(m.points[:, 0].round().tolist()) == [2.0, 3.0, 4.0]  # oldest evicted
    m = VoxelMap(voxel_size=0.1, max_voxels=100)
    for t in range(101):
        m.insert([[t, 0, 0]], stamp=float(t))
    # over the bound: cut to 95 of it at once (the next inserts sort nothing), the oldest first
    assert len(m) == 95 and m.points[:, 0].round().min() == 6.0 and m.evicted == 6
    m = VoxelMap(voxel_size=0.1, extent=2.0)
    m.insert([[1.9, 0, 0], [0, -1.9, 5], [2.1, 0, 0]], robot=np.zeros(3))
    assert len(m) == 2  # x-y distance only: 5 m up is inside
    m.insert([[-0.5, 0, 0]], robot=np.array([-0.5, 0.0, 0.0]))  # the robot moved 0.5 m back along x
    assert sorted(m.points[:, :2].astype(float).round(1).tolist()) == [[-0.5, 0.0], [0.0, -1.9]]  # (1.9, 0): 2.4 m away


def test_a_robot_driving_on_keeps_every_voxel_whole_as_the_map_drops_what_it_left_behind():
    """Eviction moves the last rows into the holes: each voxel's fields must travel with its key and
    the key index must find every one; voxels beyond the extent go once they are 1 % of the map."""
    rng = np.random.default_rng(3)
    m = VoxelMap(voxel_size=0.1, extent=3.0)

    def stamp_fields() -> None:  # every field a function of the voxel's own position
        idx = np.arange(len(m))
        ijk = np.floor(m.xyz / 0.1).astype(np.int64)
        m.set_predictions(idx, (ijk[:, 0] % 100 + 100 * (ijk[:, 1] % 50)).astype(np.int32),
                          (1000 + ijk[:, 0] + 7 * (100 + ijk[:, 1])).astype(np.int32), ijk[:, 2].astype(np.float32))

    for step in range(40):
        x = 0.2 * step
        m.insert(np.c_[rng.uniform(x - 2.5, x + 2.5, 3000), rng.uniform(-2, 2, 3000), rng.uniform(0, 1, 3000)],
                 stamp=float(step), robot=np.array([x, 0.0, 0.0]))
        if step < 30:  # the last ten steps evict rows stamped before them
            stamp_fields()
            evicted_when_stamped = m.evicted
        far = np.hypot(m.xyz[:, 0] - x, m.xyz[:, 1]) > 3.0
        assert far.sum() < max(1, 0.01 * len(m))  # what is left beyond the extent is under 1 % of the map
    assert m.evicted - evicted_when_stamped > 1000 and len(np.unique(m.keys)) == len(m)
    assert (m.index_of(m.keys) == np.arange(len(m))).all()  # the key index finds every voxel where it is
    ijk = np.floor(m.xyz / 0.1).astype(np.int64)
    assert (pack_keys(ijk) == m.keys).all()  # positions stayed with their keys
    labelled = m.labels >= 0  # stamped at some step (the newest voxels may not be)
    lab_ijk = ijk[labelled]
    assert labelled.sum() > 1000
    assert (m.labels[labelled] == 1000 + lab_ijk[:, 0] + 7 * (100 + lab_ijk[:, 1])).all()
    assert (m.scores[labelled] == lab_ijk[:, 2]).all()
    assert (m.feature_row[labelled] == lab_ijk[:, 0] % 100 + 100 * (lab_ijk[:, 1] % 50)).all()


def test_the_key_index_finds_every_voxel_and_forgets_dropped_ones_through_growth_and_cuts():
    """The hash index against a set of every key seen: voxels come and go (the oldest at max_voxels
    cuts, those far from a robot that jumps about at its extent: rows all over the storage), the
    table is rebuilt as it grows; a copy and a restored map look up the same."""
    rng = np.random.default_rng(4)
    m = VoxelMap(voxel_size=0.1, max_voxels=6000, extent=25.0)
    ever: set[int] = set()
    for step in range(30):
        centre = rng.uniform(-20, 20, 3)
        m.insert(centre + rng.normal(0, 1.5, (800, 3)), stamp=float(step), robot=centre)
        ever.update(m.keys.tolist())
        assert (m.index_of(m.keys) == np.arange(len(m))).all() and len(np.unique(m.keys)) == len(m)
        gone = np.array(sorted(ever - set(m.keys.tolist())), np.int64)
        assert (m.index_of(gone) == -1).all()
    assert m.evicted > 5000 and len(gone) > 5000  # many cuts: dropped keys stay dropped
    probe = np.r_[m.keys[::7], gone[::7]]
    assert (m.copy().index_of(probe) == m.index_of(probe)).all()
    fresh = VoxelMap(voxel_size=0.1)
    saved = {name: getattr(m, name).copy() for name in ("keys", "xyz", "rgb", "count", "last_seen",
                                                         "feature_row", "labels", "scores", "instances")}
    fresh.restore(saved)
    assert (fresh.index_of(probe) == m.index_of(probe)).all()
    saved["keys"][-1] = saved["keys"][len(m) // 2]  # a damaged file: one voxel twice
    with pytest.raises(UserError, match="same voxel twice"):
        fresh.restore(saved)
    assert len(fresh) == len(m) and (fresh.index_of(probe) == m.index_of(probe)).all()  # untouched
    assert m.nbytes_per_voxel()["index"] <= 20 and fresh.nbytes_per_voxel()["index"] <= 20  # 4-byte slots


def test_save_writes_ply_and_arrays(tmp_path):
    m = VoxelMap(voxel_size=0.1)
    m.insert([[0, 0, 0], [1, 1, 1]], [[10, 20, 30], [40, 50, 60]])
    ply, npz = save_map(m, tmp_path / "maps" / "first")
    mesh = read_ply(ply)
    assert len(mesh.points) == 2 and "label" in mesh.vertex_props
    assert np.load(npz)["points"].shape == (2, 3)
    assert not list((tmp_path / "maps").glob(".*tmp*"))


def test_isolated_voxels_show_voxels_finer_than_the_point_spacing():
    from ovseg3d.geometry.voxels import isolated_voxel_fraction

    g = np.arange(10) * 0.1 + 0.025  # a 10 cm grid of points, off the cell borders
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    assert isolated_voxel_fraction(grid, 0.05) == 1.0  # every neighbour two cells away
    assert isolated_voxel_fraction(grid, 0.1) == 0.0
    lonely = np.vstack([grid, [[5.0, 5.0, 5.0]]])
    assert isolated_voxel_fraction(lonely, 0.1) == pytest.approx(1 / len(lonely))
    assert isolated_voxel_fraction(np.zeros((0, 3)), 0.1) == 0.0


def test_unique_values_and_rows_agree_with_numpy():
    """The sort-based uniques every voxel grid and edge list goes through (numpy 2.4's hashing
    np.unique took seconds on a room's edges) give numpy's answers, in its order."""
    from ovseg3d.geometry.rows import unique_rows, unique_values

    rng = np.random.default_rng(0)
    for values in (np.zeros(0, np.int64), np.array([5]), rng.integers(-2**40, 2**40, 5000),
                   rng.integers(0, 7, 5000)):
        assert np.array_equal(unique_values(values), np.unique(values))
    rows = rng.integers(-3, 4, (4000, 3))
    assert np.array_equal(unique_rows(rows), np.unique(rows, axis=0))
    got, inverse = unique_rows(rows, return_inverse=True)
    assert np.array_equal(got[inverse], rows)


def test_row_copies_and_key_rows_agree_with_numpy():
    """``take_rows`` (whole rows as one item: what the live map copies under its lock) and
    ``key_rows`` (hashed membership) give numpy's fancy indexing and ``np.isin`` answers."""
    from ovseg3d.geometry.rows import take_rows
    from ovseg3d.geometry.voxel_map import key_rows

    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.int8, np.float64):
        a = (rng.random((500, 3)) * 100).astype(dtype)
        mask, index = rng.random(500) < 0.4, rng.integers(-500, 500, 200)
        assert np.array_equal(take_rows(a, mask), a[mask]) and np.array_equal(take_rows(a, index), a[index])
        assert np.array_equal(take_rows(a[:100], np.s_[10:20]), a[10:20])
    assert take_rows(np.zeros((9, 0), np.int8), np.arange(3)).shape == (3, 0)  # a map without instance codes
    with pytest.raises(IndexError):
        take_rows(np.zeros((9, 3)), np.ones(8, bool))
    a = np.arange(27.0).reshape(9, 3)
    with pytest.raises(IndexError):
        take_rows(a, np.array([0, 1, 9]))
    assert np.array_equal(take_rows(a, [2, 0]), a[[2, 0]]) and take_rows(a, 4).shape == (3,)  # numpy's own
    table = np.unique(rng.integers(-2**40, 2**40, 300))
    keys = np.concatenate([table[::2], rng.integers(-2**40, 2**40, 1000)])
    rows = key_rows(table, keys)
    assert np.array_equal(rows >= 0, np.isin(keys, table)) and np.array_equal(table[rows[rows >= 0]], keys[rows >= 0])


@pytest.mark.parametrize("dtype", [np.int8, np.float16, np.float32, np.float64])
def test_segment_means_of_numpy_rows_are_the_tensor_path_s(dtype):
    """The compiled pass over a map's arrays (codes, positions) pools as torch's ``index_add_`` does,
    in any of their dtypes; an empty segment has mean 0 and count 0; a bad id is refused."""
    import torch

    from ovseg3d.geometry.voxels import segment_mean

    rng = np.random.default_rng(3)
    rows = (rng.integers(-127, 128, (5000, 7)) if dtype == np.int8 else rng.normal(size=(5000, 7))).astype(dtype)
    seg = rng.integers(0, 400, 5000)
    seg[seg == 17] = 18  # segment 17 holds no row
    means, counts = segment_mean(rows, seg, 401)
    ref, ref_counts = segment_mean(torch.from_numpy(rows.astype(np.float64)), torch.from_numpy(seg), 401)
    assert means.dtype == torch.float32 and counts.dtype == torch.float32
    assert torch.equal(counts, ref_counts.float()) and counts[17] == 0 and counts[400] == 0
    assert torch.allclose(means.double(), ref, atol=1e-5 * float(np.abs(rows.astype(np.float64)).max()))
    assert torch.equal(means[17], torch.zeros(7))
    assert torch.equal(segment_mean(rows, torch.from_numpy(seg), 401)[0], means)  # ids as a tensor too
    with pytest.raises(IndexError):
        segment_mean(rows, np.where(seg == 3, 401, seg), 401)
    with pytest.raises(IndexError):
        segment_mean(rows, np.where(seg == 3, -1, seg), 401)
