"""`ovseg3d-train`: offline distillation of the 3D student from fused 2D teacher features."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg3d-train",
        description="Distil the MinkowskiEngine 3D student from fused 2D vision-language features "
        "(OpenScene-format targets). Configs live in training/configs/; any config key can be "
        "overridden as key=value. Run several processes with torchrun for DistributedDataParallel.",
    )
    parser.add_argument("--config", required=True, help="training config YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.epochs=10")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete this run's checkpoints instead of resuming from last.pt")
    return parser


def train_from_config(config: str | Path, overrides: Sequence[str] = (), fresh: bool = False) -> Path:
    """Train as `ovseg3d-train --config CONFIG OVERRIDES...` does (the demo and benchmarks call this);
    returns the best (or last) checkpoint."""
    from .config import load_config

    cfg = load_config(config, list(overrides))
    if cfg.threads > 0:  # MinkowskiEngine's CPU kernels size their OpenMP pool from this when they load
        os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
    from .trainer import train

    return train(cfg, fresh=fresh)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ovseg3d.errors import UserError

    try:
        path = train_from_config(args.config, args.overrides, args.fresh)
    except UserError as exc:
        print(f"ovseg3d-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovseg3d-train: interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 130
    print(f"ovseg3d-train: done; checkpoint {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
