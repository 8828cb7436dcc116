"""The perception node under a long synthetic stream: ingest cost per message, latency from a
sensor message to labels published for it, drops, and memory over time (must stay bounded).

A synthetic scene (test instrument) is replayed in a loop through real ROS topics into a real
in-process node, at the recorded sensor timing; each loop shifts the world by 12 m along x, as if
the robot drove on through new rooms, so with ``map.extent`` set the map must evict to stay
bounded. The student is a random-weight MinkUNet18A with 512-d output (the deployment shape;
weights do not change its cost).

Run: .venv/bin/python benchmarks/bench_node.py [--minutes 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
os.environ.setdefault("ROS_DOMAIN_ID", "91")

import numpy as np
import rclpy
from sensor_msgs.msg import PointCloud2

from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_scene
from ovseg3d.ros.harness import NodeHarness
from ovseg3d.ros.scene_stream import scene_stream
from ovseg3d.ros.transforms import stamp_seconds, to_stamp
from ovseg3d.student.checkpoint import save_checkpoint
from ovseg3d.student.model import Student, StudentConfig


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="stream length in sensor time (default 5)")
    p.add_argument("--quick", action="store_true", help="test-sized scene and a 1-minute stream")
    p.add_argument("--extent", type=float, default=8.0, help="map.extent of the node (m)")
    p.add_argument("--rate", type=float, default=1.0, help="inference.rate_hz")
    args = p.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    tmp = Path(tempfile.mkdtemp(prefix="ovseg3d_bench_node_"))
    preset = "test" if args.quick else "demo"
    scene = generate_scene(tmp / "synth", 0, seed=3, cfg=SYNTH_PRESETS[preset])
    loop = list(scene_stream(scene, start=0.0))
    period = max(m.stamp for m in loop) + 0.1
    ckpt = save_checkpoint(tmp / "student.pt", Student(StudentConfig(feature_dim=512, voxel_size=0.05)), {},
                           "scannet20")
    context = rclpy.Context()
    rclpy.init(context=context)
    h = NodeHarness(context, {"checkpoint": str(ckpt), "map.voxel_size": 0.05, "map.extent": args.extent,
                              "inference.rate_hz": args.rate, "device": "cpu"})
    h.start()
    sent_wall: dict[float, float] = {}
    latencies: list[float] = []

    def on_semantic(msg: PointCloud2) -> None:
        stamp = round(stamp_seconds(msg.header.stamp), 6)
        if stamp in sent_wall:
            latencies.append(time.monotonic() - sent_wall[stamp])

    h.driver.create_subscription(PointCloud2, "semantic_points", on_semantic, 5)
    h.wait_matched()
    samples = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.wait(10.0):
            samples.append((time.monotonic() - t0, rss_mib(), len(h.node.live.map), h.node.live.map.evicted))

    threading.Thread(target=sample, daemon=True).start()
    total = minutes * 60.0
    start_wall, k, sent = time.monotonic(), 0, 0
    print(f"streaming {minutes:g} min of a {preset} scene ({len(loop)} messages per {period:.1f} s loop) "
          f"into the node ...", flush=True)
    while k * period < total:
        for m in loop:
            stamp = k * period + m.stamp
            if stamp >= total:
                break
            delay = start_wall + stamp - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = m.msg
            if m.topic == "/tf":
                for tf in msg.transforms:
                    tf.header.stamp = to_stamp(stamp)
                    tf.transform.translation.x += 12.0 * k
            else:
                msg.header.stamp = to_stamp(stamp)
            h.publish(m.topic, msg)
            if m.topic == "/tf":  # undo the shift on the shared template message
                for tf in msg.transforms:
                    tf.transform.translation.x -= 12.0 * k
            sent_wall[round(stamp, 6)] = time.monotonic()
            sent += m.topic != "/tf"
        k += 1
        if k % 10 == 0:
            el = time.monotonic() - start_wall
            print(f"  {k * period:6.0f}/{total:.0f} s sensor time, {el:5.0f} s wall, map {len(h.node.live.map)} "
                  f"voxels, RSS {rss_mib():.0f} MiB", flush=True)
    time.sleep(3.0)
    stop.set()
    n = h.node
    report = {
        "stream_minutes": minutes, "messages_sent": sent, "ingested": dict(n.ingested),
        "queue_drops": n.queue.dropped, "unmatched_camera_msgs": n.sync.unmatched,
        "rejected": {k: v for k, v in n.rejected.items()},
        "rgbd_ingest_ms": 1000 * float(np.mean(n.timing["rgbd"])),
        "lidar_ingest_ms": 1000 * float(np.mean(n.timing["lidar"])),
        "update_s_mean": float(np.mean(n.timing["update"])) if n.timing["update"] else None,
        "latency_s_median": float(np.median(latencies)) if latencies else None,
        "latency_s_p90": float(np.percentile(latencies, 90)) if latencies else None,
        "map_voxels_final": len(n.live.map), "evicted": n.live.map.evicted,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    h.close()
    context.try_shutdown()
    print("\nmemory over the stream (sampled every 10 s of wall time):")
    print("| wall s | RSS MiB | map voxels | evicted |\n| --- | --- | --- | --- |")
    for t, r, v, e in samples:
        print(f"| {t:.0f} | {r:.0f} | {v} | {e} |")
    if len(samples) >= 4:
        half = len(samples) // 2
        first, second = np.mean([s[1] for s in samples[1:half]]), np.mean([s[1] for s in samples[half:]])
        print(f"\nRSS second half / first half: {second / first:.2f} (bounded if close to 1)")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
