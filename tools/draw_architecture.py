"""Draw docs/architecture.svg: ovseg3d's packages and the data flow from sensors and scenes to labels.

Run: python3 tools/draw_architecture.py [--out docs/architecture.svg] [--png docs/architecture.png]

The layout is the table below (hand-placed boxes, arrows as polylines). Standard library only.
Where the DejaVu fonts are installed, every text run is measured with the font's own advance widths
and the script fails if a text leaves its box, two texts overlap, or an arrow runs through a text.
``--png`` renders through librsvg (ctypes) when the library is present.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import itertools
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

W, H = 1200, 1030
SANS = "DejaVu Sans, Verdana, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
FONT_FILES = {  # (family, bold) -> file, for measuring
    ("sans", False): "DejaVuSans.ttf",
    ("sans", True): "DejaVuSans-Bold.ttf",
    ("mono", False): "DejaVuSansMono.ttf",
    ("mono", True): "DejaVuSansMono-Bold.ttf",
}
FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
             "/Library/Fonts", str(Path.home() / ".fonts")]

# group fill / stroke per layer
STYLE = {
    "inputs": ("#f2f2f2", "#8c8c8c"),
    "ros": ("#fdebd3", "#d9822b"),
    "pipe": ("#e3f4e1", "#4d9a48"),
    "core": ("#e1ecf8", "#4a7fb5"),
    "train": ("#ece3f5", "#8061a8"),
    "outputs": ("#fff6d5", "#b8962e"),
}
FLOW = {  # arrow kind -> (colour, dash, width, legend)
    "online": ("#d9822b", None, 2.2, "online: sensor topics → node → published labels"),
    "offline": ("#2f6db5", None, 2.2, "offline: scenes → teachers → fused features → training"),
    "results": ("#3c8c36", None, 2.2, "results: checkpoint → student → labels, instances, answers"),
    "dep": ("#777777", "5,4", 1.4, "imports / calls (arrow points at what is used)"),
}


# ---------------------------------------------------------------- text measuring (DejaVu metrics)

class Font:
    """Advance widths from a TrueType file (cmap format 4 + hmtx), enough to measure one line."""

    def __init__(self, path: Path):
        data = path.read_bytes()
        n = struct.unpack(">H", data[4:6])[0]
        tables = {data[12 + 16 * i:16 + 16 * i].decode("latin-1"): struct.unpack(">II", data[20 + 16 * i:28 + 16 * i])
                  for i in range(n)}
        head = tables["head"][0]
        self.upem = struct.unpack(">H", data[head + 18:head + 20])[0]
        hhea = tables["hhea"][0]
        n_hmetrics = struct.unpack(">H", data[hhea + 34:hhea + 36])[0]
        hmtx = tables["hmtx"][0]
        self.adv = [struct.unpack(">H", data[hmtx + 4 * i:hmtx + 4 * i + 2])[0] for i in range(n_hmetrics)]
        self.cmap = self._cmap(data, tables["cmap"][0])

    @staticmethod
    def _cmap(data: bytes, off: int) -> dict[int, int]:
        count = struct.unpack(">H", data[off + 2:off + 4])[0]
        for i in range(count):
            pid, eid, sub = struct.unpack(">HHI", data[off + 4 + 8 * i:off + 12 + 8 * i])
            so = off + sub
            if struct.unpack(">H", data[so:so + 2])[0] == 4 and (pid, eid) in ((3, 1), (0, 3), (0, 4)):
                seg2 = struct.unpack(">H", data[so + 6:so + 8])[0]
                segs = seg2 // 2
                ends = struct.unpack(f">{segs}H", data[so + 14:so + 14 + seg2])
                starts = struct.unpack(f">{segs}H", data[so + 16 + seg2:so + 16 + 2 * seg2])
                deltas = struct.unpack(f">{segs}h", data[so + 16 + 2 * seg2:so + 16 + 3 * seg2])
                ro_off = so + 16 + 3 * seg2
                ranges = struct.unpack(f">{segs}H", data[ro_off:ro_off + seg2])
                cmap = {}
                for s in range(segs):
                    for c in range(starts[s], ends[s] + 1):
                        if c == 0xFFFF:
                            continue
                        if ranges[s] == 0:
                            g = (c + deltas[s]) & 0xFFFF
                        else:
                            p = ro_off + 2 * s + ranges[s] + 2 * (c - starts[s])
                            g = struct.unpack(">H", data[p:p + 2])[0]
                            g = (g + deltas[s]) & 0xFFFF if g else 0
                        cmap[c] = g
                return cmap
        raise ValueError("no unicode cmap")

    def width(self, text: str, size: float) -> float:
        total = 0
        for ch in text:
            g = self.cmap.get(ord(ch), 0)
            total += self.adv[min(g, len(self.adv) - 1)]
        return total * size / self.upem


def _load_fonts() -> dict | None:
    fonts = {}
    for key, name in FONT_FILES.items():
        path = next((Path(d) / name for d in FONT_DIRS if (Path(d) / name).is_file()), None)
        if path is None:
            return None
        fonts[key] = Font(path)
    return fonts


FONTS = _load_fonts()


def text_width(text: str, size: float, family: str = "sans", bold: bool = False) -> float:
    if FONTS is None:
        return len(text) * size * (0.62 if family == "sans" else 0.61)
    return FONTS[(family, bold)].width(text, size)


# ---------------------------------------------------------------- the drawing as data

@dataclass
class Text:
    x: float
    y: float  # baseline
    text: str
    size: float = 11
    family: str = "sans"
    bold: bool = False
    color: str = "#222"
    anchor: str = "start"
    italic: bool = False
    halo: bool = False  # white outline behind (arrow labels)
    within: tuple[float, float, float, float] | None = None  # the box it must stay inside
    owner: int | None = None  # arrow index, for arrow labels

    def bbox(self) -> tuple[float, float, float, float]:
        w = text_width(self.text, self.size, self.family, self.bold)
        x0 = {"start": self.x, "middle": self.x - w / 2, "end": self.x - w}[self.anchor]
        return x0, self.y - 0.76 * self.size, x0 + w, self.y + 0.24 * self.size


@dataclass
class Drawing:
    rects: list[str] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    arrows: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)

    def group(self, x, y, w, h, style, label):
        fill, stroke = STYLE[style]
        self.rects.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="10" fill="{fill}" '
                          f'fill-opacity="0.55" stroke="{stroke}" stroke-width="1.5"/>')
        self.texts.append(Text(x + 10, y + 16, label, 11, bold=True, color=stroke, within=(x, y, x + w, y + h)))

    def box(self, x, y, w, h, style, title, lines=(), sub=None, title_mono=False, cols=None, pad=8):
        """A package box: bold title (optionally a grey subtitle after it or on the next line), then
        monospace lines (one column, or ``cols`` = list of columns of lines)."""
        stroke = STYLE[style][1]
        self.rects.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#ffffff" '
                          f'stroke="{stroke}" stroke-width="1.3"/>')
        self.boxes.append((x, y, x + w, y + h))
        inside = (x + 3, y + 2, x + w - 3, y + h - 2)
        fam = "mono" if title_mono else "sans"
        self.texts.append(Text(x + pad, y + 16, title, 12.5, fam, True, within=inside))
        ty = y + 16
        if sub is not None:
            inline, sub_text = sub
            if inline:
                tw = text_width(title, 12.5, fam, True)
                self.texts.append(Text(x + pad + tw + 6, ty, sub_text, 10.5, color="#555", within=inside))
            else:
                ty += 14
                self.texts.append(Text(x + pad, ty, sub_text, 10.5, color="#555", within=inside))
        columns = cols if cols is not None else [(0, list(lines))]
        for dx, col in columns:
            for i, line in enumerate(col):
                self.texts.append(Text(x + pad + dx, ty + 15 + 12.5 * i, line, 10, "mono", within=inside))

    def note(self, x, y, text, size=10.5, color="#444", **kw):
        self.texts.append(Text(x, y, text, size, color=color, **kw))

    def arrow(self, kind, points, label=None, at=None, anchor="start", dy=-4):
        self.arrows.append((kind, points))
        if label:
            lx, ly = at if at is not None else points[0]
            self.texts.append(Text(lx, ly + dy, label, 9.5, color=FLOW[kind][0], anchor=anchor, italic=True,
                                   halo=True, owner=len(self.arrows) - 1))


def build() -> Drawing:
    d = Drawing()
    d.note(W / 2, 28, "ovseg3d — packages and data flow", 20, "#111", anchor="middle", bold=True)
    d.note(W / 2, 48, "offline, 2D vision-language teachers are fused onto 3D points and distilled into a "
           "sparse-conv student; online, the ROS 2 node runs only the student", 11.5, "#444", anchor="middle")

    # columns: inputs | middle (layers, dependencies point down) | outputs
    ix, iw = 18, 190            # inputs group
    bx, bw = ix + 8, iw - 16    # input boxes
    mx, mw = 232, 736           # middle groups
    cx, cw = mx + 10, mw - 20   # middle content 242..958
    ox, ow = 992, 190           # outputs group
    px, pw = ox + 8, ow - 16    # output boxes

    # ---------------------------------------------------------------- groups
    d.group(ix, 64, iw, 890, "inputs", "INPUTS")
    d.group(ox, 64, ow, 890, "outputs", "OUTPUTS")
    d.group(mx, 64, mw, 212, "ros", "ROS 2 LAYER — the only code that imports rclpy")
    d.group(mx, 292, mw, 164, "pipe", "PIPELINES + COMMANDS — library steps, thin command line over them")
    d.group(mx, 472, mw, 348, "core", "CORE LIBRARY — src/ovseg3d: pure Python + torch, never imports rclpy")
    d.group(mx, 836, mw, 118, "train", "TRAINING PACKAGE — training/ → ovseg3d_train "
            "(ovseg3d-train --config training/configs/X.yaml key=value …)")

    # ---------------------------------------------------------------- ROS layer
    d.box(cx, 88, cw, 70, "ros", "ovseg3d.ros_tools",
          sub=(True, "— bag, replay, test and bench tooling beside the node; reaches into data, eval, render"),
          title_mono=True, cols=[
              (0, ["bag           rosbag2 read/write", "scene_stream  scene → messages",
                   "replay        bag → node, metrics"]),
              (240, ["harness       node in this process", "node_process  node as a process"]),
              (478, ["robot_stream  robot streaming in", "hostile       bad-input catalogue"])])
    d.box(cx, 178, cw, 90, "ros", "ovseg3d.ros",
          sub=(True, "— the perception node: a lifecycle adapter over segment.live_map"),
          title_mono=True, cols=[
              (0, ["node         lifecycle node, services", "node_main    ovseg3d_node entry",
                   "params       declared once"]),
              (240, ["pointcloud2  PointCloud2 ↔ numpy", "images       Image, CameraInfo",
                     "transforms   TF → poses in map"]),
              (478, ["sync     queues, approx. time", "stamps   order of time", "outputs  clouds, markers",
                     "stats    NodeStats"])])

    # ---------------------------------------------------------------- pipelines + commands
    pip_x, pip_y, pip_w, pip_h = cx, 316, 480, 130
    d.box(pip_x, pip_y, pip_w, pip_h, "pipe", "ovseg3d.pipelines", title_mono=True,
          sub=(True, "— called by commands, demo, benchmarks, node"))
    sub_w, sub_h = 150, 46
    steps = [("context", "student, text encoder,", "vocabulary; dims checked"),
             ("extract", "2D teachers → fused", "features, OpenScene files"),
             ("infer", "3d / 2d / ensemble labels", "+ instances per scene"),
             ("query", "text query on a scene:", "points + instances"),
             ("evaluate", "mIoU/mAcc, AP, ScanNet", "benchmark export"),
             ("synth", "synthetic scenes", "(test instrument)")]
    for k, (name, l1, l2) in enumerate(steps):
        sx = pip_x + 8 + (k % 3) * (sub_w + 7)
        sy = pip_y + 26 + (k // 3) * (sub_h + 6)
        d.rects.append(f'<rect x="{sx}" y="{sy}" width="{sub_w}" height="{sub_h}" rx="4" fill="#f4fbf3" '
                       f'stroke="#4d9a48" stroke-width="1"/>')
        inside = (sx + 2, sy + 1, sx + sub_w - 2, sy + sub_h - 1)
        d.texts.append(Text(sx + 6, sy + 13, name, 11, "mono", True, within=inside))
        d.texts.append(Text(sx + 6, sy + 27, l1, 10, color="#333", within=inside))
        d.texts.append(Text(sx + 6, sy + 40, l2, 10, color="#333", within=inside))
    context_box = (pip_x + 8, pip_y + 26)
    cli_x, cli_w = 752, cx + cw - 752
    d.box(cli_x, 316, cli_w, 78, "pipe", "ovseg3d CLI", sub=(False, "cli.py + commands/: parse, call"),
          lines=["demo synth extract calibrate", "teachers infer eval query", "replay bench info"])
    d.box(cli_x, 402, cli_w, 44, "pipe", "benchmarks/", title_mono=True,
          sub=(False, "bench_*.py, call pipelines directly"))

    # ---------------------------------------------------------------- core
    c1, c2, c3, kw = cx, cx + 248, cx + 496, 220
    r1, r2, r3 = 500, 612, 706
    d.box(c1, r1, kw, 92, "core", "student", sub=(False, "MinkUNet18A: geometry → CLIP feats"),
          lines=["model · minkunet · minkowski", "checkpoint  weights_only load", "pooling     GeoPurify KNN"])
    d.box(c2, r1, kw, 92, "core", "segment", sub=(False, "features → labels, instances"),
          lines=["labeling   labels, 2D-3D ensemble", "proposals  InstancePrediction", "instance_classify · instances",
                 "query · live_map (node's map)"])
    d.box(c3, r1, kw, 50, "core", "eval", sub=(True, "— metrics"),
          lines=["semantic · instance (AP)", "scannet_export · tables"])
    d.box(c3, r1 + 56, kw, 36, "core", "render", sub=(True, "— pictures"), lines=["points_png  PNG z-buffer splats"])
    d.box(c1, r2, kw, 76, "core", "text", sub=(False, "words → CLIP text embeddings"),
          lines=["clip_model  open_clip loader", "vocabulary  build_vocabulary", "            (one function, cached)"])
    d.box(c2, r2, kw, 76, "core", "geometry", sub=(False, "cameras, voxels, superpoints"),
          lines=["camera · raycast · voxels", "voxel_map · neighbors", "superpoints"])
    d.box(c3, r2, kw, 76, "core", "shared modules", sub=(False, "used by every package"),
          lines=["labels · serialization", "errors · progress", "paths · envinfo"])
    d.box(c1, r3, kw, 106, "core", "data", sub=(False, "scenes and files"),
          lines=["scannet    ScanNet raw layout", "openscene  fused-feature files", "map_files  saved maps PLY + npz",
                 "synth/     synthetic world", "ply · images · instance_targets"])
    d.box(c2, r3, kw, 106, "core", "teachers", sub=(False, "2D teachers → dense CLIP features"),
          lines=["base       Teacher, registry,", "           FeatureMap", "maskclip   dense open_clip ViT",
                 "label_teacher  mask + label", "precomputed · simulated (test)"])
    d.box(c3, r3, kw, 106, "core", "fusion", sub=(False, "2D features onto 3D points"),
          lines=["multiview        OpenScene", "multiteacher     SAS weights", "frame_selection  HAS-KD",
                 "instance_views   FOLK views"])

    # ---------------------------------------------------------------- training
    t_y = 862
    rf_w = 190
    d.box(cx, t_y, rf_w, 84, "train", "run_folder", sub=(True, "(both loops)"),
          lines=["config.yaml  resolved", "log.csv      per epoch", "last.pt      exact resume",
                 "best.pt      best val mIoU"])
    loops = [("trainer", "distillation, DDP, resume"), ("affinity", "GeoPurify affinity student"),
             ("cli", "ovseg3d-train entry")]
    tables = [("data", "samples + fused targets"), ("loss_terms", "name → function table"),
              ("config", "typed YAML + overrides")]
    l_x, l_w = cx + rf_w + 30, 236
    t_x = l_x + l_w + 30
    t_w = cx + cw - t_x
    for col_x, col_w, items in ((l_x, l_w, loops), (t_x, t_w, tables)):
        for i, (name, desc) in enumerate(items):
            yy = t_y + i * 30
            d.rects.append(f'<rect x="{col_x}" y="{yy}" width="{col_w}" height="24" rx="4" fill="#ffffff" '
                           f'stroke="#8061a8" stroke-width="1.2"/>')
            d.boxes.append((col_x, yy, col_x + col_w, yy + 24))
            inside = (col_x + 2, yy + 1, col_x + col_w - 2, yy + 23)
            d.texts.append(Text(col_x + 7, yy + 16, name, 11, "mono", True, within=inside))
            d.texts.append(Text(col_x + 7 + 72, yy + 16, desc, 10, color="#333", within=inside))

    # ---------------------------------------------------------------- inputs
    d.box(bx, 88, bw, 70, "inputs", "rosbag2 files", sub=(False, "sqlite3 or mcap"),
          lines=["recorded sensor topics", "(ovseg3d synth --bag)"])
    d.box(bx, 178, bw, 90, "inputs", "ROS 2 sensor topics",
          lines=["rgb/image", "depth/image (mm or m)", "rgb/camera_info", "lidar/points", "/tf  /tf_static"])
    d.box(bx, 316, bw, 96, "inputs", "student checkpoint", sub=(False, "made by training (below)"),
          lines=["weights, resolved config,", "label set, feature dim,", "version (weights_only);",
                 "+ affinity student"])
    d.box(bx, 612, bw, 76, "inputs", "words and label sets", sub=(False, "any vocabulary, any query"),
          lines=["config/label_sets/*.yaml", "open_clip weights", "(random on these machines)"])
    d.box(bx, r3, bw, 106, "inputs", "ScanNet-layout scenes", sub=(False, "real ScanNet or synthetic"),
          lines=["color/ depth/ pose/", "intrinsic/", "*_vh_clean_2.ply (points)", "*.labels.ply, segs.json,",
                 "*.aggregation.json (GT)"])
    d.box(bx, 836, bw, 92, "inputs", "synthetic world", sub=(False, "a test instrument"),
          lines=["rooms, ScanNet20 furniture,", "RGB-D + LiDAR sweeps,", "exact labels; written in", "ScanNet layout"])

    # ---------------------------------------------------------------- outputs
    d.box(px, 88, pw, 70, "outputs", "replay report", sub=(False, "ovseg3d replay, bench node"),
          lines=["messages accounted for,", "mIoU vs ground truth"])
    d.box(px, 178, pw, 90, "outputs", "node topics, services",
          lines=["semantic_points", "instance_points", "instances (MarkerArray)", "query_points, ~/text_query",
                 "~/save_map: PLY + npz"])
    d.box(px, 316, pw, 78, "outputs", "labels + instances", sub=(False, "per scene (<scene>.npz)"),
          lines=["query answers: points", "+ ranked instances"])
    d.box(px, 402, pw, 44, "outputs", "benchmark tables", sub=(False, "ratios measured side by side"))
    d.box(px, r1, pw, 50, "outputs", "ScanNet benchmark", sub=(False, "export + mIoU/mAcc, AP"))
    d.box(px, r1 + 56, pw, 36, "outputs", "PLY + PNG pictures")
    d.box(px, 730, pw, 174, "outputs", "fused features", sub=(False, "OpenScene's file format"),
          lines=["<scene>_<k>.pt =", "{feat: fp16 [M, C],", " mask_full: bool [N]}", "",
                 "<scene>_instances.pt", "(FOLK instance targets)", "", "written by extract;", "read by training and",
                 "infer --mode 2d|ensemble"])

    # ---------------------------------------------------------------- arrows: online (ROS)
    d.arrow("online", [(bx + bw, 123), (cx, 123)])
    d.arrow("online", [(bx + bw, 205), (cx, 205)])
    d.arrow("online", [(cx + cw, 123), (px, 123)])
    d.arrow("online", [(cx + cw, 205), (px, 205)])
    d.arrow("online", [(600, 158), (600, 178)], "bag played over real topics", at=(592, 173), anchor="end", dy=0)
    # ---------------------------------------------------------------- arrows: results
    ctx_y = context_box[1] + 23
    d.arrow("results", [(bx + bw, ctx_y), (context_box[0], ctx_y)])
    d.arrow("results", [(bx + bw, 398), (222, 398), (222, 255), (cx, 255)])
    d.arrow("results", [(cx + cw, 355), (px, 355)])
    d.arrow("results", [(cx + cw, 424), (px, 424)])
    d.arrow("results", [(c1 + kw, r1 + 46), (c2, r1 + 46)], "features", at=(c1 + kw + 14, r1 + 40), anchor="middle")
    d.arrow("results", [(c2 + kw, r1 + 25), (c3, r1 + 25)])
    d.arrow("results", [(c2 + kw, r1 + 74), (c3, r1 + 74)])
    d.arrow("results", [(c3 + kw, r1 + 25), (px, r1 + 25)])
    d.arrow("results", [(c3 + kw, r1 + 74), (px, r1 + 74)])
    # ---------------------------------------------------------------- arrows: offline
    d.arrow("offline", [(bx + 60, 836), (bx + 60, r3 + 106)], "writes", at=(bx + 66, 826), dy=0)
    d.arrow("offline", [(bx + bw, r3 + 30), (c1, r3 + 30)])
    d.arrow("results", [(bx + bw, r2 + 24), (c1, r2 + 24)])
    d.arrow("offline", [(c1 + kw, r3 + 46), (c2, r3 + 46)], "frames", at=(c1 + kw + 14, r3 + 40), anchor="middle")
    d.arrow("offline", [(c2 + kw, r3 + 46), (c3, r3 + 46)], "2D feats", at=(c2 + kw + 14, r3 + 40),
            anchor="middle")
    d.arrow("offline", [(c3 + kw, r3 + 46), (px, r3 + 46)], "fused", at=(c3 + kw + 5, r3 + 40))
    d.arrow("offline", [(px, t_y + 12), (t_x + t_w, t_y + 12)], "targets", at=(t_x + t_w + 4, t_y + 7))
    d.arrow("offline", [(t_x, t_y + 12), (l_x + l_w, t_y + 12)])
    d.arrow("offline", [(l_x, t_y + 12), (cx + rf_w, t_y + 12)])
    d.arrow("offline", [(l_x, t_y + 42), (cx + rf_w, t_y + 42)])
    d.arrow("offline", [(cx + 95, t_y + 84), (cx + 95, 980), (8, 980), (8, 364), (bx, 364)],
            "student checkpoint: best.pt / last.pt", at=(22, 976), dy=0)
    # ---------------------------------------------------------------- arrows: dependencies
    d.arrow("dep", [(cli_x, 350), (pip_x + pip_w, 350)])
    d.arrow("dep", [(cli_x, 424), (pip_x + pip_w, 424)])
    d.arrow("dep", [(700, 268), (700, pip_y)], "load_context", at=(708, 288), dy=0)
    d.arrow("dep", [(700, 158), (700, 178)])
    d.arrow("dep", [(300, pip_y + pip_h), (300, 472)])
    d.arrow("dep", [(860, 836), (860, 820)])

    # ---------------------------------------------------------------- legend
    lx, ly = 470, 972
    for i, (kind, (color, dash, width, text)) in enumerate(FLOW.items()):
        x = lx + (i % 2) * 360
        y = ly + (i // 2) * 20
        d.rects.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 34}" y2="{y - 4}" stroke="{color}" '
                       f'stroke-width="{width}"' + (f' stroke-dasharray="{dash}"' if dash else "")
                       + f' marker-end="url(#arrow-{kind})"/>')
        d.texts.append(Text(x + 44, y, text, 10.5, color="#333"))
    d.note(W / 2, 1020, "Dashed arrows: imports, pointing down the layers. Core never imports rclpy or a layer above "
           "it; packages import each other in one direction only (no cycle).", 10.5, "#555",
           anchor="middle")
    return d


# ---------------------------------------------------------------- checks

def _overlap(a, b, margin=0.0) -> bool:
    return a[0] < b[2] - margin and b[0] < a[2] - margin and a[1] < b[3] - margin and b[1] < a[3] - margin


def _segment_hits(box, p, q) -> bool:
    x0, y0, x1, y1 = box
    if p[0] == q[0]:  # vertical
        return x0 < p[0] < x1 and min(p[1], q[1]) < y1 and max(p[1], q[1]) > y0
    if p[1] == q[1]:
        return y0 < p[1] < y1 and min(p[0], q[0]) < x1 and max(p[0], q[0]) > x0
    raise ValueError(f"arrow segments are horizontal or vertical: {p} {q}")


def check(d: Drawing) -> list[str]:
    problems = []
    boxes = [t.bbox() for t in d.texts]
    for t, b in zip(d.texts, boxes):
        if t.within is not None:
            x0, y0, x1, y1 = t.within
            if b[0] < x0 or b[2] > x1 or b[1] < y0 or b[3] > y1:
                problems.append(f"text leaves its box: {t.text!r} {tuple(round(v) for v in b)} in {t.within}")
        if b[0] < 0 or b[2] > W or b[3] > H:
            problems.append(f"text leaves the canvas: {t.text!r}")
    for i in range(len(d.texts)):
        for j in range(i + 1, len(d.texts)):
            if _overlap(boxes[i], boxes[j], 0.5):
                problems.append(f"texts overlap: {d.texts[i].text!r} / {d.texts[j].text!r}")
    for k, (_kind, pts) in enumerate(d.arrows):
        for p, q in itertools.pairwise(pts):
            for t, b in zip(d.texts, boxes):
                if t.owner == k:
                    continue
                if _segment_hits(b, p, q):
                    problems.append(f"arrow {k} {pts[0]} runs through text {t.text!r}")
    return problems


# ---------------------------------------------------------------- SVG

def svg(d: Drawing) -> str:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="{SANS}">',
           "<title>ovseg3d architecture: packages and data flow</title>",
           "<desc>Inputs (ROS 2 sensor topics, rosbag2, ScanNet-layout scenes, the synthetic world) flow "
           "through the ROS 2 layer, pipelines and commands, the core library and the training package "
           "to labels, instances, query answers and files. Generated by tools/draw_architecture.py.</desc>",
           "<defs>"]
    for kind, (color, _dash, _w, _t) in FLOW.items():
        out.append(f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto-start-reverse" markerUnits="userSpaceOnUse">'
                   f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>')
    out.append("</defs>")
    out.append(f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>')
    out.extend(d.rects)
    for kind, pts in d.arrows:
        color, dash, width, _ = FLOW[kind]
        path = " ".join(f"{x:g},{y:g}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="#ffffff" stroke-width="{width + 3}" '
                   f'stroke-linejoin="round"/>')
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width}" '
                   f'stroke-linejoin="round"' + (f' stroke-dasharray="{dash}"' if dash else "")
                   + f' marker-end="url(#arrow-{kind})"/>')
    for t in d.texts:
        attrs = [f'x="{t.x:g}"', f'y="{t.y:g}"', f'font-size="{t.size:g}"', f'fill="{t.color}"']
        if t.family == "mono":
            attrs.append(f'font-family="{MONO}"')
        if t.bold:
            attrs.append('font-weight="bold"')
        if t.italic:
            attrs.append('font-style="italic"')
        if t.anchor != "start":
            attrs.append(f'text-anchor="{t.anchor}"')
        if t.halo:
            attrs.append('stroke="#ffffff" stroke-width="3" paint-order="stroke" stroke-linejoin="round"')
        out.append(f'<text {" ".join(attrs)} xml:space="preserve">{escape(t.text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_png(svg_path: Path, png_path: Path, scale: float = 1.0) -> bool:
    """SVG -> PNG through librsvg and cairo (ctypes); False where the libraries are missing."""
    names = {k: ctypes.util.find_library(k) for k in ("rsvg-2", "cairo", "gobject-2.0")}
    if not all(names.values()):
        return False
    rsvg, cairo, gobj = (ctypes.CDLL(names[k]) for k in ("rsvg-2", "cairo", "gobject-2.0"))
    rsvg.rsvg_handle_new_from_file.restype = ctypes.c_void_p
    rsvg.rsvg_handle_new_from_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    rsvg.rsvg_handle_render_cairo.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    cairo.cairo_image_surface_create.restype = ctypes.c_void_p
    cairo.cairo_image_surface_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    cairo.cairo_create.restype = ctypes.c_void_p
    cairo.cairo_create.argtypes = [ctypes.c_void_p]
    cairo.cairo_scale.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.c_double]
    cairo.cairo_surface_write_to_png.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    cairo.cairo_destroy.argtypes = [ctypes.c_void_p]
    cairo.cairo_surface_destroy.argtypes = [ctypes.c_void_p]
    gobj.g_object_unref.argtypes = [ctypes.c_void_p]
    handle = rsvg.rsvg_handle_new_from_file(str(svg_path).encode(), None)
    if not handle:
        return False
    surface = cairo.cairo_image_surface_create(0, int(W * scale), int(H * scale))
    cr = cairo.cairo_create(surface)
    cairo.cairo_scale(cr, scale, scale)
    ok = rsvg.rsvg_handle_render_cairo(handle, cr)
    status = cairo.cairo_surface_write_to_png(surface, str(png_path).encode())
    cairo.cairo_destroy(cr)
    cairo.cairo_surface_destroy(surface)
    gobj.g_object_unref(handle)
    return bool(ok) and status == 0


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=root / "docs" / "architecture.svg")
    parser.add_argument("--png", type=Path, default=None, help="also render a PNG (needs librsvg)")
    parser.add_argument("--scale", type=float, default=1.0, help="PNG scale factor")
    parser.add_argument("--force", action="store_true", help="write even if the layout checks fail")
    args = parser.parse_args(argv)
    drawing = build()
    problems = check(drawing)
    if FONTS is None:
        print("note: DejaVu fonts not found; text widths are estimated", file=sys.stderr)
    for p in problems:
        print("layout:", p, file=sys.stderr)
    if problems and not args.force:
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg(drawing), encoding="utf-8")
    print(f"wrote {args.out}")
    if args.png is not None:
        if render_png(args.out, args.png, args.scale):
            print(f"wrote {args.png}")
        else:
            print("no PNG: librsvg/cairo not found", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
