"""What this installation can run: versions of the heavy parts, and why one is unavailable."""

from __future__ import annotations

import importlib


def _probe(module: str, version_attr: str = "__version__") -> dict:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # any import failure is the information we report
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return {"ok": True, "version": str(getattr(mod, version_attr, "?"))}


def collect() -> dict[str, dict]:
    report = {
        "torch": _probe("torch"),
        "MinkowskiEngine": _probe("MinkowskiEngine"),
        "open_clip": _probe("open_clip"),
        "rclpy": _probe("rclpy", "__name__"),
        "ovseg3d_interfaces": _probe("ovseg3d_interfaces.srv", "__name__"),
    }
    if report["torch"]["ok"]:
        import torch

        report["torch"]["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        report["torch"]["build"] = f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu"
    return report


def format_report(report: dict[str, dict]) -> str:
    lines = []
    for name, entry in report.items():
        if entry["ok"]:
            extra = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("ok", "version"))
            lines.append(f"  ok       {name:<20} {entry.get('version', '')} {extra}".rstrip())
        else:
            lines.append(f"  MISSING  {name:<20} {entry['error']}")
    return "ovseg3d environment:\n" + "\n".join(lines)
