"""Synthetic scenes (a test instrument) in ScanNet's raw layout, optionally reconstructed from their
depth images as ScanNet's points are (their sensor streams as rosbag2: ``ros_tools.bag.write_scene_bag``)."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ovseg3d.data.synth.generate import SYNTH_NOTE, SynthConfig, generate_dataset, generate_scene, prepare_dataset
from ovseg3d.errors import UserError
from ovseg3d.progress import bar


def make_scenes(out: Path, scenes: int, seed: int, cfg: SynthConfig, first_index: int = 0,
                reconstruct: float | None = None, workers: int = 1) -> list[Path]:
    """Write ``scenes`` rooms from ``seed`` into ``out``; returns their folders. ``workers`` > 1 makes
    that many rooms at once in worker processes (a room is mostly single-threaded numpy work); each
    room's files depend only on (seed, index), so they are the same either way."""
    if reconstruct is not None and not reconstruct > 0:
        raise UserError("--reconstruct needs a positive voxel size in metres")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    print(f"ovseg3d synth: {SYNTH_NOTE}")
    t0 = time.perf_counter()
    steps = 1 + cfg.frames + cfg.sweeps
    with bar(scenes * steps, "synth", "step") as pbar:
        if workers == 1:
            paths = generate_dataset(out, scenes, seed, cfg, first_index, on_step=lambda _: pbar.update())
            points = [_reconstruct(path, reconstruct) for path in paths]
        else:
            out = prepare_dataset(out, scenes)
            spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch's threads
            with ProcessPoolExecutor(min(workers, scenes), mp_context=spawn) as pool:
                jobs = [pool.submit(_make_room, out, first_index + i, seed, cfg, reconstruct) for i in range(scenes)]
                try:
                    for job in jobs:
                        job.result()
                        pbar.update(steps)
                except BaseException:  # a failed room or Ctrl-C: the rooms not yet started are not made
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            paths, points = zip(*(job.result() for job in jobs))
    dt = time.perf_counter() - t0
    print(f"wrote {len(paths)} scene(s) to {out} in {dt:.1f} s ({dt / len(paths):.1f} s per scene, "
          f"{min(workers, scenes)} at a time)")
    for path, n in zip(paths, points):
        if n is not None:
            print(f"reconstructed {path.name} from its depth images: {n} points ({reconstruct} m voxels)")
    return list(paths)


def _reconstruct(path: Path, voxel: float | None) -> int | None:
    if voxel is None:
        return None
    from ovseg3d.data.synth.reconstruct import reconstruct_scene

    return reconstruct_scene(path, voxel)


def _make_room(out: Path, index: int, seed: int, cfg: SynthConfig, reconstruct: float | None
               ) -> tuple[Path, int | None]:
    """One room in a worker process: made, then re-made from its depth if asked."""
    path = generate_scene(out, index, seed, cfg)
    return path, _reconstruct(path, reconstruct)
