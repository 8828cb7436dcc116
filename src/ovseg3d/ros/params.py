"""The node's parameters, declared once: type, default, range, description and the ``LiveConfig``
field each sets (so adding a map parameter is one line here and a field in LiveConfig).

Defaults here match ``config/ovseg3d.yaml`` (a test keeps them in step). Read-only parameters are
fixed at start (they shape the model or the map); the others may be set while the node runs and
take effect on the next message or update. Ranges are enforced by rclpy on every set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ovseg3d.labels import STUFF_LABELS


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    low: float | None = None
    high: float | None = None
    read_only: bool = False
    field: str | None = None  # the LiveConfig field it sets, if any

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.low is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(self.low), to_value=float(self.high),
                                                             step=0.0)]
        return d


PARAMS: tuple[Param, ...] = (
    Param("autostart", True, "configure and activate on start (false: wait for a lifecycle manager)",
          read_only=True),
    Param("checkpoint", "", "student checkpoint file (ovseg3d-train output); loaded on configure", read_only=True),
    Param("device", "auto", "torch device for the student: auto (CUDA when present), cpu or cuda[:N]",
          read_only=True),
    Param("label_set", "", "label set of the startup vocabulary (empty: the checkpoint's), e.g. scannet20",
          read_only=True),
    Param("vocabulary_file", "", "precomputed vocabulary embeddings instead of the text encoder (no CLIP on board)",
          read_only=True),
    Param("clip.model", "ViT-B-16", "open_clip text encoder for the vocabulary and text queries", read_only=True),
    Param("clip.pretrained", "", "open_clip tag or local weights file (empty: random weights, for tests only)",
          read_only=True),
    Param("prompt_templates", ["a {} in a scene"], "prompt templates, one '{}' each; embeddings are averaged",
          read_only=True),
    Param("map_frame", "map", "fixed frame of the map; sensor poses are looked up into it", read_only=True),
    Param("map.voxel_size", 0.02, "map voxel edge (m)", 0.005, 1.0, read_only=True, field="voxel_size"),
    Param("map.max_voxels", 1_000_000,
          "map size bound: above it the voxels seen longest ago are evicted, down to 95 % of it",
          1000, 50_000_000, read_only=True, field="max_voxels"),
    Param("map.feature_rows", "auto", "how the map stores a student voxel's feature: fp16 (float16 coordinates: "
          "queries rank as the uncompressed features), int8 (codes: at most 64 bytes a voxel even when every voxel "
          "has its own row), auto: fp16 while a row is shared by enough map voxels to cost at most 64 bytes a voxel, "
          "int8 when not", read_only=True,
          field="feature_rows"),
    Param("map.extent", 0.0, "evict voxels farther than this (x, y; m) from the robot, once they are 1 % of the "
          "map; 0: no bound", 0.0, 10000.0,
          field="extent"),
    Param("rgb.transport", "raw", "raw: sensor_msgs/Image on rgb/image; compressed: image_transport's jpeg/png "
          "CompressedImage on <rgb/image, remapped>/compressed", read_only=True),
    Param("depth.transport", "raw", "raw: sensor_msgs/Image on depth/image; compressedDepth: image_transport's "
          "png/rvl CompressedImage on <depth/image, remapped>/compressedDepth", read_only=True),
    Param("depth.registered", True, "true: depth is registered to the colour camera and rgb/camera_info describes "
          "both; false: depth has its own CameraInfo on depth/camera_info and colour is attached by projecting "
          "each point into the colour camera, posed through TF", read_only=True),
    Param("camera.color", True, "subscribe to the colour image and match it with depth; false: depth and CameraInfo "
          "alone map and label (the default student reads geometry only)", read_only=True),
    Param("depth.stride", 2, "use every n-th depth pixel per axis", 1, 16, field="depth_stride"),
    Param("rgbd.keyframe_translation", 0.05, "integrate an RGB-D frame when the camera moved this far (m) since "
          "the last integrated one; 0: every frame", 0.0, 100.0, field="keyframe_translation"),
    Param("rgbd.keyframe_rotation", 5.0, "... or turned this much (degrees)", 0.0, 180.0, field="keyframe_rotation"),
    Param("rgbd.keyframe_interval", 1.0, "... or this long (s) has passed since the last one", 0.0, 3600.0,
          field="keyframe_interval"),
    Param("rgbd.keyframe_min_interval", 0.1, "... but never sooner than this (s) after the last one (a rate cap: "
          "0.2 keeps a 2-core CPU up with a 30 Hz camera on a fast robot); 0: no cap", 0.0, 3600.0,
          field="keyframe_min_interval"),
    Param("depth.min", 0.1, "nearest depth used (m)", 0.0, 10.0, field="min_depth"),
    Param("depth.max", 6.0, "farthest depth used (m)", 0.1, 100.0, field="max_depth"),
    Param("lidar.max_range", 30.0, "farthest LiDAR return used (m)", 0.5, 500.0, field="lidar_max_range"),
    Param("lidar.min_range", 0.1, "nearest LiDAR return used (m): drops the robot's own body and the (0, 0, 0) "
          "points drivers write for no return", 0.0, 100.0, field="lidar_min_range"),
    Param("sync.slop", 0.05, "largest stamp difference (s) between matched RGB, depth and CameraInfo",
          0.001, 1.0),
    Param("sync.queue_size", 10, "messages kept per camera stream while waiting for a match", 1, 100),
    Param("qos_depth", 5, "history depth of the sensor subscriptions (best effort): messages DDS keeps while "
          "the callbacks are busy; raise it for bursts such as fast bag replay", 1, 1000, read_only=True),
    Param("queue_size", 8, "bounded input queue of the ingest worker (drop-oldest)", 1, 1000),
    Param("tf.timeout", 0.2, "longest wait (s) for a sensor's transform into map_frame", 0.0, 5.0),
    Param("tf.max_frames", 1000, "most TF frames kept; above it frames no lookup has used are forgotten first",
          10, 1_000_000, read_only=True),
    Param("time.max_future", 2.0, "stamps (data and TF) more than this (s) ahead of the node's clock are refused",
          0.001, 1e6),
    Param("inference.rate_hz", 1.0, "how often the student updates the changed part of the map", 0.01, 50.0),
    Param("inference.threads", 0, "CPU threads of the student on the CPU (torch); 0: all but one of torch's, so "
          "ingest keeps a core", 0, 1024, read_only=True),
    Param("inference.nice", 10, "niceness the student's update thread gives itself (Linux; 0: none): sensor "
          "callbacks and the ingest worker then take the CPU first and the update runs in what is left", 0, 19,
          read_only=True),
    Param("inference.context", 1.0, "metres of map around changed voxels the student sees", 0.1, 20.0, field="context"),
    Param("instances.method", "proposals", "proposals: superpoints merged by student-feature similarity and "
          "adjacency, named from 3D alone (the instance head when the student has one); connected: touching "
          "same-label cells", field="instance_method"),
    Param("instances.cell", 0.05, "grid (m) the instance grouping works on", 0.005, 1.0, field="instance_cell"),
    Param("instances.threshold", 0.9, "proposals: cosine above which adjacent superpoints merge", 0.0, 1.0,
          field="instance_threshold"),
    Param("instances.min_points", 30, "smallest instance (map voxels)", 1, 1_000_000, field="instance_min_points"),
    Param("instances.stuff_labels", list(STUFF_LABELS), "labels that are never instances", field="stuff_labels"),
    Param("query.max_points", 200_000, "cap on the points a text query returns", 1, 10_000_000),
    Param("query.max_text_length", 200, "longest text query or vocabulary word (characters)", 1, 10_000),
    Param("vocabulary.max_labels", 1000, "largest vocabulary set_vocabulary accepts", 1, 100_000),
    Param("save_dir", "/tmp/ovseg3d_maps", "save_map, load_map and autosave read and write only inside this folder",
          read_only=True),
    Param("map.load", "", "a saved map (stem under save_dir, as save_map wrote it) restored on configure; a missing "
          "file starts an empty map, one this student cannot read fails the configure", read_only=True),
    Param("map.autosave_period", 0.0, "seconds between background saves of the map to save_dir/autosave "
          "(atomic: a crash keeps the previous save whole); 0: off", 0.0, 86400.0),
    Param("diagnostics.period", 1.0, "seconds between /diagnostics messages", 0.1, 60.0),
    Param("warn_throttle", 5.0, "seconds between repeated warnings of one kind", 0.0, 3600.0),
)
BY_NAME = {p.name: p for p in PARAMS}

# node parameter -> the LiveConfig field it sets: configure, the check of a set and a live change all use it
LIVE_FIELDS = {p.name: p.field for p in PARAMS if p.field}


def live_config(values: Mapping[str, object]):
    """The validated ``LiveConfig`` that parameter ``values`` describe; a UserError in the node's
    words (parameter names, not field names) when they do not make one."""
    import re

    from ovseg3d.errors import UserError
    from ovseg3d.segment.live_map import LiveConfig

    cfg = LiveConfig(**{field: tuple(values[name]) if isinstance(values[name], list) else values[name]
                        for name, field in LIVE_FIELDS.items()})
    try:
        cfg.validate()
    except UserError as exc:
        text = str(exc)
        for name, field in LIVE_FIELDS.items():
            text = re.sub(rf"\b{field}\b", name, text)
        raise UserError(text) from None
    return cfg


def parse_value(name: str, text: str):
    """A command-line value for parameter ``name`` in the parameter's own type, or a clear error."""
    from ovseg3d.errors import UserError

    if name not in BY_NAME:
        raise UserError(f"unknown node parameter {name!r} (see config/ovseg3d.yaml)")
    default = BY_NAME[name].default
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(default, list):
            return [t.strip() for t in text.split(",") if t.strip()]
        return type(default)(text)
    except ValueError:
        raise UserError(f"node parameter {name} takes a {type(default).__name__}, not {text!r}") from None


def parse_assignments(items: list[str], what: str = "--param") -> dict[str, object]:
    """``NAME=VALUE`` command-line items (``--param``) as node parameters in their own types."""
    from ovseg3d.errors import UserError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"{what} {item!r} is not NAME=VALUE")
        out[key.strip()] = parse_value(key.strip(), value.strip())
    return out


def declare(node) -> None:
    """Declare every parameter; a start-up value of the wrong type or out of range is a UserError
    (one line for the user, not rclpy's traceback)."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    from ovseg3d.errors import UserError

    for p in PARAMS:
        try:
            node.declare_parameter(p.name, p.default, p.descriptor())
        except InvalidParameterTypeException as exc:
            given = str(exc).split(" of type ", 1)[-1].split(",", 1)[0].strip("'")
            raise UserError(f"node parameter {p.name} takes {_type_name(p.default)} (default {p.default!r}), "
                            f"not a value of type {given.lower()}") from None
        except InvalidParameterValueException:
            raise UserError(f"node parameter {p.name} must be in [{p.low:g}, {p.high:g}]") from None


def _type_name(default) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, list):
        return "a list of strings"
    return {int: "an integer", float: "a number with a decimal point", str: "a string"}[type(default)]


def values(node) -> dict[str, object]:
    return {p.name: node.get_parameter(p.name).value for p in PARAMS}
