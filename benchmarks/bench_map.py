"""The live map at robot scale, side by side in one run: the compact feature store (a table of one
row per student voxel that the map voxels point at, ``segment.feature_table``: float16 coordinates
in a principal subspace when the student is coarser than the map, int8 codes when it is as fine,
``segment.feature_codes``) against the uncompressed brute-force path it replaced (fp16 512-d
features on every voxel, copied and converted per query), and against int8 codes on every voxel
(the store before the table).

Measured: bytes per voxel; labels and query answers from the stored rows against the uncompressed
student features on a held-out synthetic room (the test instrument; the axes are fitted on
another room); text query, 200-word relabel and brute-force times at 100k, 1M and 4M voxels; a saved
map's size and save / load times at 1M; the ``~/text_query`` round trip from another process to a
node holding that map;
instance regrouping on a room-sized map; and (unless --no-replay) a real-time replay of a synthetic
stream into the node process (``bench_node`` without hostile inputs), with queue losses, ingest
cost and latency; and one keyframe's insert into maps of those sizes while the robot drives on.
The student is --checkpoint, by default the demo's (``make demo`` writes it);
without one, a random-weight MinkUNet18A, whose features spread evenly over 97 dimensions (nothing
a trained student does): its compression figures are printed but say little. The text encoder is
the default CLIP with random weights: its word embeddings are much closer to each other than real
ones, which makes label agreement harder, not easier. Room maps are cut to ``--room-voxels``
voxels (a region of each room), so the student's CPU time stays in minutes.

Run: ovseg3d bench map [--quick] [--json FILE] [--checkpoint C | --random-student] [--no-replay]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_scene
from ovseg3d.geometry.voxel_map import GROWTH, VoxelMap
from ovseg3d.geometry.voxel_reduce import reduce_depth, reduce_points
from ovseg3d.labels import load_label_set
from ovseg3d.segment.feature_codes import FeatureCodec, TextProjection
from ovseg3d.segment.feature_table import GARBAGE, FeatureTable
from ovseg3d.segment.live_map import LiveConfig, LiveSegmenter
from ovseg3d.segment.query import text_scores
from ovseg3d.student.checkpoint import load_student, save_checkpoint
from ovseg3d.student.model import Student, StudentConfig
from ovseg3d.text.clip_model import DEFAULT_CLIP_MODEL, ClipSpec
from ovseg3d.text.vocabulary import Vocabulary, build_vocabulary, embed_prompts

SIZE_TAGS = {100_000: "100k", 1_000_000: "1m", 4_000_000: "4m"}  # map sizes as the JSON keys name them
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "demo_out" / "runs" / "demo" / "last.pt"
REPLAY_STUDENT_VOXEL, REPLAY_INSTANCE_CELL = 0.1, 0.1  # the demo's node (its map: 5 cm voxels)
CAP = 20_000  # answer points per query (a client's max_points; the node's default cap is 200,000)


def room_points(scene: ScanNetScene, voxel: float, voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """The voxel centres and mean colours a robot's map of the room holds (every frame, stride 2, as
    the live map reduces them), cut to the ``voxels`` nearest the room's first corner along x then y
    (a region, not a thinning). Colours for students that read them (the demo's)."""
    vmap = VoxelMap(voxel)
    for f in scene.frames(stride=1):
        vmap.insert_sums(reduce_depth(f.depth, f.K, f.pose, voxel, stride=2, rgb=f.color))
    pts = vmap.points
    order = np.argsort(pts[:, 0] + 0.5 * pts[:, 1], kind="stable")[:voxels]
    return pts[order], vmap.colors[order]


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def tiled_map(rows: np.ndarray, index: np.ndarray, n: int, inst_width: int = 0) -> tuple[VoxelMap, FeatureTable]:
    """A map of ``n`` voxels that repeats a room's (its voxels pointing at ``rows`` through
    ``index``), and its feature table: each copy of the room has rows of its own, as a floor of many
    rooms holds as many rows per voxel as one room does (what a query's and a relabel's cost follow)."""
    vmap = VoxelMap(0.02, max_voxels=n)
    rng = np.random.default_rng(0)
    copy = np.arange(n) // len(index)
    voxel_rows = (np.tile(index, -(-n // len(index)))[:n] + copy * len(rows)).astype(np.int32)
    copies = int(copy[-1]) + 1
    table = FeatureTable.of(np.tile(rows, (copies, 1)), np.zeros((copies * len(rows), inst_width), rows.dtype))
    vmap.restore({"keys": np.arange(n, dtype=np.int64), "xyz": rng.uniform(0, 50, (n, 3)).astype(np.float32),
                  "rgb": np.full((n, 3), 128, np.float32), "count": np.ones(n, np.int32),
                  "last_seen": np.zeros(n), "labels": np.zeros(n, np.int32), "scores": np.zeros(n, np.float32),
                  "instances": np.full(n, -1, np.int32), "feature_row": voxel_rows})
    return vmap, table


def bruteforce_query(feats16: np.ndarray, t: torch.Tensor) -> np.ndarray:
    """The replaced path: copy every labelled fp16 feature, convert to float32, score, sort."""
    feats = torch.from_numpy(feats16[np.arange(len(feats16))]).float()
    scores = text_scores(feats, t)
    keep = np.flatnonzero(scores >= -1)
    return keep[np.argsort(-scores[keep], kind="stable")][:CAP]


def bruteforce_relabel(feats16: np.ndarray, vocab: Vocabulary) -> None:
    for start in range(0, len(feats16), 200_000):
        vocab.classify(torch.from_numpy(feats16[start:start + 200_000]).float())


def save_and_load(live: LiveSegmenter, rows: np.ndarray, index: np.ndarray, held: torch.Tensor, tmp: Path) -> dict:
    """Save a 1M-voxel map (``~/save_map``, autosave) and load it back (``~/load_map``, ``map.load``)."""
    inst_width = live.code_widths[1]
    live.map, live.table = tiled_map(rows, index, 1_000_000, inst_width)
    # instance codes' axes: any 512-d codec stands in (sizes and times do not depend on their values)
    live.instance_codec = FeatureCodec.fit(held, inst_width, exact=live.exact) if inst_width else None
    t0 = time.perf_counter()
    ply, npz = live.save(tmp / "map_1m")
    t1 = time.perf_counter()
    voxels = live.load(npz)
    t2 = time.perf_counter()
    assert voxels == 1_000_000
    return {"save_s_1m": t1 - t0, "load_s_1m": t2 - t1, "saved_npz_mb_1m": npz.stat().st_size / 1e6,
            "saved_ply_mb_1m": ply.stat().st_size / 1e6}


def service_round_trip(checkpoint: Path, save_dir: Path, stem: str, voxel: float, repeats: int = 15) -> dict:
    """``~/text_query`` as a client asks it: ``ovseg3d_node`` in its own process restores the saved map
    ``stem`` (``map.load``), and this process calls the service with the answer cloud capped at
    ``CAP`` points; wall time from the call to the answer, median over ``repeats`` words."""
    import threading

    from ovseg3d.ros_tools.node_process import NodeProcess
    from ovseg3d_interfaces.srv import TextQuery

    params = {"checkpoint": str(checkpoint), "clip.model": DEFAULT_CLIP_MODEL, "device": "cpu",
              "map.voxel_size": voxel, "map.max_voxels": 1_200_000, "save_dir": str(save_dir), "map.load": stem,
              "query.max_points": CAP}
    node = NodeProcess(params, save_dir / "node.log")
    try:
        t0 = time.perf_counter()
        node.start(timeout=300)
        started = time.perf_counter() - t0
        client = node._client(TextQuery, f"{node.prefix}/text_query")
        times, points = [], []
        for i in range(repeats + 1):  # the first call (a new client's matching) is not counted
            done = threading.Event()
            t0 = time.perf_counter()
            text = f"the {('chair', 'fire extinguisher', 'red mug')[i % 3]} number {i}"  # new words: no cache
            future = client.call_async(TextQuery.Request(text=text, threshold=-1.0, max_points=CAP))
            future.add_done_callback(lambda _, done=done: done.set())
            if not done.wait(60):
                raise RuntimeError(f"~/text_query did not answer within 60 s; node log:\n{node.log()[-2000:]}")
            if i:
                times.append(time.perf_counter() - t0)
                res = future.result()
                if not res.success:
                    raise RuntimeError(f"~/text_query refused: {res.message}")
                points.append(res.points.width * res.points.height)
        return {"text_query_round_trip_ms_median_1m": 1000 * float(np.median(times)),
                "text_query_round_trip_ms_p90_1m": 1000 * float(np.percentile(times, 90)),
                "text_query_points": int(np.median(points)), "node_start_with_1m_map_s": started}
    finally:
        node.close()


def _ms(value: float | None) -> str:
    return "not run (memory)" if value is None else f"{value:.1f}"


def driving_insert_ms(n: int, frames: int = 40, seed: int = 0) -> tuple[float, int]:
    """Median ms of one keyframe's insert (15k voxel sums at 5 cm, a third of them new) into a map of
    ``n`` voxels bounded by ``map.extent`` while the robot drives on 15 cm a frame, as the live map's
    ingest does it (``insert_sums`` under the lock); and the voxels evicted meanwhile. A map of that
    size is a whole floor at 5 cm; the robot leaves some of it behind beyond the extent every frame."""
    rng = np.random.default_rng(seed)
    extent, voxel = 8.0, 0.05
    vmap = VoxelMap(voxel, max_voxels=2 * n + 100_000, extent=extent, input_cell=0.1)
    # the floor so far: n voxels scattered over the disc of the extent around the robot, 0-2.5 m high
    r, a = extent * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    vmap.insert(np.c_[r * np.cos(a), r * np.sin(a), rng.uniform(0, 2.5, n)], robot=np.zeros(3))
    times = []
    for f in range(frames):
        x = 0.15 * (f + 1)
        # what the camera sees ahead: 10k voxels already mapped, 5k new ones
        old = vmap.xyz[rng.integers(0, len(vmap), 10_000)].astype(np.float64)
        new = np.c_[rng.uniform(x + 2, x + 4, 5000), rng.uniform(-2, 2, 5000), rng.uniform(0, 2.5, 5000)]
        sums = reduce_points(np.r_[old, new], None, voxel)
        t0 = time.perf_counter()
        vmap.insert_sums(sums, stamp=float(f), robot=np.array([x, 0.0, 0.0]))
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)), vmap.evicted


def replay(minutes: float, quick: bool) -> dict:
    """bench_node's stream (no hostile inputs) in its own process; its JSON report."""
    out = Path(tempfile.mkdtemp(prefix="ovseg3d_bench_map_")) / "node.json"
    # the stream: a 30 Hz camera (compressed, as a robot sends it: raw 640x480 at 30 Hz lost two
    # thirds of its images between two Python processes here) and a 10 Hz LiDAR, a robot's pace. The
    # node as the demo runs it: a MinkUNetSmall of 10 cm voxels on a 5 cm map, instances on 10 cm cells
    cmd = [sys.executable, str(Path(__file__).with_name("bench_node.py")), "--hostile-every", "0", "--minutes",
           str(minutes), "--camera-hz", "30", "--room-seconds", "8", "--arch", "MinkUNetSmall", "--student-voxel",
           str(REPLAY_STUDENT_VOXEL), "--param", f"instances.cell={REPLAY_INSTANCE_CELL}", "--compressed",
           "--out", str(out)] + (["--quick"] if quick else [])
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    if subprocess.run(cmd, env={**os.environ}).returncode != 0 or not out.exists():
        return {}
    report = json.loads(out.read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="sizes up to 1M voxels and a 1-minute replay")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT if DEMO_CHECKPOINT.exists() else None,
                   help="the student (default: the demo's, when `make demo` has run; else random weights)")
    p.add_argument("--random-student", action="store_true",
                   help="the papers' student shape instead (random-weight MinkUNet18A of 2 cm voxels on the 2 cm map: "
                        "every voxel its own row, int8 codes), even when the demo's exists")
    p.add_argument("--room-voxels", type=int, default=160_000, help="voxels of each room's map (a region of it)")
    p.add_argument("--no-replay", action="store_true", help="skip the real-time replay")
    p.add_argument("--replay-minutes", type=float, default=5.0)
    args = p.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="ovseg3d_bench_map_"))
    if args.checkpoint and not args.random_student:
        student, _ = load_student(args.checkpoint, "cpu")
        checkpoint = args.checkpoint
    else:
        print("--random-student, or no --checkpoint and no demo run: a RANDOM-WEIGHT MinkUNet18A of 2 cm voxels; "
              "compression figures say little")
        student = Student(StudentConfig(arch="MinkUNet18A", feature_dim=512, voxel_size=0.02)).eval()
        checkpoint = save_checkpoint(tmp / "student.pt", student, {}, "scannet20")  # for the node process
    spec = ClipSpec(model=DEFAULT_CLIP_MODEL)
    vocab = build_vocabulary(load_label_set("scannet20"), spec)
    words = embed_prompts([f"object number {i}" for i in range(200)], spec, ("{}",))
    vocab200 = Vocabulary([f"w{i}" for i in range(200)], words, torch.arange(200))
    print("synthetic rooms (test instrument): one fits the code axes, the other is held out ...", flush=True)
    rooms = [ScanNetScene(generate_scene(tmp, i, seed=11, cfg=SYNTH_PRESETS["demo"])) for i in range(2)]
    preds = []
    room_maps = [room_points(room, 0.02, args.room_voxels) for room in rooms]
    for room, (pts, rgb) in zip(rooms, room_maps):
        t0 = time.perf_counter()
        preds.append(student.predict_voxels(pts, rgb))  # a row per student voxel, each map voxel's row
        print(f"  {room.name}: {len(pts)} voxels at 2 cm, {len(preds[-1].semantic)} student voxels, student "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    cfg = LiveConfig()
    live = LiveSegmenter(student, vocab, cfg)  # its store for this student on a 2 cm map (float16 or int8 rows)
    width, inst_width = live.code_widths
    index = preds[1].index  # each held-out map voxel's student voxel
    held = preds[1].semantic[torch.from_numpy(index)]  # the uncompressed feature of every map voxel
    # as the live map does when a new room's features reach beyond the axes' range (its update widens
    # those axes' steps, ``LiveSegmenter._fit_codec``): encoded with the old steps, the held-out room's
    # extremes -- the best answers of a query -- saturated, and the figures below were the bench's, not
    # the node's (top-1000 overlap min 45.8 % instead of 94.9 % with the seed-0 demo student)
    fitted = FeatureCodec.fit(preds[0].semantic, width, exact=live.exact)
    codec = fitted.widened(preds[1].semantic)
    rows = codec.encode(preds[1].semantic)  # the held-out room's table
    # the store before the table, side by side: int8 codes of 56 columns on every map voxel
    old = FeatureCodec.fit(preds[0].semantic, cfg.code_bytes - inst_width)
    old = old.widened(preds[1].semantic)
    old_codes = old.encode(preds[1].semantic)
    widened_axes = int((codec.step > fitted.step).sum())
    exact_labels = vocab.classify(held)[0].numpy()
    labels = TextProjection(codec, vocab.embeddings).best(rows, vocab.row_class, len(vocab))[0][index]
    agreement = float((labels == exact_labels).mean())
    agreement200 = float((TextProjection(codec, words).best(rows)[0][index] ==
                          (held @ words.T).argmax(1).numpy()).mean())
    overlaps, gaps, errors, fp16_overlaps, old_overlaps = [], [], [], [], []
    held16 = held.half()  # what the replaced brute-force path stored: its answers against the same line
    for t in vocab.class_embeddings():
        got = TextProjection(codec, t).scores(rows)[index]
        exact = (held @ t).numpy()
        kth = np.partition(exact, len(exact) - 1000)[len(exact) - 1000]
        # an answer is right when its exact score is among the best 1000 (voxels sharing one student
        # voxel share one feature, so ties at the 1000th place are common and either side is right)
        answer = exact[np.argpartition(-got, 1000)[:1000]]
        overlaps.append(float((answer >= kth).mean()))
        for scores, out in ((text_scores(held16, t), fp16_overlaps),
                            (TextProjection(old, t).scores(old_codes)[index], old_overlaps)):
            out.append(float((exact[np.argpartition(-scores, 1000)[:1000]] >= kth).mean()))
        # why a word misses: how far below the 1000th exact score its wrong answers lie, against the
        # store's score error; a student voxel's map voxels (up to 125) enter or leave the answer together
        gaps.append(float(kth - answer.min()) if overlaps[-1] < 1 else 0.0)
        errors.append(float((got - exact).std()))
    memory = tiled_map(rows, index, len(index), inst_width)[0].nbytes_per_voxel()  # the map without its table
    row_bytes = (width + inst_width) * rows.dtype.itemsize
    table = len(rows) * row_bytes / len(index)  # the table's live rows, per voxel
    figures = {"bytes_per_voxel": (memory["map"] - memory["index"] + table * GARBAGE) * GROWTH + memory["index"],
               "bytes_per_voxel_occupied": memory["map"] + table, "index_bytes_per_voxel": memory["index"],
               "feature_bytes_per_voxel": memory["features"] + table,
               "feature_bytes_per_voxel_held_max": memory["features"] + table * GARBAGE * GROWTH,
               "feature_rows": "float16" if live.exact else "int8", "feature_row_bytes": row_bytes,
               "voxels_per_feature_row": len(index) / len(rows),
               "int8_codes_feature_bytes_per_voxel": cfg.code_bytes,
               "bruteforce_feature_bytes_per_voxel": 2 * 512 * 2,
               "label_agreement": agreement, "label_agreement_200_words": agreement200,
               "top1000_overlap_min": float(min(overlaps)), "top1000_overlap_mean": float(np.mean(overlaps)),
               "int8_codes_top1000_overlap_min": float(min(old_overlaps)),
               "int8_codes_top1000_overlap_mean": float(np.mean(old_overlaps)),
               "bruteforce_fp16_top1000_overlap_min": float(min(fp16_overlaps)),
               "top1000_miss_score_gap_max": max(gaps), "code_score_error_std_median": float(np.median(errors)),
               "code_residual_held_out": codec.residual(held), "code_axes_widened_held_out": widened_axes,
               "code_step_widening_max": float((codec.step / fitted.step).max())}
    kind = f"{figures['feature_rows']} rows"
    print(f"\n| held-out room ({len(held)} voxels, {len(rows)} student voxels) | value |\n| --- | --- |")
    print(f"| the live map's store for this student on a 2 cm map | {kind} of {row_bytes} bytes, one per student "
          f"voxel ({figures['voxels_per_feature_row']:.1f} map voxels a row) + a 4-byte row per voxel |")
    print(f"| labels (scannet20) agreeing with the uncompressed features | {100 * agreement:.2f} % |")
    print(f"| labels (200 random-CLIP words) agreeing | {100 * agreement200:.2f} % |")
    print(f"| top-1000 overlap of a query, min / mean over 20 class words ({kind}) | {100 * min(overlaps):.1f} / "
          f"{100 * np.mean(overlaps):.1f} % |")
    print(f"| the same with int8 codes on every voxel (the store before the table), min / mean | "
          f"{100 * min(old_overlaps):.1f} / {100 * np.mean(old_overlaps):.1f} % |")
    print(f"| the same with the replaced path's fp16 features (brute force), min / mean | "
          f"{100 * min(fp16_overlaps):.1f} / {100 * np.mean(fp16_overlaps):.1f} % |")
    worst = int(np.argmin(overlaps))
    print(f"| its worst word ({vocab.names[worst]}): its wrong answers' exact scores below the 1000th by at most / "
          f"the store's score error (std; median over the words) | {gaps[worst]:.1e} / {np.median(errors):.1e} |")
    print(f"| variance the code axes miss on the held-out room | {100 * figures['code_residual_held_out']:.3f} % |")
    print(f"| axes whose step the held-out room widened (of {codec.axes}; the widest by) | {widened_axes} "
          f"(x{figures['code_step_widening_max']:.2f}) |")
    print(f"| bytes per voxel: whole map (x1.25 growth headroom, x{GARBAGE} rows awaiting compaction) / features "
          f"(live rows; at most, with both) | {figures['bytes_per_voxel']:.0f} / "
          f"{figures['feature_bytes_per_voxel']:.1f} ({figures['feature_bytes_per_voxel_held_max']:.1f}) (int8 codes "
          f"on every voxel: {cfg.code_bytes}; before them: fp16 features 1,024 semantic + 1,024 instance) |")

    t = vocab.class_embeddings()[4]
    sizes = [100_000, 1_000_000] + ([] if args.quick else [4_000_000])
    print(f"\n| voxels | query ms ({kind}) | query ms (brute force, fp16) | relabel 200 words ms ({kind}) | "
          "relabel 200 ms (brute force) |\n| --- | --- | --- | --- | --- |")
    for n in sizes:
        (live.map, live.table), live.codec = tiled_map(rows, index, n), codec
        q = median_ms(lambda: live.query(t, threshold=-1, max_points=CAP), 7)
        rel = median_ms(lambda: live.relabel_voxels(vocab200), 3)
        brute_q = brute_rel = None
        if n <= 1_000_000:  # 1 GB of fp16 features at 1M; 4M would need 4 GB and 8 more to convert
            f16 = np.tile(held.half().numpy(), (-(-n // len(held)), 1))[:n]
            brute_q = median_ms(functools.partial(bruteforce_query, f16, t), 3)
            brute_rel = median_ms(functools.partial(bruteforce_relabel, f16, vocab200), 1)
            del f16
        tag = SIZE_TAGS[n]
        figures[f"query_ms_median_{tag}"] = q
        figures[f"relabel_ms_200_{tag}"] = rel
        if brute_q is not None:
            figures[f"bruteforce_query_ms_median_{tag}"] = brute_q
            figures[f"bruteforce_relabel_ms_200_{tag}"] = brute_rel
        print(f"| {n:,} | {q:.1f} | {_ms(brute_q)} | {rel:.0f} | {_ms(brute_rel)} |", flush=True)
        if n == 1_000_000:
            persistence = save_and_load(live, rows, index, held, tmp)
    figures.update(persistence)
    print(f"\nsaved map at 1M voxels: npz {persistence['saved_npz_mb_1m']:.1f} MB + PLY "
          f"{persistence['saved_ply_mb_1m']:.1f} MB, save {persistence['save_s_1m']:.2f} s (autosave: in the "
          f"background), load {persistence['load_s_1m']:.2f} s")
    print("\n~/text_query from another process, the node holding that 1M-voxel map ...", flush=True)
    trip = service_round_trip(checkpoint, tmp, "map_1m", live.map.voxel_size)
    figures.update(trip)
    print(f"~/text_query round trip at 1M voxels: median {trip['text_query_round_trip_ms_median_1m']:.0f} ms, p90 "
          f"{trip['text_query_round_trip_ms_p90_1m']:.0f} ms ({trip['text_query_points']:,} answer points; the core's "
          f"query {figures['query_ms_median_1m']:.0f} ms; the node started with the map in "
          f"{trip['node_start_with_1m_map_s']:.1f} s)")

    print("\n| voxels | one keyframe's insert, the robot driving on (median ms) | evicted over 40 frames |\n"
          "| --- | --- | --- |")
    for n in sizes:
        tag = SIZE_TAGS[n]
        ms, evicted = driving_insert_ms(n)
        figures[f"driving_insert_ms_median_{tag}"] = ms
        print(f"| {n:,} | {ms:.1f} | {evicted:,} |", flush=True)

    # instance regrouping on a room-sized live map (the held-out room's voxels, labelled by the student)
    room_live = LiveSegmenter(student, vocab, cfg)
    pts, rgb = room_maps[1]
    room_live.add_points(pts.astype(np.float64), 1.0, pts.mean(0), colors=rgb)
    room_live.update(force=True)
    regroup = median_ms(room_live._group_instances, 3)
    figures["regroup_voxels"] = len(room_live.map)
    figures["regroup_ms_160k"] = regroup
    print(f"\ninstance regrouping (proposals) on a {len(room_live.map):,}-voxel room map: {regroup:.0f} ms "
          f"(median of 3; {len(room_live.instances)} instances)")

    if not args.no_replay:
        minutes = 1.0 if args.quick else args.replay_minutes
        rep = replay(minutes, args.quick)
        figures.update({"replay_minutes": minutes, "replay_queue_losses": rep.get("queue_drops"),
                        "replay_latency_s_median": rep.get("latency_s_median"),
                        "replay_rgbd_ingest_ms": rep.get("rgbd_ingest_ms"),
                        "replay_lidar_ingest_ms": rep.get("lidar_ingest_ms"),
                        "replay_rgbd_ingest_cpu_ms": rep.get("rgbd_ingest_cpu_ms"),
                        "replay_lidar_ingest_cpu_ms": rep.get("lidar_ingest_cpu_ms"),
                        "replay_update_ms": rep.get("update_ms"), "replay_regroup_ms": rep.get("regroup_ms"),
                        "replay_ingested": rep.get("ingested"), "replay_dropped": rep.get("dropped"),
                        "replay_sent": rep.get("sent"), "replay_received": rep.get("received"),
                        "replay_missed": rep.get("missed"),
                        "replay_skipped": rep.get("skipped"), "replay_rss_second_over_first":
                            rep.get("rss_second_over_first"),
                        "replay_map_bytes_per_voxel": rep.get("map_bytes_per_voxel"),
                        "replay_feature_bytes_per_voxel": rep.get("feature_bytes_per_voxel"),
                        "replay_feature_rows": rep.get("feature_rows"),
                        "replay_feature_bytes_per_voxel_in_use": rep.get("feature_bytes_per_voxel_in_use")})
        print(f"\nreplay ({minutes:g} min, real time, RGB-D 30 Hz (jpeg + png compressedDepth) + LiDAR 10 Hz, a new "
              f"8 s room every 12 m (1.5 m/s), MinkUNetSmall of {REPLAY_STUDENT_VOXEL * 100:g} cm voxels on the CPU, "
              f"a 5 cm map, instance cells of {REPLAY_INSTANCE_CELL * 100:g} cm): received {rep.get('received')} of "
              f"{rep.get('sent')} (never reached a callback: {rep.get('missed')}), queue "
              f"losses {rep.get('queue_drops')}, keyframe skips {rep.get('skipped')}, median latency "
              f"{rep.get('latency_s_median')} s, RGB-D ingest {rep.get('rgbd_ingest_ms')} ms (CPU, worker and helper: "
              f"{rep.get('rgbd_ingest_cpu_ms')} ms), LiDAR {rep.get('lidar_ingest_ms')} ms (CPU "
              f"{rep.get('lidar_ingest_cpu_ms')} ms), student update {rep.get('update_ms')} ms, regrouping "
              f"{rep.get('regroup_ms')} ms, memory second half / first {rep.get('rss_second_over_first')}; the "
              f"node's map at the end: {rep.get('map_bytes_per_voxel')} bytes a voxel held, features "
              f"{rep.get('feature_bytes_per_voxel')} held, {rep.get('feature_bytes_per_voxel_in_use')} in use "
              f"({rep.get('feature_rows')})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)  # the rooms, the saved 1M-voxel map and the node's log: 140 MB


if __name__ == "__main__":
    main()
