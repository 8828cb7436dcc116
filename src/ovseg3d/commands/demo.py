"""`ovseg3d demo`: the whole method end to end on the embedded synthetic world, on a CPU.

Every step is a real ovseg3d command run in this process (the same code a user runs), so the
demo is also a smoke test of the tool chain. The 2D teacher is the simulated one: no pretrained
vision-language weights can be downloaded on these machines, and the CLIP text encoder has random
weights; the numbers measure the pipeline, not real-world recognition.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "run the whole pipeline on synthetic scenes (test instrument): teacher, student, query, node replay"

REAL_DATA = """\
On real data with real weights, the same steps are:
  ovseg3d extract DATA --teacher maskclip --clip-model ViT-B-16 --clip-weights openai --out FEATURES
  ovseg3d-train --config training/configs/openscene_3d.yaml data.scenes=DATA data.targets=FEATURES \\
      clip_weights=openai
  ovseg3d infer DATA --checkpoint runs/openscene_3d/best.pt --out PRED --clip-weights openai
  ovseg3d eval PRED --gt DATA --labels scannet20
  ovseg3d replay YOUR_BAG --checkpoint runs/openscene_3d/best.pt --clip-weights openai [--gt SCENE]
(--clip-weights also takes a local .pt/.safetensors file.)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--scenes", type=int, default=8, help="synthetic scenes; the last one is held out (default 8)")
    p.add_argument("--epochs", type=int, default=30, help="student training epochs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world (default 0)")
    p.add_argument("--query", default="a chair", help='the text query of the demo (default "a chair")')
    p.add_argument("--replay-rate", type=float, default=2.0, help="bag playback speed for the node (default 2)")


def _step(title: str, argv: list[str], timings: dict, key: str | None = None) -> None:
    from ovseg3d.cli import main
    from ovseg3d.errors import UserError

    print(f"\n=== {title}\n$ ovseg3d {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = main(argv)
    timings[key or title] = time.perf_counter() - t0
    if code != 0:
        raise UserError(f"demo step '{title}' failed (exit {code}); its error is above")


def run(args: argparse.Namespace) -> int:
    from ovseg3d.data.synth.generate import SYNTH_NOTE
    from ovseg3d.errors import UserError
    from ovseg3d.paths import config_dir

    if args.scenes < 2:
        raise UserError("--scenes must be at least 2 (one is held out)")
    if args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    out = args.out
    data, features, runs = out / "data", out / "features", out / "runs"
    held_out = f"scene{args.scenes - 1:04d}_00"
    print("ovseg3d demo: the 2D teacher is SIMULATED and the CLIP text encoder has RANDOM weights, because no "
          "pretrained vision-language weights can be had offline here; " + SYNTH_NOTE + ". The numbers test the "
          "pipeline, not real-world recognition.\n" + REAL_DATA, flush=True)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    if not (data / held_out / "synth.json").exists():
        _step("1/7 synthetic scenes (test instrument), reconstructed from their depth like ScanNet's",
              ["synth", str(data), "--scenes", str(args.scenes), "--seed", str(args.seed), "--preset", "test",
               "--reconstruct", "0.05"], timings, "synth")
    else:
        print(f"\n=== 1/7 synthetic scenes: reusing {data}")
    bag = data / held_out / "rosbag2_mcap"
    if not bag.exists():
        from ovseg3d.ros_tools.bag import write_bag
        from ovseg3d.ros_tools.scene_stream import scene_stream

        write_bag(scene_stream(data / held_out), bag, "mcap")
    _step("2/7 simulated 2D teacher, fused onto the points (OpenScene files), and FOLK's instance teacher",
          ["extract", str(data), "--teacher", "simulated", "--out", str(features), "--instance-teacher"],
          timings, "extract")
    ckpt = runs / "demo" / "best.pt"
    print("\n=== 3/7 distilling a small 3D student on the CPU", flush=True)
    t0 = time.perf_counter()
    import ovseg3d_train
    from ovseg3d_train.cli import main as train_main

    overrides = [f"data.scenes={data}", f"data.targets={features}", f"data.val=[{held_out}]", f"out={runs}",
                 "name=demo", "student.arch=MinkUNetSmall", "student.voxel_size=0.1", f"optim.epochs={args.epochs}",
                 "data.max_points=30000", "student.instance_hidden=128", "loss.instance_distill=1.0",
                 "loss.instance_label_ce=0.2",
                 f"val_every={max(1, args.epochs // 4)}", "optim.lr=0.004"]
    config = Path(ovseg3d_train.__file__).parent / "configs" / "synthetic.yaml"
    if train_main(["--config", str(config), *overrides]) != 0:
        raise UserError("demo step 'train' failed; its error is above")
    timings["train"] = time.perf_counter() - t0
    val = data / held_out
    results = {}
    for mode in ("2d", "3d"):
        pred = out / f"pred_{mode}"
        argv = ["infer", str(val), "--mode", mode, "--out", str(pred), "--features", str(features)]
        if mode == "3d":  # instances from 3D alone: proposals named by the student's instance head (FOLK)
            argv += ["--checkpoint", str(ckpt), "--instances"]
        _step(f"4/7 label the held-out scene: {mode}", argv, timings, f"infer {mode}")
        _step(f"4/7 score {mode}", ["eval", str(pred), "--gt", str(data), "--labels", "scannet20"], timings,
              f"eval {mode}")
        results[mode] = json.loads((pred / "eval.json").read_text())
    _step("5/7 text query", ["query", str(val), args.query, "--checkpoint", str(ckpt), "--out",
                             str(out / "query.png")], timings, "query")
    _step("6/7 replay the held-out scene's bag through the ROS 2 node",
          ["replay", str(bag), "--checkpoint", str(ckpt), "--gt", str(val), "--rate", str(args.replay_rate),
           "--out", str(out / "replay"), "--param", "map.voxel_size=0.05", "--param", "depth.stride=2",
           "--param", "inference.rate_hz=1.0", "--param", "instances.cell=0.1"], timings, "replay")
    replay = json.loads((out / "replay" / "report.json").read_text())
    total = time.perf_counter() - t_all
    print(f"\n=== 7/7 summary (held-out scene {held_out}; simulated teacher, random CLIP: a test of the pipeline)")
    print("| what | mIoU | mAcc |\n| --- | --- | --- |")
    print(f"| 2D fusion of the simulated teacher | {100 * results['2d']['mIoU']:.1f} | "
          f"{100 * results['2d']['mAcc']:.1f} |")
    print(f"| 3D student (geometry only, {args.epochs} epochs on the CPU) | {100 * results['3d']['mIoU']:.1f} | "
          f"{100 * results['3d']['mAcc']:.1f} |")
    if "eval" in replay:
        e = replay["eval"]
        print(f"| ROS 2 node on the replayed bag (map points) | {e['miou']:.1f} | {e['macc']:.1f} |")
    inst = results["3d"].get("instances")
    if inst:
        print(f"\ninstances from 3D alone (proposals named by the student's instance head, FOLK): "
              f"AP {100 * inst['AP']:.1f}, AP50 {100 * inst['AP50']:.1f}, AP25 {100 * inst['AP25']:.1f}; "
              f"the node found {replay.get('instances', 0)} instances in its map")
    latency = (replay.get("latency_s") or {}).get("median", float("nan"))
    print(f"\nnode: {sum(replay['played'].values())} messages played, {replay['queue_drops']} queue drops, "
          f"rejected {replay['rejected'] or 'none'}, latency sensor->labels median {latency:.1f} s, "
          f"peak memory {replay['peak_rss_mib']:.0f} MiB")
    print("\ntime per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; total {total / 60:.1f} min")
    pictures = [out / "pred_2d" / f"{held_out}.png", out / "pred_3d" / f"{held_out}.png", out / "query.png",
                *[Path(p) for p in replay.get("pictures", [])], out / "pred_3d" / f"{held_out}.ply"]
    print("pictures and maps:\n" + "\n".join(f"  {p}" for p in pictures if p.exists()))
    print(f"label colours: {config_dir() / 'label_sets' / 'scannet20.yaml'}")
    return 0
