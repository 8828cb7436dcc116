"""Synthetic scene generation time and multi-view fusion throughput on this machine.

Run: .venv/bin/python benchmarks/bench_scenes.py [--quick]
Prints one table; all figures come from this one run (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_scene
from ovseg3d.fusion.multiview import fuse_features
from ovseg3d.geometry.camera import visible_points


def bench_synth(root: Path, preset: str) -> tuple[float, Path]:
    t0 = time.perf_counter()
    path = generate_scene(root / preset, 0, seed=0, cfg=SYNTH_PRESETS[preset])
    return time.perf_counter() - t0, path


def bench_fusion(scene: ScanNetScene, channels: int, fmap_size: tuple[int, int]) -> dict[str, float]:
    frames = list(scene.frames())
    w, h = fmap_size
    fmap = torch.randn(channels, h, w)
    point_views = sum(len(visible_points(scene.points, f.pose, f.K, f.image_size, f.depth).index) for f in frames)
    t0 = time.perf_counter()
    fused = fuse_features(scene.points, frames, lambda f: fmap)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "frames": len(frames), "points": scene.num_points, "point_views": point_views,
            "pv_per_s": point_views / dt, "seen": float(fused.mask.float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="test-sized scene only")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        presets = ["test"] if args.quick else ["test", "demo"]
        synth = {p: bench_synth(root, p) for p in presets}
        print("\n== synthetic scene generation (ovseg3d synth; a test instrument) ==")
        print(f"{'preset':<8}{'points':>10}{'frames':>8}{'sweeps':>8}{'seconds':>10}")
        for p, (dt, path) in synth.items():
            cfg = SYNTH_PRESETS[p]
            n = ScanNetScene(path).num_points
            print(f"{p:<8}{n:>10}{cfg.frames:>8}{cfg.sweeps:>8}{dt:>10.1f}")
        scene = ScanNetScene(synth[presets[-1]][1])
        print(f"\n== multi-view fusion on the {presets[-1]} scene (feature source cost excluded) ==")
        print(f"{'channels':>8}{'map':>10}{'frames':>8}{'point-views':>13}{'seconds':>9}{'pv/s':>12}{'ratio':>8}")
        for channels, size in [(512, (40, 30)), (512, (320, 240)), (768, (40, 30)), (32, (40, 30))]:
            rows.append((channels, size, bench_fusion(scene, channels, size)))
        base = rows[0][2]["pv_per_s"]
        for channels, size, r in rows:
            print(f"{channels:>8}{f'{size[0]}x{size[1]}':>10}{r['frames']:>8}{r['point_views']:>13}"
                  f"{r['seconds']:>9.2f}{r['pv_per_s']:>12.3g}{r['pv_per_s'] / base:>8.2f}")
        print(f"(ratio: throughput relative to 512 channels at 40x30; {np.round(rows[0][2]['seen'] * 100, 1)} % "
              "of points seen)")


if __name__ == "__main__":
    main()
