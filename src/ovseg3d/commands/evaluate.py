"""`ovseg3d eval`: mIoU/mAcc (and AP for instances) of predictions against ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "score predictions (`ovseg3d infer` output) against ground truth; optional ScanNet benchmark export"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="prediction folder: <scene>.npz per scene (from `ovseg3d infer`)")
    p.add_argument("--gt", type=Path, required=True, help="dataset root with ground-truth labels (ScanNet layout)")
    p.add_argument("--labels", default="scannet20", help="label set to score in (default scannet20)")
    p.add_argument("--json", type=Path, help="where to write the scores (default PRED/eval.json)")
    p.add_argument("--export-scannet", type=Path, metavar="DIR",
                   help="also write predictions in the ScanNet benchmark format (semantic/ and instance/)")


def run(args: argparse.Namespace) -> int:
    from ovseg3d.pipelines.evaluate import evaluate_predictions, print_scores

    report = evaluate_predictions(args.pred, args.gt, args.labels, args.export_scannet)
    print_scores(report)
    out = args.json or args.pred / "eval.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"scores written to {out}" + (f"; ScanNet export in {args.export_scannet}" if args.export_scannet else ""))
    return 0
