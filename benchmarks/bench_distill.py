"""The distillation ablation: 2D fusion of the teacher vs the distilled 3D student, with and
without superpoint distillation and geometric pooling, on held-out synthetic scenes.

Run: .venv/bin/python benchmarks/bench_distill.py [--train-scenes 18] [--epochs 40] [--jobs 2]
     [--input occupancy|color] [--seed 0] [--work DIR] [--teacher simulated|simulated_hard|both]
Synthetic world and simulated teacher (test instruments), random CLIP weights; the table
compares methods on the same held-out scenes in one run. Geometric pooling (GeoPurify) is
applied where the paper applies it, to the teacher's fused 2D features, and to the student's
output; each with the paper's parameters and with K, sharpening and steps chosen on separate
tuning rooms (never on the held-out ones). Two "ceiling" rows pool with an affinity made from
the ground-truth instances: not a method, a measure of how much a perfect affinity would give,
so a small gain can be told apart from a weak affinity network. The table of what pooling fixed
and broke (near class boundaries or inside objects) says where a gain or a loss comes from. Each
claim (the student beats its teacher, superpoints add, pooling adds) is printed as a difference
with a paired-bootstrap interval over the held-out rooms: on 4 rooms a +0.9 had looked like a
gain and was noise on 12.

The two students train side by side (``--jobs`` processes, CPU threads split between them):
about 80 minutes on 2 cores with the defaults (3 min synthesis, 2 x 30 min training, 17 min
affinity student; pooling sweep on 8 rooms and evaluation on 12 took 5-8 and 8-9 min with two
benches sharing the cores). A run folder that already holds a finished student or affinity
student resumes it (training is then skipped; the times printed are the epoch times of its
log.csv). Students are kept apart per teacher, input and seed (``runs[_TEACHER]/INPUT_seedS``);
``--teacher both`` runs the two teachers one after the other on the same rooms and ends with
every claim under each, side by side.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

from ovseg3d.data.openscene import fused_path, load_fused_dense
from ovseg3d.data.scannet import ScanNetScene
from ovseg3d.data.synth.generate import SYNTH_PRESETS, generate_dataset
from ovseg3d.eval.semantic import Difference, SemanticMeter, miou_difference
from ovseg3d.eval.tables import miou_table
from ovseg3d.labels import load_label_set
from ovseg3d.pipelines.extract import ExtractOptions, extract_scenes
from ovseg3d.segment.labeling import ensemble_2d_3d
from ovseg3d.student.checkpoint import load_student
from ovseg3d.student.model import INPUTS
from ovseg3d.student.pooling import GEOPURIFY_K, GEOPURIFY_SHARPEN, GEOPURIFY_STEPS, affinity_matrix, propagate
from ovseg3d.text.vocabulary import Vocabulary, build_vocabulary


def _train(config: str, overrides: list[str]) -> None:
    """One student's training, in its own process; a refused config ends it with code 2 and one line."""
    from ovseg3d.errors import UserError
    from ovseg3d_train.cli import train_from_config

    try:
        train_from_config(Path(config), overrides)
    except UserError as exc:
        print(f"ovseg3d-train: error: {exc}", file=sys.stderr)
        sys.exit(2)


def train_parallel(runs: dict[str, tuple[str, list[str]]], jobs: int, threads: int) -> dict[str, float]:
    """Train the runs (config, overrides) ``jobs`` at a time, ``threads`` CPU threads each, each in
    its own process; wall seconds of each. OMP_NUM_THREADS is in the environment a child starts
    with: torch's OpenMP pool (which MinkowskiEngine's CPU kernels use) and BLAS read it when they
    load, which a spawned child does before it runs anything of ours."""
    spawn = multiprocessing.get_context("spawn")
    pending, running, times = list(runs.items()), {}, {}
    saved = os.environ.get("OMP_NUM_THREADS")
    try:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        while pending or running:
            while pending and len(running) < jobs:
                key, (config, overrides) = pending.pop(0)
                proc = spawn.Process(target=_train, args=(config, overrides), name=key)
                proc.start()
                running[key] = (proc, time.perf_counter())
            time.sleep(1.0)
            for key, (proc, t0) in list(running.items()):
                if not proc.is_alive():
                    if proc.exitcode != 0:
                        for other, _ in running.values():
                            other.terminate()
                        raise SystemExit(f"{key} failed (exit {proc.exitcode}); its message is above")
                    times[key] = time.perf_counter() - t0
                    del running[key]
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-scenes", type=int, default=18)
    p.add_argument("--val-scenes", type=int, default=12, help="held-out rooms the table is measured on (default 12)")
    p.add_argument("--tune-scenes", type=int, default=8,
                   help="further rooms on which pooling's K, sharpening and steps are chosen (default 8)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.002)
    # the "test" world's meshes have 10 cm vertex spacing: at 5 cm voxels two thirds of the voxels
    # have no occupied neighbour and the full-resolution convolutions see nothing but themselves
    p.add_argument("--voxel", type=float, default=0.1, help="student voxel size in metres (default 0.1)")
    p.add_argument("--input", choices=list(INPUTS), default="occupancy",
                   help="what the students see besides point positions: occupancy (geometry only, the default), "
                        "height (+ each voxel's z), color, color_height")
    p.add_argument("--seed", type=int, default=0, help="training seed of the students (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="students trained at once (threads split between them)")
    p.add_argument("--affinity-epochs", type=int, default=50, help="GeoPurify's schedule (default 50)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_distill"))
    p.add_argument("--teacher", choices=[*TEACHERS, "both"], default="simulated",
                   help="the simulated 2D teacher (test instrument): simulated errs independently per view; "
                        "simulated_hard misreads an object the same way in every view, bleeds wider and never "
                        "labels some objects; both: one after the other on the same rooms, then every claim under "
                        "each side by side (features and runs kept apart per teacher; default simulated)")
    args = p.parse_args()
    teachers = TEACHERS if args.teacher == "both" else (args.teacher,)
    claims = {teacher: run(args, teacher) for teacher in teachers}
    if len(teachers) > 1:
        print_claims_by_teacher(claims, args)


def print_claims_by_teacher(claims: dict[str, list[tuple[str, Difference]]], args: argparse.Namespace) -> None:
    """The claims of each teacher's run in one table: a student that beats only the teacher whose
    errors fusion averages away (``simulated``) has not shown the papers' claim."""
    print(f"\n== every claim under each teacher (input {args.input}, seed {args.seed}; difference of mIoU, "
          f"{100 * LEVEL:g}% interval, rooms where it holds) ==")
    print(f"{'claim':<58}" + "".join(f"{t:>30}" for t in claims))
    for row in zip(*claims.values()):  # one claim, as each teacher's run measured it
        print(f"{row[0][0]:<58}" + "".join(
            f"{f'{d.delta * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}] {d.scenes_better}/{d.scenes}':>30}"
            for _, d in row))


def run(args: argparse.Namespace, teacher: str) -> list[tuple[str, Difference]]:
    """One teacher's whole bench (synthesis shared, features and students its own); prints its
    table and returns each claim's paired difference."""
    work = args.work
    tag = "" if teacher == "simulated" else f"_{teacher}"
    n = args.train_scenes + args.val_scenes + args.tune_scenes
    # students kept apart per teacher, input and seed: another input in the same folder trains its own
    # (resuming one trained otherwise is refused, after minutes of synthesis and extraction)
    data, feats = work / "scenes", work / f"features{tag}"
    runs_dir = work / f"runs{tag}" / f"{args.input}_seed{args.seed}"
    times = {}
    first_missing = next((i for i in range(n) if not (data / f"scene{i:04d}_00" / "synth.json").exists()), n)
    if first_missing < n:  # each room depends only on (seed, index): later rooms can be added to a finished set
        t0 = time.perf_counter()
        generate_dataset(data, n - first_missing, 100, SYNTH_PRESETS["test"], first_index=first_missing)
        times["synth"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    extract_scenes(data, feats, ExtractOptions(teachers=[teacher]))
    times["extract"] = time.perf_counter() - t0
    names = [f"scene{i:04d}_00" for i in range(n)]
    train, val = names[: args.train_scenes], names[args.train_scenes: args.train_scenes + args.val_scenes]
    tune = names[args.train_scenes + args.val_scenes:]
    # SAS's superpoint distillation (eq. 10): superpoint loss plus the point loss on superpoint-averaged targets
    runs = {"cosine": ["loss.superpoint=0"],
            "cosine+superpoint": ["loss.superpoint=1", "loss.superpoint_point_targets=true"]}
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    commands = {f"train {run}": ("training/configs/synthetic.yaml", [
                                 f"data.scenes={data}", f"data.targets={feats}", f"data.train=[{','.join(train)}]",
                                 f"data.val=[{','.join(val)}]", f"optim.epochs={args.epochs}", f"optim.lr={args.lr}",
                                 f"student.voxel_size={args.voxel}", f"student.input={args.input}", f"out={runs_dir}",
                                 f"name={run}", "val_every=5", f"threads={threads}", f"seed={args.seed}", *extra])
                for run, extra in runs.items()}
    times.update(train_parallel(commands, args.jobs, threads))
    for run in runs:  # a run folder that already had last.pt resumes: its own log holds the training time
        times[f"train {run} (epoch times in log.csv)"] = epoch_seconds(runs_dir / run / "log.csv")
    times.update(train_parallel({"train affinity (GeoPurify)": ("training/configs/geopurify_affinity.yaml", [
        f"data.scenes={data}", f"data.train=[{','.join(train)}]",
        f"affinity.teacher={runs_dir}/cosine+superpoint/last.pt",
        f"student.voxel_size={args.voxel}", f"student.input={args.input}",  # it sees what the students see
        f"optim.epochs={args.affinity_epochs}", f"out={runs_dir}", "name=affinity", f"seed={args.seed}"])},
        1, os.cpu_count() or 1))
    times["train affinity (epoch times in log.csv)"] = epoch_seconds(runs_dir / "affinity" / "log.csv")
    labels = load_label_set("scannet20")
    vocab = build_vocabulary(labels)
    affinity = load_student(runs_dir / "affinity" / "last.pt", "cpu")[0]
    students = {run: load_student(runs_dir / run / "last.pt", "cpu")[0] for run in runs}
    setup = dict(data=data, feats=feats, students=students, affinity=affinity, labels=labels)

    t0 = time.perf_counter()
    best = tune_pooling([scene_inputs(name, **setup) for name in tune], vocab, len(labels))
    times["pooling sweep on the tuning rooms"] = time.perf_counter() - t0
    rows = {"2D fusion (teacher)": "2D", "2D fusion + pooling [affinity, paper]": "2D+P",
            "2D fusion + pooling [affinity, tuned]": "2D+P*", "2D fusion + pooling [own, paper]": "2D+P own",
            "2D fusion + pooling [own, tuned]": "2D+P* own", "3D cosine": "cos", "3D cosine+superpoint": "cos+sp",
            "3D cos+sp + pooling [own, paper]": "+P own", "3D cos+sp + pooling [own, tuned]": "+P* own",
            "3D cos+sp + pooling [affinity, paper]": "+P aff", "3D cos+sp + pooling [affinity, tuned]": "+P* aff",
            "ensemble 3D cos+sp | 2D fusion": "ens", "ensemble 3D cos+sp | 2D fusion + pooling [tuned]": "ens P*",
            "ceiling: 2D fusion + pooling [GT instances, paper]": "2D+P GT",
            "ceiling: 3D cos+sp + pooling [GT instances, paper]": "+P GT"}
    meters = {k: SemanticMeter(len(labels), keep_scenes=True) for k in rows}  # for the claims' intervals
    changes: dict[str, np.ndarray] = {}  # per pooled row: points, fixed, fixed near a boundary, broken, broken near
    purity: dict[str, np.ndarray] = {}  # per affinity source: weight on same-class neighbours, all weight
    paper = (GEOPURIFY_K, GEOPURIFY_SHARPEN, GEOPURIFY_STEPS)
    t_pool = 0.0
    for name in tqdm(val, desc="held-out rooms (every row)", unit="room"):
        x = scene_inputs(name, **setup)
        before = {run: vocab.classify(x[run])[0].numpy() for run in runs}  # labels before any pooling
        before["2d"] = labels_2d(vocab, x["2d"], x["mask"])
        meters["2D fusion (teacher)"].update(before["2d"], x["gt"])
        for run in runs:
            meters[f"3D {run}"].update(before[run], x["gt"])
        matrices, pooled = {}, {}  # an affinity matrix serves every target and step count it is asked for
        near = near_boundary(x["points"], x["gt"], 2 * args.voxel)
        runs_of = [(t, s, v, tag, params) for t, s, v in POOLED
                   for tag, params in (("paper", paper), ("tuned", best[(t, s)]))]
        runs_of += [(t, s, v, "paper", paper) for t, s, v in CEILING]
        for target, source, valid, tag, (k, sharpen, steps) in runs_of:
            t1 = time.perf_counter()
            if (source, k, sharpen) not in matrices:
                matrices[source, k, sharpen] = affinity_matrix(x["points"], x[source], k, sharpen)
            A = matrices[source, k, sharpen]
            _, f, reached = next(propagate(A, x[target], [steps], x["mask"] if valid else None))
            t_pool += time.perf_counter() - t1
            label = f"{source}, {tag}" if source != "instances" else "GT instances, paper"
            row = ("ceiling: " if source == "instances" else "") + f"{ROW_OF[target]} + pooling [{label}]"
            pred = labels_2d(vocab, f, reached)
            meters[row].update(pred, x["gt"])
            changes[row] = changes.get(row, 0) + pooling_changes(before[target], pred, x["gt"], near)
            pooled[row] = f, reached
        for source in AFFINITY_SOURCES:
            purity[source] = purity.get(source, 0) + same_class_weight(matrices[source, paper[0], paper[1]], x["gt"])
        # OpenScene's ensemble, with the fused 2D features as they are and as tuned pooling purified them
        for row, (f2d, seen) in (("ensemble 3D cos+sp | 2D fusion", (x["2d"], x["mask"])),
                                 ("ensemble 3D cos+sp | 2D fusion + pooling [tuned]",
                                  pooled["2D fusion + pooling [affinity, tuned]"])):
            ens = ensemble_2d_3d(x["cosine+superpoint"], f2d, seen, vocab)[0]
            meters[row].update(vocab.classify(ens)[0].numpy(), x["gt"])
    print(f"\n== distillation ablation on {len(val)} held-out synthetic scenes ({len(train)} training scenes, "
          f"{args.epochs} epochs, {args.voxel * 100:g} cm voxels, input {args.input}, seed {args.seed}; "
          f"teacher {teacher} (test instrument); random CLIP) ==")
    scores = {k: m.compute() for k, m in meters.items()}
    print(miou_table(scores, "2D fusion (teacher)"))
    print(f"pooling: paper = GeoPurify's K {paper[0]}, sharpening {paper[1]:g}, {paper[2]} steps; tuned = best mIoU "
          f"over K {SWEEP['k']} x sharpening {SWEEP['sharpen']} x steps {SWEEP['steps']} on {len(tune)} separate "
          "tuning rooms (never the held-out ones):")
    for (target, source), (k, sharpen, steps) in best.items():
        print(f"  {ROW_OF[target]} with the {source} features: K {k}, sharpening {sharpen:g}, "
              f"{steps} steps")
    print(f"\neach claim as a difference of mIoU (points), {100 * LEVEL:g}% interval from {ROUNDS} resamplings of the "
          f"{len(val)} held-out rooms (the room is the unit: its points are not independent):")
    claims = []
    for claim, a, b in CLAIMS:
        d = miou_difference(meters[a], meters[b], LEVEL, ROUNDS)
        claims.append((claim, d))
        print(f"  {claim:<58}{d.delta * 100:>+6.1f}  [{d.low * 100:+.1f}, {d.high * 100:+.1f}]  "
              f"better in {d.scenes_better}/{d.scenes} rooms")
    print(f"\nwhat pooling changed (% of the held-out points; 'near' = within {2 * args.voxel * 100:g} cm of a point "
          "of another class):")
    print(f"{'':52}{'fixed':>8}{'near':>8}{'broken':>8}{'near':>8}{'net':>8}")
    for row, (n, fixed, fixed_near, broken, broken_near) in changes.items():
        print(f"{row:<52}" + "".join(f"{v / n * 100:>8.1f}" for v in (fixed, fixed_near, broken, broken_near))
              + f"{(fixed - broken) / n * 100:>+8.1f}")
    print(f"affinity weight on neighbours of the same class (K {paper[0]}, sharpening {paper[1]:g}): "
          + ", ".join(f"{source} {a / b:.3f}" for source, (a, b) in purity.items()))
    print("\nper-class IoU (held-out points of the class; columns as the rows above):")
    print(f"{'class':<16}{'points':>8}" + "".join(f"{short:>10}" for short in rows.values()))
    counts = meters["2D fusion (teacher)"].cm.sum(1) + meters["2D fusion (teacher)"].misses
    for i, name in enumerate(labels.names):
        if counts[i]:
            print(f"{name:<16}{counts[i]:>8}" + "".join(f"{s.iou[i] * 100:>10.1f}" for s in scores.values()))
    print("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f", held-out pooling {t_pool:.1f} s")
    return claims


def epoch_seconds(log_csv: Path) -> float:
    with open(log_csv, newline="") as f:
        return sum(float(row["seconds"]) for row in csv.DictReader(f))


# pooled features, the affinity features that guide them, and whether only the seen points carry a feature
POOLED = (("2d", "affinity", True), ("2d", "own", True), ("cosine+superpoint", "own", False),
          ("cosine+superpoint", "affinity", False))
# an affinity from the ground-truth instances: what pooling could give with a perfect affinity (not a method)
CEILING = (("2d", "instances", True), ("cosine+superpoint", "instances", False))
# (claim, baseline row, row that should beat it)
CLAIMS = (("the student beats its teacher's 2D fusion", "2D fusion (teacher)", "3D cosine+superpoint"),
          ("superpoint distillation adds", "3D cosine", "3D cosine+superpoint"),
          ("pooling [affinity, paper] adds to the student", "3D cosine+superpoint",
           "3D cos+sp + pooling [affinity, paper]"),
          ("pooling [affinity, tuned] adds to the student", "3D cosine+superpoint",
           "3D cos+sp + pooling [affinity, tuned]"),
          ("pooling [own, tuned] adds to the student", "3D cosine+superpoint", "3D cos+sp + pooling [own, tuned]"),
          ("pooling [affinity, paper] adds to the 2D fusion (GeoPurify)", "2D fusion (teacher)",
           "2D fusion + pooling [affinity, paper]"))
LEVEL, ROUNDS = 0.95, 2000
TEACHERS = ("simulated", "simulated_hard")
AFFINITY_SOURCES = ("affinity", "own", "instances")
ROW_OF = {"2d": "2D fusion", "cosine+superpoint": "3D cos+sp"}
SWEEP = {"k": (8, 16, 32, 96), "sharpen": (5.0, 20.0, 50.0), "steps": (1, 2, 4, 8, 18)}


def scene_inputs(name: str, data: Path, feats: Path, students: dict, affinity, labels) -> dict:
    """Everything the evaluation needs of one room: ground truth, 2D and 3D features, affinity features."""
    scene = ScanNetScene(data / name)
    f2d, mask = load_fused_dense(fused_path(feats, name), scene.num_points)
    x = {"points": scene.points, "gt": scene.semantic(labels), "2d": f2d, "mask": mask}
    for run, st in students.items():  # students take the colours only if they were trained with them
        x[run] = st.predict(scene.points, scene.colors)
    x["own"] = students["cosine+superpoint"].predict_backbone(scene.points, scene.colors)
    x["affinity"] = affinity.predict(scene.points, scene.colors)
    ids = np.unique(scene.instance_ids, return_inverse=True)[1]
    x["instances"] = torch.nn.functional.one_hot(torch.as_tensor(ids, dtype=torch.int64)).float()
    return x


def near_boundary(points: np.ndarray, gt: np.ndarray, radius: float) -> np.ndarray:
    """Points with a point of another class within ``radius``."""
    tree = cKDTree(points)
    return np.array([bool(np.any(gt[nb] != gt[i])) for i, nb in enumerate(tree.query_ball_point(points, radius))])


def pooling_changes(before: np.ndarray, after: np.ndarray, gt: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Labelled points; points pooling fixed, of them near a boundary; points it broke, of them near one."""
    valid = gt >= 0
    right_before, right_after = (before == gt) & valid, (after == gt) & valid
    fixed, broken = ~right_before & right_after, right_before & ~right_after
    return np.array([valid.sum(), fixed.sum(), (fixed & near).sum(), broken.sum(), (broken & near).sum()])


def same_class_weight(A: torch.Tensor, gt: np.ndarray) -> np.ndarray:
    """Affinity weight between points of the same class, and all the weight (between labelled points)."""
    coo = A.to_sparse_coo().coalesce()
    rows, cols = (i.numpy() for i in coo.indices())
    w = coo.values().numpy()
    labelled = (gt[rows] >= 0) & (gt[cols] >= 0)
    return np.array([w[labelled & (gt[rows] == gt[cols])].sum(), w[labelled].sum()], dtype=np.float64)


def labels_2d(vocab, features: torch.Tensor, seen: torch.Tensor) -> np.ndarray:
    """Labels, -1 where there is no feature (a point no camera saw, or no seen point reached)."""
    pred = vocab.classify(features)[0].numpy()
    pred[~seen.numpy()] = -1
    return pred


def tune_pooling(rooms: list[dict], vocab, num_classes: int) -> dict[tuple[str, str], tuple[int, float, int]]:
    """Best (K, sharpening, steps) by mIoU on the tuning rooms, for each pooled target and affinity source.

    Pooling is linear and the label is the argmax of cosine similarity, in which a point's feature
    norm cancels: pooling the features' projections on the text rows (R x smaller than D) gives the
    same labels, so the sweep pools those.
    """
    rows = Vocabulary(vocab.names, torch.eye(len(vocab.row_class)), vocab.row_class)
    meters: dict = {}
    grid = [(k, sharpen) for k in SWEEP["k"] for sharpen in SWEEP["sharpen"]]
    for x in tqdm(rooms, desc="pooling sweep (tuning rooms)", unit="room"):
        projected = {t: x[t] @ vocab.embeddings.T.float() for t in dict.fromkeys(target for target, _, _ in POOLED)}
        for source in dict.fromkeys(source for _, source, _ in POOLED):  # POOLED's order: the same printout each run
            for k, sharpen in grid:
                A = affinity_matrix(x["points"], x[source], k, sharpen)
                for target, _, valid in (p for p in POOLED if p[1] == source):
                    for steps, pooled, reached in propagate(A, projected[target], SWEEP["steps"],
                                                            x["mask"] if valid else None):
                        meter = meters.setdefault((target, source, k, sharpen, steps), SemanticMeter(num_classes))
                        meter.update(labels_2d(rows, pooled, reached), x["gt"])
    best: dict = {}
    for (target, source, *params), meter in meters.items():
        miou = meter.compute().miou
        if (target, source) not in best or miou > best[(target, source)][0]:
            best[(target, source)] = (miou, tuple(params))
    return {key: params for key, (_, params) in best.items()}

if __name__ == "__main__":
    main()
