"""The live map's compact feature store: codes and float16 rows against the uncompressed student
features, the feature table voxels point into, queries and relabelling from it, and saved maps
(this format and the previous one) read back, or refused, whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ovseg3d.errors import UserError
from ovseg3d.segment.feature_codes import FeatureCodec, TextProjection, recode
from ovseg3d.segment.feature_table import FeatureTable


def _low_rank(n: int, rank: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, rank, generator=g) @ torch.randn(rank, dim, generator=g) + torch.randn(dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def test_codes_round_trip_and_score_like_the_features():
    feats = _low_rank(3000, 12, 64)
    codec = FeatureCodec.fit(feats, 16)
    codes = codec.encode(feats)
    assert codes.dtype == np.int8 and codes.shape == (3000, 16)
    assert (codec.decode(codes) - feats).norm(dim=1).max() < 0.02  # the 12-d subspace fits in 16 axes
    assert codec.residual(feats) < 1e-4 and codec.residual(_low_rank(500, 12, 64, seed=1)) > 0.1
    texts = torch.nn.functional.normalize(torch.randn(7, 64), dim=1)
    exact = feats @ texts.T
    answers = {}
    for method in ("float", "int8"):  # the product this CPU runs faster, and the other one
        labels, scores = TextProjection(codec, texts, method).best(codes)
        assert (labels == exact.argmax(1).numpy()).mean() >= 0.99
        assert np.abs(scores - exact.max(1).values.numpy()).max() < 0.02
        one = TextProjection(codec, texts[0], method).scores(codes)
        assert np.corrcoef(one, exact[:, 0].numpy())[0, 1] > 0.999
        few = TextProjection(codec, texts, method).best(codes[:5])  # fewer rows than an int8 product takes
        assert (few[0] == labels[:5]).all() and np.allclose(few[1], scores[:5], atol=1e-4)
        answers[method] = scores
    assert np.abs(answers["float"] - answers["int8"]).max() < 1e-3  # two int8 weight digits: float-exact
    from ovseg3d.segment import feature_codes

    scanned = {}
    for compiled in (True, False):  # the compiled pass and the widened product: whichever is timed faster here
        feature_codes._SCAN_FASTER[codes.shape[1]] = compiled
        scanned[compiled] = TextProjection(codec, texts[0], "float").scores(codes)
    feature_codes._SCAN_FASTER.pop(codes.shape[1])
    assert np.allclose(scanned[True], scanned[False], atol=1e-5)
    again = FeatureCodec.from_state(codec.state())
    assert (again.encode(feats) == codes).all()
    with pytest.raises(UserError, match="64-d"):
        codec.encode(torch.ones(3, 32))
    with pytest.raises(UserError, match="malformed"):
        FeatureCodec.from_state({**codec.state(), "code_step": np.ones(3, np.float32)})
    with pytest.raises(UserError, match="NaN"):
        FeatureCodec.from_state({**codec.state(), "code_mean": np.full(64, np.nan, np.float32)})


def test_exact_rows_hold_the_coordinates_and_rank_like_the_features():
    """float16 rows (a table shared by many voxels): the coordinates themselves, no steps or digits;
    a query's best answers come out in the uncompressed features' order, where int8 codes of the
    same axes swap near-ties."""
    feats = _low_rank(20_000, 12, 64, seed=6)
    codec = FeatureCodec.fit(feats, 16, exact=True)
    rows = codec.encode(feats)
    assert codec.exact and rows.dtype == np.float16 and rows.shape == (20_000, 16) and codec.fine == 0
    assert not rows[:, codec.axes:].any() and codec.widened(feats * 50) is codec  # never saturates
    assert (codec.decode(rows) - feats).norm(dim=1).max() < 2e-3
    int8 = FeatureCodec.fit(feats, 16)
    texts = torch.nn.functional.normalize(torch.randn(20, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    exact16, codes8 = [], []
    for t in texts:
        truth = (feats @ t).numpy()
        kth = np.sort(truth)[-1000]
        for found, c, out in ((rows, codec, exact16), (int8.encode(feats), int8, codes8)):
            got = TextProjection(c, t).scores(found)
            out.append(float((truth[np.argsort(-got)[:1000]] >= kth).mean()))
    assert min(exact16) >= 0.995 and np.mean(exact16) > np.mean(codes8), (exact16, codes8)
    labels, _ = TextProjection(codec, texts).best(rows)
    assert (labels == (feats @ texts.T).argmax(1).numpy()).mean() >= 0.999
    with pytest.raises(ValueError, match="int8"):
        TextProjection(codec, texts, "int8")
    with pytest.raises(UserError, match="float16"):
        TextProjection(codec, texts[0]).scores(int8.encode(feats))
    again = FeatureCodec.from_state(codec.state())
    assert again.exact and (again.encode(feats) == rows).all()
    moved = FeatureCodec.fit(feats[:3000] * 1.5, 16, exact=True)  # the same span: other mean, axes and order
    before = codec.decode(rows)
    recode(rows, codec, moved)
    assert (moved.decode(rows) - before).norm(dim=1).max() < 2e-3


def test_the_feature_table_drops_rows_nobody_points_at_and_keeps_each_voxels_own():
    rng = np.random.default_rng(8)
    table = FeatureTable(3, 1, np.float16, capacity=4)
    voxel_rows = np.full(20_000, -1, np.int32)
    for step in range(12):  # each update rewrites a block of voxels: their old rows become garbage
        block = np.arange(step * 1000, step * 1000 + 6000) % len(voxel_rows)
        fresh = table.append(rng.normal(size=(3000, 3)).astype(np.float16), rng.normal(size=(3000, 1)))
        voxel_rows[block] = fresh[rng.integers(0, 3000, len(block))]
        expected = np.where(voxel_rows[:, None] >= 0, table.semantic[voxel_rows], 0)
        if table.wants_compaction():
            table.compact(voxel_rows)
            assert table.n == len(np.unique(voxel_rows[voxel_rows >= 0]))
        got = np.where(voxel_rows[:, None] >= 0, table.semantic[voxel_rows], 0)
        assert (got == expected).all() and table.n <= 1.25 * table.live + 4096 + 3000
    assert table.live > 0 and table.n < 12 * 3000  # compacted on the way
    some = voxel_rows[::3]
    sub, rows = table.subset(some)
    assert ((rows >= 0) == (some >= 0)).all() and (some < 0).any() and sub.n == len(np.unique(rows[rows >= 0]))
    has = some >= 0
    assert (sub.semantic[rows[has]] == table.semantic[some[has]]).all() and sub.widths == (3, 1)
    assert (sub.instance[rows[has]] == table.instance[some[has]]).all()


def test_codes_follow_new_axes_without_the_features():
    first, later = _low_rank(2000, 8, 64), _low_rank(2000, 8, 64, seed=3)
    old = FeatureCodec.fit(first, 24)
    codes = old.encode(first)
    new = FeatureCodec.fit(torch.cat([old.decode(codes), later]), 24)  # axes that hold both rooms
    recode(codes, old, new)
    assert (new.decode(codes) - first).norm(dim=1).max() < 0.05


def test_codes_hold_the_features_span_and_spend_spare_columns_on_finer_digits():
    feats = _low_rank(4000, 10, 64, seed=2)  # unit features of a 10-d affine family: 11 axes at most
    tight = FeatureCodec.fit(feats, 11)
    roomy = FeatureCodec.fit(feats, 24)
    assert roomy.axes == tight.axes == 11 and roomy.fine == 11 and tight.fine == 0
    codes = roomy.encode(feats)
    assert codes.shape == (4000, 24) and (codes[:, 22:] == 0).all()  # columns past axes + fine stay unused
    coarse_err = (tight.decode(tight.encode(feats)) - feats).norm(dim=1).max()
    fine_err = (roomy.decode(codes) - feats).norm(dim=1).max()
    assert fine_err < coarse_err / 50, (float(fine_err), float(coarse_err))
    texts = torch.nn.functional.normalize(torch.randn(5, 64), dim=1)
    exact = (feats @ texts.T).numpy()
    for one, t in zip(exact.T, texts):
        got = TextProjection(roomy, t).scores(codes)
        assert np.abs(got - one).max() < 1e-4  # the fine digits reach the int8 product too
    with pytest.raises(UserError, match="width"):
        FeatureCodec.from_state({k: v for k, v in roomy.state().items() if k != "code_width"})


def test_isometric_coordinates_keep_the_features_inner_products():
    feats = _low_rank(800, 9, 64, seed=5)
    codec = FeatureCodec.fit(feats, 16)
    coords = codec.coordinates(codec.encode(feats))
    lifted, iso = codec.lift(coords), codec.isometric(coords)
    assert iso.shape == (800, codec.axes + 1)
    assert (lifted @ lifted.T - iso @ iso.T).abs().max() < 1e-5  # cosines of 64-d features from 10 numbers
    assert (codec.from_isometric(iso) - lifted).abs().max() < 1e-5


def test_a_feature_beyond_an_axis_range_widens_that_axis_instead_of_saturating():
    feats = _low_rank(2000, 6, 32, seed=4)
    codec = FeatureCodec.fit(feats, 8)
    codes = codec.encode(feats)
    far = codec.mean + 3 * (feats[1:2] - codec.mean)  # in the span, three times further out
    assert codec.overflows(far) and not codec.overflows(feats)
    wide = codec.widened(far)
    assert not wide.overflows(far) and (wide.basis is codec.basis)
    assert (wide.step >= codec.step).all() and (wide.step > codec.step).any()
    saturated = (codec.decode(codec.encode(far)) - far).norm()
    assert (wide.decode(wide.encode(far)) - far).norm() < saturated / 5
    before = codec.decode(codes)
    recode(codes, codec, wide)
    assert (wide.decode(codes) - before).norm(dim=1).max() < float(wide.step.max())


@pytest.fixture(scope="module", params=["auto", "int8"])
def live_pair(request, node_checkpoint, synth_root, tiny_clip):
    """A live map of one synthetic scene (the test instrument) built with the tests' trained student,
    and the uncompressed features of its voxels: with float16 rows (``auto``: the student's voxels
    are twice the map's) and with int8 rows (as for a student as fine as the map)."""
    from ovseg3d.data.scannet import ScanNetScene
    from ovseg3d.labels import load_label_set
    from ovseg3d.segment.live_map import LiveConfig, LiveSegmenter
    from ovseg3d.student.checkpoint import load_student
    from ovseg3d.text.vocabulary import build_vocabulary

    student, _ = load_student(node_checkpoint, "cpu")
    vocab = build_vocabulary(load_label_set("scannet20"), tiny_clip)
    live = LiveSegmenter(student, vocab, LiveConfig(voxel_size=0.05, instance_cell=0.1, instance_min_points=20,
                                                    feature_rows=request.param))
    assert live.exact == (request.param == "auto") and student.cfg.voxel_size >= 0.1
    for f in ScanNetScene(synth_root / "scene0000_00").frames(stride=2):
        live.add_rgbd(f.depth, f.K, f.pose, stamp=float(f.frame_id), rgb=f.color)
    live.update(force=True)
    return live, student.predict(live.map.points)


def test_labels_and_queries_from_codes_match_the_uncompressed_features(live_pair):
    live, feats = live_pair
    memory = live.memory()
    assert live.codec.axes < feats.shape[1] and memory["features"] <= 64
    assert memory["voxels_per_row"] > 2  # 10 cm student voxels on a 5 cm map share their rows
    live.set_vocabulary(live.vocab)  # relabel every voxel from its rows
    exact_labels = live.vocab.classify(feats)[0].numpy()
    assert (live.map.labels == exact_labels).mean() >= (0.999 if live.exact else 0.99)
    for name in ("chair", "table", "floor"):
        t = live.vocab.class_embeddings()[live.vocab.names.index(name)]
        got = live.query(t, threshold=-1, max_points=1000)
        exact = (feats @ t).numpy()
        # an answer is right when its exact score is among the best 1000: map voxels inside one
        # student voxel share its feature, so ties at the 1000th place are common
        kth = np.sort(exact)[-1000]
        where = {p: i for i, p in enumerate(map(tuple, live.map.points.round(5).tolist()))}
        answered = np.array([where[p] for p in map(tuple, got.points.round(5).tolist())])
        overlap = float((exact[answered] >= kth - 1e-6).mean())
        assert len(answered) == 1000 and overlap >= (0.99 if live.exact else 0.95), (name, overlap)
        assert got.instances and got.instances[0][1] >= got.instances[-1][1]


def test_saved_map_loads_back_whole_and_foreign_maps_are_refused(live_pair, tmp_path, node_checkpoint):
    from ovseg3d.segment.live_map import LiveSegmenter
    from ovseg3d.student.checkpoint import load_student
    from ovseg3d.student.model import Student, StudentConfig

    live, _ = live_pair
    _, npz = live.save(tmp_path / "floor")
    student, _ = load_student(node_checkpoint, "cpu")
    other = LiveSegmenter(student, live.vocab, live.cfg)
    assert other.load(npz) == len(live.map)
    order, other_order = np.argsort(live.map.keys), np.argsort(other.map.keys)
    assert (live.map.keys[order] == other.map.keys[other_order]).all()
    for name in ("labels", "instances"):
        assert (getattr(live.map, name)[order] == getattr(other.map, name)[other_order]).all(), name
    assert (live.voxel_codes()[order] == other.voxel_codes()[other_order]).all()
    assert other.exact == live.exact and other.table.n <= live.table.n  # saved without garbage rows
    # a saved map keeps instance scores in float32: compared at that precision (rounding to 5
    # decimals flipped one of 50 scores that lay within float32's error of a rounding boundary)
    summary = {i.id: (i.label, np.float32(i.score), i.num_points) for i in live.instances}
    assert summary and {i.id: (i.label, np.float32(i.score), i.num_points) for i in other.instances} == summary
    assert other.vocab.names == live.vocab.names
    damaged = tmp_path / "damaged.npz"
    arrays = dict(np.load(npz))
    np.savez(damaged, **{**arrays, "instance_labels": np.full_like(arrays["instance_labels"], 999)})
    with pytest.raises(UserError, match="instance table"):
        other.load(damaged)
    unlabelled = np.full_like(arrays["labels"], -1)  # every row kept: voxels pointing at rows no label backs
    table_nan = arrays["table_codes"].astype(np.float16 if live.exact else np.float32)  # int8: a float table
    table_nan[:, :1] = np.nan
    code_fine = {"code_fine": np.int32(1)} if live.exact else {"code_step": np.zeros_like(arrays["code_step"])}
    for change, words in (({"labels": unlabelled}, "feature row differ"),
                          ({"table_codes": table_nan}, "NaN" if live.exact else "int8 or float16"),
                          (code_fine, "malformed" if live.exact else "non-positive")):
        np.savez(damaged, **{**arrays, **change})
        with pytest.raises(UserError, match=words):
            other.load(damaged)
        assert other.map.labels.max() >= 0 and len(other.map) == len(live.map)  # the live map as it was

    # refusals leave the running map as it was
    stranger = LiveSegmenter(Student(StudentConfig(arch="MinkUNetSmall", feature_dim=student.cfg.feature_dim,
                                                   voxel_size=0.1, instance_hidden=64)).eval(), live.vocab, live.cfg)
    stranger.add_points(np.random.default_rng(0).uniform(0, 1, (500, 3)), 1.0, np.zeros(3))
    stranger.update()
    before = (len(stranger.map), stranger.map.labels.copy(), stranger.voxel_codes())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(npz.read_bytes()[:5000])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, points=np.zeros((3, 3)))
    for path, message in ((npz, "another student"), (truncated, "not a readable map"),
                          (foreign, "not an ovseg3d map"), (tmp_path / "absent.npz", "no saved map")):
        with pytest.raises(UserError, match=message):
            stranger.load(path)
        assert len(stranger.map) == before[0] and (stranger.map.labels == before[1]).all()
        assert (stranger.voxel_codes() == before[2]).all()
    wide = LiveSegmenter(Student(StudentConfig(arch="MinkUNetSmall", feature_dim=32, voxel_size=0.1)).eval(),
                         type(live.vocab)(["a"], torch.ones(1, 32), torch.arange(1)), live.cfg)
    with pytest.raises(UserError, match="this student predicts 32-d"):
        wide.load(npz)


@pytest.mark.parametrize("live_pair", ["int8"], indirect=True)  # format 2 held int8 codes only
def test_a_map_saved_as_format_2_is_read_into_a_table(live_pair, tmp_path, node_checkpoint):
    """Maps written before the feature table (int8 codes on every voxel) load as a table with a row
    per voxel: same labels, instances and query answers; the live map then goes on in their rows."""
    from ovseg3d.segment.live_map import LiveSegmenter
    from ovseg3d.student.checkpoint import load_student

    live, _ = live_pair
    _, npz = live.save(tmp_path / "v3")
    arrays = {k: v for k, v in np.load(npz).items() if k not in ("feature_row", "table_codes", "table_instance_codes")}
    old = tmp_path / "v2.npz"
    np.savez(old, **{**arrays, "version": np.array(2), "codes": live.voxel_codes(),
                     "instance_codes": live.voxel_codes(instance=True)})
    student, _ = load_student(node_checkpoint, "cpu")
    other = LiveSegmenter(student, live.vocab, live.cfg)
    assert other.load(old) == len(live.map) and (other.map.labels == live.map.labels).all()
    assert (other.voxel_codes() == live.voxel_codes()).all() and other.table.n == len(live.map)
    t = live.vocab.class_embeddings()[live.vocab.names.index("chair")]
    assert np.array_equal(other.query(t, threshold=-1, max_points=500).points,
                          live.query(t, threshold=-1, max_points=500).points)
    other.add_points(live.map.points[:200] + 3.0, 99.0, np.zeros(3))
    assert other.update() is not None and (other.map.labels >= 0).all()
    # a node configured for float16 rows takes the old map's int8 rows as they are, until a reset
    auto = LiveSegmenter(student, live.vocab, dataclasses.replace(live.cfg, feature_rows="auto"))
    assert auto.exact and auto.load(old) == len(live.map) and not auto.exact and auto.table.widths == live.code_widths
    auto.reset()
    assert auto.exact and auto.table.n == 0 and auto.codec is None
    np.savez(old, **{**arrays, "version": np.array(2), "codes": live.voxel_codes()[:5],
                     "instance_codes": live.voxel_codes(instance=True)})
    with pytest.raises(UserError, match="one row a voxel"):
        other.load(old)
    np.savez(old, **{**np.load(npz), "feature_row": np.full(len(live.map), 10**6, np.int32)})
    with pytest.raises(UserError, match="outside its table"):
        other.load(old)
