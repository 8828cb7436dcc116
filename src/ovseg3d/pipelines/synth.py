"""Synthetic scenes (a test instrument) in ScanNet's raw layout, optionally reconstructed from their
depth images as ScanNet's points are (their sensor streams as rosbag2: ``ros_tools.bag.write_scene_bag``)."""

from __future__ import annotations

import time
from pathlib import Path

from ovseg3d.data.synth.generate import SYNTH_NOTE, SynthConfig, generate_dataset
from ovseg3d.errors import UserError
from ovseg3d.progress import bar


def make_scenes(out: Path, scenes: int, seed: int, cfg: SynthConfig, first_index: int = 0,
                reconstruct: float | None = None) -> list[Path]:
    """Write ``scenes`` rooms from ``seed`` into ``out``; returns their folders."""
    if reconstruct is not None and not reconstruct > 0:
        raise UserError("--reconstruct needs a positive voxel size in metres")
    print(f"ovseg3d synth: {SYNTH_NOTE}")
    t0 = time.perf_counter()
    with bar(scenes * (1 + cfg.frames + cfg.sweeps), "synth", "step") as pbar:
        paths = generate_dataset(out, scenes, seed, cfg, first_index, on_step=lambda _: pbar.update())
    dt = time.perf_counter() - t0
    print(f"wrote {len(paths)} scene(s) to {out} in {dt:.1f} s ({dt / len(paths):.1f} s per scene)")
    if reconstruct is not None:
        from ovseg3d.data.synth.reconstruct import reconstruct_scene

        for path in paths:
            n = reconstruct_scene(path, reconstruct)
            print(f"reconstructed {path.name} from its depth images: {n} points ({reconstruct} m voxels)")
    return paths
