"""The 3D student on every device this machine has, side by side: CPU and (when present) CUDA.

Run: .venv/bin/python benchmarks/bench_student.py [--quick]
Per device: one forward pass (TensorField -> sparse -> MinkUNet18A -> slice back to every point,
host-to-device copies included) at two map sizes, and one training step (forward, cosine loss,
backward, AdamW) on the smaller; then the ratio CPU / CUDA, and whether both devices give the same
features for the same weights. Random weights (speed does not depend on them). The clouds are
surfaces of a box room with furniture-sized boxes, sampled like a scan, not volumes: a sparse
network's cost follows occupied voxels. Needs no open3d, so it also runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def room_surface_cloud(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) points on the walls, floor and ceiling of a 6 x 5 x 2.6 m room and on 12 boxes."""
    rng = np.random.default_rng(seed)
    boxes = [(np.zeros(3), np.array([6.0, 5.0, 2.6]))]
    for _ in range(12):
        size = rng.uniform([0.4, 0.4, 0.4], [2.0, 1.2, 1.5])
        low = np.append(rng.uniform([0, 0], [6 - size[0], 5 - size[1]]), 0.0)
        boxes.append((low, low + size))
    faces = []  # (origin, edge u, edge v) of every box face
    for low, high in boxes:
        d = high - low
        for axis in range(3):
            u, v = [np.eye(3)[a] * d[a] for a in range(3) if a != axis]
            for side in (low, low + np.eye(3)[axis] * d[axis]):
                faces.append((side, u, v))
    area = np.array([np.linalg.norm(np.cross(u, v)) for _, u, v in faces])
    pick = rng.choice(len(faces), size=n, p=area / area.sum())
    origin = np.stack([faces[i][0] for i in pick])
    eu, ev = np.stack([faces[i][1] for i in pick]), np.stack([faces[i][2] for i in pick])
    a, b = rng.random((n, 1)), rng.random((n, 1))
    return (origin + a * eu + b * ev + rng.normal(0, 0.003, (n, 3))).astype(np.float32)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(device: str, sizes: list[int], repeats: int) -> dict:
    from ovseg3d.student.model import Student, StudentConfig

    torch.manual_seed(0)
    student = Student(StudentConfig()).to(device).eval()
    out = {}
    for n in sizes:
        points = room_surface_cloud(n)
        student.predict(points[:2000])  # warm-up: kernels, allocator
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            feats = student.predict(points)
            _sync(device)
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
        assert feats.shape == (n, 512) and torch.isfinite(feats).all()
        out[("infer", n)] = (min(times), peak)
    n = sizes[0]
    points = room_surface_cloud(n, seed=1)
    target = torch.nn.functional.normalize(torch.randn(n, 512), dim=1).to(device)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        pred = student(student.make_field([points], None))
        loss = (1 - torch.nn.functional.cosine_similarity(pred, target, dim=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out[("train", n)] = (min(times[1:]), float("nan"))  # the first step pays for allocation
    return out


def same_features(n: int) -> tuple[float, float]:
    """Max |difference| and min cosine of CPU vs CUDA features, same weights, same points."""
    from ovseg3d.student.model import Student, StudentConfig

    torch.manual_seed(0)
    cpu = Student(StudentConfig()).eval()
    gpu = Student(StudentConfig()).to("cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    points = room_surface_cloud(n, seed=2)
    a, b = cpu.predict(points), gpu.predict(points)
    return (a - b).abs().max().item(), (a * b).sum(1).min().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller clouds, one repeat")
    args = p.parse_args()
    sizes = [20_000, 50_000] if args.quick else [100_000, 400_000]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"student MinkUNet18A, 512-d, 2 cm voxels; torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"threads, {name}")
    results = {d: measure(d, sizes, 1 if args.quick else 3) for d in devices}
    print(f"{'task':<28}" + "".join(f"{d:>14}" for d in devices) + ("   CPU/CUDA" if len(devices) == 2 else ""))
    for key in results["cpu"]:
        label = f"{key[0]} {key[1]:,} points"
        row = f"{label:<28}" + "".join(f"{results[d][key][0] * 1e3:>11.1f} ms" for d in devices)
        if len(devices) == 2:
            row += f"   {results['cpu'][key][0] / results['cuda'][key][0]:>7.1f}x"
        print(row)
    if "cuda" in devices:
        for n in sizes:
            print(f"peak CUDA memory, forward on {n:,} points: {results['cuda'][('infer', n)][1]:.0f} MiB")
        diff, cos = same_features(sizes[0])
        print(f"CPU vs CUDA features (same weights, {sizes[0]:,} points): max |diff| {diff:.1e}, min cosine {cos:.6f}")
    else:
        print("no CUDA device here: CPU only (the CUDA column appears where torch sees a GPU)")


if __name__ == "__main__":
    main()
