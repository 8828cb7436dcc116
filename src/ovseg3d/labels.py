"""Label sets: class names, the dataset ids they come from, prompt names and display colours.

A label set maps a dataset's per-point ids (NYU40 ids for ScanNet20, raw-category ids for
ScanNet200, ...) to class indices 0..K-1; everything else becomes ``IGNORE``. Label sets are YAML
files in config/label_sets/ (or any path), so users can add their own.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ovseg3d.errors import UserError
from ovseg3d.paths import config_dir

IGNORE = -1  # class index of points outside the label set


@dataclass(frozen=True)
class LabelSet:
    name: str
    id_space: str  # what the dataset ids are: "nyu40", "scannet_raw", "index", ...
    ids: tuple[int, ...]
    names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]  # per class, one or more names for text prompts
    colors: np.ndarray  # (K, 3) uint8
    splits: tuple[str, ...] = ()  # per class a long-tail split (ScanNet200: head/common/tail), or empty

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, dataset_ids: np.ndarray) -> np.ndarray:
        """Class index (int64) for each dataset id; ``IGNORE`` for ids outside the set."""
        dataset_ids = np.asarray(dataset_ids, dtype=np.int64)
        lut_size = max(max(self.ids) + 1, int(dataset_ids.max(initial=0)) + 1)
        lut = np.full(lut_size, IGNORE, dtype=np.int64)
        lut[list(self.ids)] = np.arange(len(self.ids))
        out = np.full(dataset_ids.shape, IGNORE, dtype=np.int64)
        valid = dataset_ids >= 0
        out[valid] = lut[dataset_ids[valid]]
        return out

    def colorize(self, class_index: np.ndarray, ignore_color=(0, 0, 0)) -> np.ndarray:
        """(N, 3) uint8 colours of class indices; ignored points get ``ignore_color``."""
        class_index = np.asarray(class_index)
        out = np.empty((*class_index.shape, 3), dtype=np.uint8)
        out[:] = ignore_color
        valid = (class_index >= 0) & (class_index < len(self))
        out[valid] = self.colors[class_index[valid]]
        return out


STUFF_LABELS = ("wall", "floor", "ceiling")  # surfaces, never object instances


def stuff_indices(names, stuff=STUFF_LABELS) -> set[int]:
    """Class indices of ``names`` that are stuff (walls, floors) rather than objects."""
    return {i for i, n in enumerate(names) if n in stuff}


def palette(k: int) -> np.ndarray:
    """K well-separated colours (golden-ratio hues), for label sets without their own."""
    hues = (np.arange(k) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.65 if i % 2 else 0.85, 0.95 if i % 3 else 0.75) for i, h in enumerate(hues)]
    return (np.asarray(rgb) * 255).round().astype(np.uint8).reshape(k, 3)


def available_label_sets() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "label_sets").glob("*.yaml"))


def load_label_set(name_or_path: str | Path) -> LabelSet:
    """A label set by name (config/label_sets/NAME.yaml) or from a YAML file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / "label_sets" / f"{name_or_path}.yaml"
        if not path.exists():
            raise UserError(f"unknown label set {str(name_or_path)!r}; available: "
                            + ", ".join(available_label_sets()))
    elif not path.exists():
        raise UserError(f"label set file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
        classes = spec["classes"]
        ids = tuple(int(c["id"]) for c in classes)
        names = tuple(str(c["name"]) for c in classes)
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"label set {path} is malformed ({type(exc).__name__}: {exc}); expected "
                        "'classes: [{id: INT, name: STR}, ...]'") from None
    if not names:
        raise UserError(f"label set {path} has no classes")
    if len(set(ids)) != len(ids):
        raise UserError(f"label set {path} repeats a class id")
    prompts = []
    for c, name in zip(classes, names):
        p = c.get("prompt", name)
        prompts.append(tuple(p) if isinstance(p, list) else (str(p),))
    colors = palette(len(names))
    for i, c in enumerate(classes):
        if "color" in c:
            colors[i] = np.asarray(c["color"], dtype=np.uint8)
    splits = tuple(str(c["split"]) for c in classes) if all("split" in c for c in classes) else ()
    return LabelSet(name=str(spec.get("name", path.stem)), id_space=str(spec.get("id_space", "index")),
                    ids=ids, names=names, prompts=tuple(prompts), colors=colors, splits=splits)
