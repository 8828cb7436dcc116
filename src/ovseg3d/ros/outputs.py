"""What the node publishes, as messages RViz shows directly: labelled clouds and instance boxes."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ovseg3d.labels import palette
from ovseg3d.ros.pointcloud2 import array_to_pointcloud2, xyz_fields_array
from ovseg3d.segment.instances import Instance
from ovseg3d_interfaces.msg import InstanceMatch


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """RViz's ``rgb`` field: 0x00RRGGBB stored in a float32."""
    c = np.asarray(colors, np.uint32).reshape(-1, 3)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32).view(np.float32)


def semantic_cloud(points, label_colors, labels, scores, header: Header):
    return array_to_pointcloud2(xyz_fields_array(points, rgb=pack_rgb(label_colors), label=labels.astype(np.int32),
                                                 score=scores.astype(np.float32)), header)


def instance_cloud(points, instances, labels, scores, header: Header):
    keep = instances >= 0
    colors = palette(64)[instances[keep] % 64]
    return array_to_pointcloud2(xyz_fields_array(points[keep], rgb=pack_rgb(colors),
                                                 instance=instances[keep].astype(np.int32),
                                                 label=labels[keep].astype(np.int32),
                                                 score=scores[keep].astype(np.float32)), header)


def query_cloud(points, scores, header: Header):
    return array_to_pointcloud2(xyz_fields_array(points, score=scores.astype(np.float32)), header)


def _point(v) -> Point:
    return Point(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def instance_markers(instances: list[Instance], names: list[str], header: Header) -> MarkerArray:
    """A DELETEALL, then per instance a translucent box and a text label above it."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    colors = palette(64)
    for inst in instances:
        c = colors[inst.id % 64] / 255.0
        size = np.maximum(inst.bbox_max - inst.bbox_min, 0.01)
        centre = (inst.bbox_max + inst.bbox_min) / 2
        box = Marker(header=header, ns="instance_boxes", id=inst.id, type=Marker.CUBE, action=Marker.ADD,
                     lifetime=Duration(sec=0))
        box.pose.position = _point(centre)
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (float(s) for s in size)
        box.color = ColorRGBA(r=float(c[0]), g=float(c[1]), b=float(c[2]), a=0.35)
        text = Marker(header=header, ns="instance_labels", id=inst.id, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD)
        text.pose.position = _point([*centre, 0, 0, size[2] / 2 + 0.1])
        text.pose.orientation.w = 1.0
        text.scale.z = 0.15
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        name = names[inst.label] if 0 <= inst.label < len(names) else "?"
        text.text = f"{name} #{inst.id} ({inst.score:.2f})"
        out.markers += [box, text]
    return out


def instance_match(inst: Instance, name: str, score: float) -> InstanceMatch:
    return InstanceMatch(instance_id=inst.id, label=name, score=float(score), num_points=inst.num_points,
                         centroid=_point(inst.centroid), bbox_min=_point(inst.bbox_min), bbox_max=_point(inst.bbox_max))
