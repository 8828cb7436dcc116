"""The perception node under a long synthetic stream with a hostile client mixed in: ingest cost,
latency from a sensor message to labels published for it, drops, refusals, and the node process's
memory over time (must stay flat), with no restart.

``ovseg3d_node`` runs as its own process, as on a robot; this process is its clients. A synthetic
scene (test instrument) is streamed in a loop over real topics at its recorded sensor rates,
stamped with the wall clock; each loop shifts the world by 12 m along x, as if the robot drove on
through new rooms, so with ``map.extent`` set the map must evict to stay bounded. With
``--hostile-every N`` (default 50) one message in N is a bad one from ovseg3d.ros_tools.hostile (broken
transforms, future stamps, malformed clouds and images, absurd intrinsics, floods of TF frame
names) or a bad service call (odd words, prompt templates with format fields, unsafe save paths).
The student is a random-weight MinkUNet18A (or ``--arch``) with 512-d output (the deployment
shape; weights do not change its cost).

Run: ovseg3d bench node [--minutes 60] [--hostile-every 50] [--quick] [--camera-hz 30] [--arch MinkUNetSmall]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_DOMAIN_ID", "91")

import numpy as np
from sensor_msgs.msg import PointCloud2

from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_scene
from ovseg3d.ros.params import parse_assignments
from ovseg3d.ros.transforms import stamp_seconds, to_stamp
from ovseg3d.ros_tools.hostile import FORMAT_TEMPLATES, MESSAGES, ODD_TEXTS, UNSAFE_PATHS
from ovseg3d.ros_tools.node_process import NodeProcess
from ovseg3d.ros_tools.robot_stream import RobotStream
from ovseg3d.ros_tools.scene_stream import scene_stream
from ovseg3d.student.checkpoint import save_checkpoint
from ovseg3d.student.model import ARCHS, Student, StudentConfig
from ovseg3d_interfaces.srv import SaveMap, SetVocabulary, TextQuery

SCANNET20 = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
             "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
             "otherfurniture"]


INGEST_FIGURES = {"rgbd_ingest": "rgbd ingest ms (mean of last 100)",
                  "lidar_ingest": "lidar ingest ms (mean of last 100)",
                  "rgbd_ingest_cpu": "rgbd ingest cpu ms (mean of last 100)",
                  "lidar_ingest_cpu": "lidar ingest cpu ms (mean of last 100)"}


def _service_calls():
    """Bad (and odd) service calls, endlessly: each is answered with a refusal or a plain success."""
    calls = [(TextQuery, "text_query", TextQuery.Request(text=t, threshold=0.0, max_points=10)) for t in ODD_TEXTS]
    calls += [(SetVocabulary, "set_vocabulary", SetVocabulary.Request(labels=SCANNET20, prompt_template=t))
              for t in FORMAT_TEMPLATES]
    calls += [(SaveMap, "save_map", SaveMap.Request(path=p)) for p in UNSAFE_PATHS]
    calls.append((TextQuery, "text_query", TextQuery.Request(text="chair", threshold=float("nan"))))
    return itertools.cycle(calls)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="stream length in minutes (default 5)")
    p.add_argument("--quick", action="store_true", help="test-sized scene and a 1-minute stream")
    p.add_argument("--extent", type=float, default=8.0, help="map.extent of the node (m)")
    p.add_argument("--rate", type=float, default=1.0, help="inference.rate_hz")
    p.add_argument("--camera-hz", type=float, default=10.0,
                   help="RGB-D rate of the stream (the LiDAR stays at 10 Hz); 30: a real camera's, the "
                        "synthetic camera then moves 3x as fast through its room (more keyframes, not fewer)")
    p.add_argument("--arch", default="MinkUNet18A", choices=sorted(ARCHS), help="the random-weight student")
    p.add_argument("--student-voxel", type=float, default=0.05,
                   help="the student's voxel (m; the map's stays 5 cm); the demo's student has 10 cm")
    p.add_argument("--room-seconds", type=float, default=0.0,
                   help="how long the camera takes through each room (frames and sweeps rendered to fill it at "
                        "the stream's rates); 0: the preset's frames at --camera-hz")
    p.add_argument("--hostile-every", type=int, default=50, help="one bad input in N messages (0: none)")
    p.add_argument("--compressed", action="store_true",
                   help="camera streams as image_transport publishes them (jpeg colour, png compressedDepth)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="another node parameter, e.g. qos_depth=30 (repeatable)")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples")
    p.add_argument("--out", type=Path, default=None, help="also write the report here (JSON)")
    args = p.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    extra = parse_assignments(args.param)  # refused before minutes of rendering, not after
    tmp = Path(tempfile.mkdtemp(prefix="ovseg3d_bench_node_"))
    preset = "test" if args.quick else "demo"
    synth = dataclasses.replace(SYNTH_PRESETS[preset], camera_period_s=1.0 / args.camera_hz)
    if args.room_seconds > 0:  # a robot's pace: many frames a little apart, most of them passed over as keyframes
        synth = dataclasses.replace(synth, frames=max(2, round(args.room_seconds * args.camera_hz)),
                                    sweeps=max(1, round(args.room_seconds / synth.lidar_period_s)))
    print(f"rendering the synthetic room (test instrument): {synth.frames} RGB-D frames, {synth.sweeps} LiDAR sweeps "
          "...", flush=True)
    scene = generate_scene(tmp / "synth", 0, seed=3, cfg=synth)
    loop = list(scene_stream(scene, start=0.0, compressed=args.compressed))
    period = max(m.stamp for m in loop) + 0.1
    ckpt = save_checkpoint(tmp / "student.pt",
                           Student(StudentConfig(arch=args.arch, feature_dim=512, voxel_size=args.student_voxel)), {},
                           "scannet20")
    params = {"checkpoint": str(ckpt), "map.voxel_size": 0.05, "map.extent": args.extent,
              "inference.rate_hz": args.rate, "device": "cpu", "save_dir": str(tmp / "maps"),
              "diagnostics.period": 1.0,
              **({"rgb.transport": "compressed", "depth.transport": "compressedDepth"} if args.compressed else {}),
              **extra}
    node = NodeProcess(params, tmp / "node.log").start()
    restarts = 0
    hostile_robot = RobotStream(node)  # only for its helpers: wall-clock stamps, the node's topics
    sent_wall: dict[float, float] = {}
    latencies: list[float] = []

    def on_semantic(msg: PointCloud2) -> None:
        stamp = round(stamp_seconds(msg.header.stamp), 6)
        if stamp in sent_wall:
            latencies.append(time.monotonic() - sent_wall.pop(stamp))

    node.client.create_subscription(PointCloud2, "semantic_points", on_semantic, 5)
    node.wait_matched(("rgb/image/compressed", "depth/image/compressedDepth", "rgb/camera_info", "lidar/points",
                       "/tf") if args.compressed else ("rgb/image", "depth/image", "rgb/camera_info", "lidar/points",
                                                      "/tf"))
    samples: list[tuple[float, float, int, int]] = []
    stop = threading.Event()
    calls: queue.Queue = queue.Queue(maxsize=4)
    answers = {"refused": 0, "answered": 0, "timeout": 0}

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.wait(args.sample):
            if node.alive():
                samples.append((time.monotonic() - t0, node.rss_mib(), node.counter("map voxels"),
                                node.counter("tf frames")))

    def call_services() -> None:  # bad service calls from their own thread: the stream keeps its rate
        while not stop.is_set():
            try:
                cls, name, request = calls.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                res = node.call(cls, name, request, timeout=30.0)
                answers["answered" if res.success else "refused"] += 1
            except TimeoutError:
                answers["timeout"] += 1

    threading.Thread(target=sample, daemon=True).start()
    threading.Thread(target=call_services, daemon=True).start()
    bad_messages, service_calls = itertools.cycle(MESSAGES), _service_calls()
    hostile_sent: dict[str, int] = {}
    total = minutes * 60.0
    epoch = time.time()
    start_wall, k, sent, count = time.monotonic(), 0, 0, 0
    sent_by: dict[str, int] = {}
    ingest_samples: dict[str, list[float]] = {}  # the node's last-100 ingest means, every loop
    print(f"streaming {minutes:g} min of a {preset} scene (RGB-D {args.camera_hz:g} Hz, LiDAR 10 Hz, {args.arch}; "
          f"{len(loop)} messages per {period:.1f} s loop) into "
          f"ovseg3d_node (pid {node.proc.pid}), one bad input in {args.hostile_every or 'none'} ...", flush=True)
    while k * period < total:
        for m in loop:
            t = k * period + m.stamp
            if t >= total:
                break
            delay = start_wall + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            count += 1
            if args.hostile_every and count % args.hostile_every == 0:
                if count % (2 * args.hostile_every):
                    bad = next(bad_messages)
                    bad.send(hostile_robot)
                    hostile_sent[bad.name] = hostile_sent.get(bad.name, 0) + 1
                else:
                    with contextlib.suppress(queue.Full):
                        calls.put_nowait(next(service_calls))
                        hostile_sent["service call"] = hostile_sent.get("service call", 0) + 1
                continue
            stamp = epoch + t
            msg = m.msg
            if m.topic == "/tf":
                for tf in msg.transforms:
                    tf.header.stamp = to_stamp(stamp)
                    tf.transform.translation.x += 12.0 * k
            else:
                msg.header.stamp = to_stamp(stamp)
            node.publish(m.topic, msg)
            if m.topic == "/tf":  # undo the shift on the shared template message
                for tf in msg.transforms:
                    tf.transform.translation.x -= 12.0 * k
            else:
                sent_wall[round(stamp, 6)] = time.monotonic()
                sent += 1
                sent_by[m.topic] = sent_by.get(m.topic, 0) + 1
        k += 1
        for kind, key in INGEST_FIGURES.items():  # the node's figures cover its last 100 inputs: sampled every loop
            if (value := node.diagnostics.get(key)) not in (None, "n/a"):
                ingest_samples.setdefault(kind, []).append(float(value))
        for old in [s for s in sent_wall if s < epoch + (k - 3) * period]:  # never answered: forget
            del sent_wall[old]
        if not node.alive():
            restarts += 1
            print(f"  the node process ended (rc {node.proc.returncode}); restarting it", flush=True)
            node.start()
        if k % 10 == 0:
            el = time.monotonic() - start_wall
            print(f"  {k * period:6.0f}/{total:.0f} s, map {node.counter('map voxels')} voxels, node RSS "
                  f"{node.rss_mib():.0f} MiB, hostile {sum(hostile_sent.values())}, ETA {total - el:.0f} s",
                  flush=True)
    time.sleep(3.0)
    stop.set()
    d = node.diagnostics
    dropped = {k.removeprefix("dropped "): int(v) for k, v in d.items() if k.startswith("dropped ")}
    report = {
        "stream_minutes": minutes, "camera_hz": args.camera_hz, "arch": args.arch,
        "student_voxel": args.student_voxel, "room_seconds": period,
        "compressed": args.compressed, "params": extra, "messages_sent": sent, "sent": sent_by,
        "hostile_every": args.hostile_every,
        "hostile_sent": hostile_sent, "service_answers": answers, "node_restarts": restarts,
        "node_alive_at_end": node.alive(),
        # what the node's callbacks got of what was sent (the rest was lost before them, in transport)
        "received": {k.removeprefix("received "): int(v) for k, v in d.items() if k.startswith("received ")},
        # never reached a callback (gaps in the publisher's sequence numbers: DDS history overwritten, or lost)
        "missed": {k.removeprefix("missed "): int(v) for k, v in d.items() if k.startswith("missed ")},
        "unmatched_camera_messages": int(d.get("unmatched camera messages", 0)),
        "ingested": {k.removeprefix("ingested "): int(v) for k, v in d.items() if k.startswith("ingested ")},
        "dropped": dropped, "queue_drops": int(d.get("queue drops", 0)),
        "skipped": {k.removeprefix("skipped "): int(v) for k, v in d.items() if k.startswith("skipped ")},
        # ingest per input over the whole run: the mean of the node's last-100 means sampled every loop
        # (the node's figure at the end alone covers its last ~12 s); CPU: the ingest worker's and its
        # helper thread's (below the wall time, the worker waited for a core or the GIL)
        **{f"{kind}_ms": round(float(np.mean(v)), 1) if (v := ingest_samples.get(kind)) else None
           for kind in INGEST_FIGURES},
        **{f"{kind}_ms_last100": d.get(key) for kind, key in INGEST_FIGURES.items()},
        "update_ms": d.get("update ms (mean of last 100)"),
        "regroup_ms": d.get("regroup ms (mean of last 100)"),
        "data_arrival_lag_ms": d.get("data arrival lag ms (mean of last 100)"),
        "tf_arrival_lag_ms": d.get("tf arrival lag ms (mean of last 100)"),
        "latency_s_median": float(np.median(latencies)) if latencies else None,
        "latency_s_p90": float(np.percentile(latencies, 90)) if latencies else None,
        "map_voxels_final": node.counter("map voxels"), "evicted": node.counter("evicted voxels"),
        # the map's memory as /diagnostics reports it at the end (the feature table's rows: float16 or int8)
        "map_bytes_per_voxel": d.get("map bytes per voxel"),
        "feature_bytes_per_voxel": d.get("feature bytes per voxel"), "feature_rows": d.get("feature rows"),
        "feature_bytes_per_voxel_in_use": d.get("feature bytes per voxel in use"),
        "tf_frames_final": node.counter("tf frames"),
    }
    node.close()
    if restarts or not report["node_alive_at_end"]:
        print(f"the node's log is kept in {tmp / 'node.log'}", flush=True)
    else:  # the rendered room, the student and the logs: 140 MB a run
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nnode process memory over the stream:")
    print("| wall s | RSS MiB | map voxels | TF frames |\n| --- | --- | --- | --- |")
    step = max(1, len(samples) // 40)
    for t, r, v, f in samples[::step]:
        print(f"| {t:.0f} | {r:.0f} | {v} | {f} |")
    warm = max(1, len(samples) // 10)  # the first tenth is warm-up (model, caches, the map filling up)
    steady = samples[warm:]
    if len(steady) >= 4:
        half = len(steady) // 2
        first, second = np.mean([s[1] for s in steady[:half]]), np.mean([s[1] for s in steady[half:]])
        report.update(rss_mib_first_half=round(float(first), 1), rss_mib_second_half=round(float(second), 1),
                      rss_second_over_first=round(float(second / first), 4),
                      rss_mib_peak=round(max(s[1] for s in samples), 1))
        print(f"\nRSS after warm-up: first half {first:.0f} MiB, second half {second:.0f} MiB, ratio "
              f"{second / first:.3f} (flat if under 1.05); node restarts: {restarts}")
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps({**report, "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
