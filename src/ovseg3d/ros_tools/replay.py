"""Replay a rosbag2 into a running ovseg3d node over real topics and measure what comes out.

The bag's messages are published raw (as recorded) at the recorded timing scaled by ``rate``; the
node runs in this process, so every message can be accounted for: played -> received by the node
-> matched into RGB-D frames -> queued -> ingested, skipped (not a keyframe, or too soon after one),
rejected (by kind) or dropped. Latency is
from the wall time a sensor message was published to the wall time labels including its stamp
arrived on ``semantic_points``. With ground truth (a scene folder in ScanNet layout) each map
point takes the label of its nearest ground-truth point within ``gt_radius``.
"""

from __future__ import annotations

import json
import resource
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sensor_msgs.msg import PointCloud2

from ovseg3d.errors import UserError
from ovseg3d.progress import bar
from ovseg3d.ros.pointcloud2 import pointcloud2_to_array
from ovseg3d.ros.transforms import stamp_seconds
from ovseg3d.ros_tools.bag import message_class, read_bag
from ovseg3d.ros_tools.harness import NodeHarness, wait_for

NODE_INPUTS = ("rgb/image", "depth/image", "rgb/camera_info", "lidar/points",
               "rgb/image/compressed", "depth/image/compressedDepth",  # image_transport's names
               "depth/camera_info")  # depth not registered to the colour camera


def stream_params(present: set[str]) -> dict:
    """The node parameters a bag's camera streams need (node inputs it holds, after --topic): the
    compressed transport where only the compressed stream is there, no colour where none is, depth
    not registered to the colour camera where it has a CameraInfo of its own."""
    out: dict = {}
    if "rgb/image/compressed" in present and "rgb/image" not in present:
        out["rgb.transport"] = "compressed"
    if "depth/image/compressedDepth" in present and "depth/image" not in present:
        out["depth.transport"] = "compressedDepth"
    if not {"rgb/image", "rgb/image/compressed"} & present:
        out["camera.color"] = False
    if "depth/camera_info" in present:
        out["depth.registered"] = False
    return out


@dataclass
class ReplayConfig:
    rate: float = 1.0  # 1: recorded timing; 2: twice as fast; 0: as fast as possible
    topics: dict[str, str] = field(default_factory=dict)  # node input -> bag topic (default /<input>)
    settle_timeout: float = 300.0  # seconds to wait for the node to finish after the bag ends

    def bag_topics(self) -> dict[str, str]:
        """Node input -> the bag topic that feeds it."""
        return {name: self.topics.get(name, "/" + name) for name in NODE_INPUTS}
    gt_radius: float = 0.1


def header_stamp(raw: bytes) -> float | None:
    """The std_msgs/Header stamp at the start of a CDR message (Image, CameraInfo, PointCloud2 ...),
    read without decoding the rest."""
    if len(raw) < 12 or raw[1] not in (0, 1):
        return None
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec + nanosec * 1e-9


def _settled(node, quiet_since: float) -> bool:
    """Everything the node received has been ingested, rejected or dropped, and published."""
    snap = node.stats.snapshot()
    return time.monotonic() - quiet_since > 1.0 and snap.handled(queued_only=True) >= snap.queued and node.caught_up()


def replay(bag: Path, harness: NodeHarness, cfg: ReplayConfig, out: Path, gt: Path | None = None,
           label_set=None) -> dict:
    topics = cfg.bag_topics()
    types, total, messages = read_bag(bag)
    missing = [t for t in topics.values() if t not in types]
    if len(missing) == len(topics):
        raise UserError(f"the bag has none of the node's input topics {sorted(topics.values())}; its topics: "
                        f"{', '.join(sorted(types))}. Map them with --topic INPUT=BAG_TOPIC")
    to_node = {bag_topic: name for name, bag_topic in topics.items()}
    classes = {t: message_class(m) for t, m in types.items() if t in to_node or t in ("/tf", "/tf_static")}
    sent_wall: dict[float, float] = {}
    latencies: list[float] = []
    semantic: list[PointCloud2] = []

    def on_semantic(msg: PointCloud2) -> None:
        semantic.append(msg)
        del semantic[:-1]
        stamp = round(stamp_seconds(msg.header.stamp), 6)
        if stamp in sent_wall:
            latencies.append(time.monotonic() - sent_wall[stamp])

    harness.driver.create_subscription(PointCloud2, "semantic_points", on_semantic, 5)
    for bag_topic, cls in classes.items():  # publishers first, so the node can match them
        harness.ensure_publisher(to_node.get(bag_topic, bag_topic), cls)
    harness.wait_matched()
    played: dict[str, int] = {}
    t_first, wall0 = None, time.monotonic()
    with bar(total, "replay", "msg") as pbar:
        for m in messages:
            pbar.update()
            if m.topic not in classes:
                continue
            t = m.timestamp_ns * 1e-9
            t_first = t if t_first is None else t_first
            if cfg.rate > 0:
                delay = wall0 + (t - t_first) / cfg.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            name = to_node.get(m.topic, m.topic)
            harness.publish(name, m.raw, classes[m.topic])
            played[name] = played.get(name, 0) + 1
            if name in NODE_INPUTS:
                stamp = header_stamp(m.raw)
                sent_wall[round(stamp if stamp is not None else t, 6)] = time.monotonic()
    node = harness.node
    end_of_play = time.monotonic()
    settled = wait_for(lambda: _settled(node, end_of_play) and bool(semantic), cfg.settle_timeout, 0.2)
    # score the labels of the final map, not an earlier cloud: a busy node publishes its last one late
    # (10 s were not always enough in a full test run, and the score then came from one frame fewer)
    final_published = wait_for(lambda: bool(semantic) and pointcloud2_to_array(semantic[-1]).size == int(
        (node.live.map.labels >= 0).sum()), cfg.settle_timeout if settled else 10)
    play_seconds = time.monotonic() - wall0
    snap = node.stats.snapshot()

    def ms(kind: str) -> float | None:
        values = snap.seconds[kind]
        return 1000 * float(np.mean(values)) if values else None

    report = {
        "bag": str(bag), "rate": cfg.rate, "settled": settled, "final_labels_published": final_published,
        "seconds": round(play_seconds, 2),
        "played": played, "received_by_node": snap.received, "missed_before_node": snap.missed,
        "rgbd_frames_matched": snap.queued - snap.received.get("lidar/points", 0),
        "camera_messages_unmatched": snap.camera_unmatched,
        "ingested": snap.ingested, "skipped": snap.skipped, "queue_drops": snap.queue_dropped,
        "rejected": {k: v for k, v in snap.rejected.items() if k not in ("nonfinite_points", "queue_full")},
        "nonfinite_points_skipped": snap.rejected.get("nonfinite_points", 0),
        "latency_s": ({"median": float(np.median(latencies)), "p90": float(np.percentile(latencies, 90)),
                       "max": float(np.max(latencies)), "samples": len(latencies)} if latencies else None),
        "rgbd_ingest_ms": ms("rgbd"), "lidar_ingest_ms": ms("lidar"),
        "update_s_mean": None if ms("update") is None else ms("update") / 1000,
        "map_voxels": len(node.live.map), "instances": len(node.live.instances),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    cloud = pointcloud2_to_array(semantic[-1]) if semantic else None
    if cloud is not None and cloud.size:
        report.update(_pictures_and_scores(cloud, node, out, gt, label_set, cfg.gt_radius))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _pictures_and_scores(cloud, node, out: Path, gt: Path | None, label_set, radius: float) -> dict:
    from scipy.spatial import cKDTree

    from ovseg3d.data.ply import write_ply
    from ovseg3d.data.scannet import ScanNetScene
    from ovseg3d.eval.semantic import semantic_scores
    from ovseg3d.render.points_png import render_points, save_png

    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], 1)
    labels = cloud["label"].astype(np.int64)
    names = list(node.live.vocab.names)
    colors = node.label_colors(names)[np.clip(labels, 0, len(names) - 1)]
    save_png(out / "labels.png", render_points(xyz, colors))
    write_ply(out / "map.ply", xyz, colors, label=labels.astype(np.int32))
    result: dict = {"pictures": [str(out / "labels.png"), str(out / "map.ply")]}
    if gt is None:
        return result
    if label_set is None:
        raise UserError("scoring against ground truth needs a label set")
    scene = ScanNetScene(gt)
    truth = scene.semantic(label_set)
    dist, nearest = cKDTree(scene.points).query(xyz)
    lut = np.array([label_set.names.index(n) if n in label_set.names else -1 for n in names] + [-1])
    pred = lut[np.where(labels >= 0, labels, len(names))]
    valid = (dist <= radius) & (truth[nearest] >= 0)
    scores = semantic_scores(pred[valid], truth[nearest][valid], len(label_set))
    present = int(np.isfinite(scores.iou).sum())
    save_png(out / "ground_truth.png", render_points(xyz, label_set.colorize(np.where(dist <= radius, truth[nearest],
                                                                                      -1))))
    result["pictures"].append(str(out / "ground_truth.png"))
    result["eval"] = {"label_set": label_set.name, "miou": 100 * scores.miou, "macc": 100 * scores.macc,
                      "points_scored": int(valid.sum()), "points_far_from_gt": int((dist > radius).sum()),
                      "classes_present": present, "chance_macc": 100.0 / max(present, 1),
                      "per_class_iou": {label_set.names[k]: round(100 * float(v), 2)
                                        for k, v in enumerate(scores.iou) if np.isfinite(v)}}
    return result


def replay_bag(bag: Path, checkpoint: Path, out: Path, gt: Path | None = None, label_set: str | None = None,
               cfg: ReplayConfig | None = None, params: dict | None = None, clip_model: str | None = None,
               clip_weights: str | None = None) -> dict:
    """Start the node in this process with the student of ``checkpoint`` (its label set and text
    encoder unless given), play ``bag`` into it and return the report written to ``out``."""
    import os

    from ovseg3d.ros.dds import use_sensor_profile

    use_sensor_profile()  # large clouds and images, one host
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy

    from ovseg3d.labels import load_label_set
    from ovseg3d.ros_tools.bag import bag_topics
    from ovseg3d.student.checkpoint import read_checkpoint
    from ovseg3d.text.clip_model import DEFAULT_CLIP_MODEL, checkpoint_text_encoder

    if gt is not None and not gt.is_dir():
        raise UserError(f"--gt {gt} is not a scene folder")
    if not bag.exists():
        raise UserError(f"bag {bag} does not exist")
    types = bag_topics(bag)  # opens, or says why not, before the node starts
    cfg = cfg or ReplayConfig()
    streams = stream_params({name for name, topic in cfg.bag_topics().items() if topic in types})
    ckpt = read_checkpoint(checkpoint)
    labels = load_label_set(label_set or ckpt.get("label_set", "scannet20"))
    clip = checkpoint_text_encoder(ckpt, clip_model or DEFAULT_CLIP_MODEL, clip_weights)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        harness = NodeHarness(context, {"checkpoint": str(checkpoint), "label_set": labels.name,
                                        "clip.model": clip.model, "clip.pretrained": clip.pretrained or "",
                                        "qos_depth": 100,  # a replay comes in bursts; params can override
                                        **streams, **(params or {})}, namespace="")
        try:
            harness.start()
            return replay(bag, harness, cfg, out, gt, labels)
        finally:
            harness.close()
    finally:
        context.try_shutdown()
