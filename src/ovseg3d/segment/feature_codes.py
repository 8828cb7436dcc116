"""Compact per-voxel features: a principal subspace of the student's output space, int8 per axis.

Why this and not a codebook: the student's last layer is linear (a 1x1 head or an MLP's last
Linear), so its features lie in a subspace of the text space no wider than that layer's input
(49 dimensions for MinkUNetSmall, 97 for MinkUNet18A). A principal basis fitted on the map's own
features holds all of it when the code has room for the subspace's rank; the bytes left over give
the widest axes a second int8 digit (a finer step), which is what keeps the order of the best
answers of a query: they are the extremes of the map, and voxels one coarse step apart there tie
(measured on held-out rooms, see ``benchmarks/bench_map.py``; residual codebooks of the same size
lost 1-2 % of the labels).

With ``exact``, a row holds the coordinates themselves as float16 (2 bytes a column, no steps):
the live map stores those when its rows are shared by many voxels (``feature_table``), and they
rank a query's best answers as the uncompressed features do.

Any text is answered from the codes: a text embedding is projected into the basis once, so a
query costs one pass over the map's codes (``TextProjection``), not a decode.
A code column is either an axis' coarse digit or its fine digit; both are one column of that
product, so the finer digits cost nothing extra at query time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numba
import numpy as np
import torch

from ovseg3d.errors import UserError

CODE_LIMIT = 127  # int8 codes in [-127, 127]
FINE = 2 * CODE_LIMIT  # a fine digit's step: the coarse step / 254 (the coarse rounding error is half a step)
HEADROOM = 1.1  # an axis' range covers its fitting features' largest coordinate plus 10 %
WIDEN = 1.25  # a coordinate beyond the range widens that axis' step to cover it plus 25 %
RANK_TOL = 1e-9  # principal variances below this share of the largest are float noise, not axes
_CHUNK = 8192  # rows per matrix product: the (chunk x words) scores stay in cache


@dataclass(eq=False)  # compared by identity: the map's axes are one object, swapped whole
class FeatureCodec:
    """f ~ mean + coordinates @ basis, coordinates = coarse * step (+ fine * step / 254 on the first
    ``fine`` axes). Codes are ``width`` int8 columns: ``axes`` coarse digits, ``fine`` fine digits,
    then unused zeros (when the features span fewer dimensions than the code has room for).
    ``exact``: ``width`` float16 columns, the coordinates themselves (steps of 1, no fine digits)."""

    mean: torch.Tensor  # (D,)
    basis: torch.Tensor  # (k, D), rows orthonormal
    step: torch.Tensor  # (k,) coarse quantisation step of each axis
    width: int  # int8 columns per code
    fine: int = 0  # leading axes that carry a second (fine) digit
    baseline: float = 0.0  # share of its own fitting features' variance the axes miss (``residual``)
    exact: bool = False  # float16 coordinates, not int8 digits

    @property
    def dtype(self) -> type:
        """What a code column is stored as."""
        return np.float16 if self.exact else np.int8

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    @property
    def axes(self) -> int:
        return int(self.basis.shape[0])

    @property
    def code_dim(self) -> int:
        return self.width

    @classmethod
    def fit(cls, features: torch.Tensor, width: int, sample: int = 50_000, seed: int = 0,
            exact: bool = False) -> FeatureCodec:
        """Principal axes of (a sample of) ``features``, as many as they span and ``width`` holds;
        leftover columns become fine digits of the widest axes (int8), or stay zero (``exact``).
        Steps cover every feature given."""
        x = torch.as_tensor(features).float()
        if x.ndim != 2 or len(x) == 0:
            raise UserError("fitting feature codes needs a non-empty (N, D) feature array")
        if width < 1:
            raise UserError(f"feature codes need at least one column, got {width}")
        part = x
        if len(x) > sample:
            part = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:sample]]
        mean = part.mean(0)
        centred = part - mean
        # eigenvectors of the (D x D) scatter matrix: k axes even from fewer samples than k, and
        # never an (N x N) factor (an SVD with full matrices of 50k samples needs 10 GB)
        values, vectors = torch.linalg.eigh(centred.T.double() @ centred.double())
        values, vectors = values.flip(0), vectors.flip(1)
        rank = max(1, int((values > RANK_TOL * max(float(values[0]), 1e-30)).sum()))
        k = min(width, rank)
        basis = vectors[:, :k].T.float().contiguous()
        codec, _ = cls._on_axes(mean, basis, width, exact, None if exact else _reach(x, mean, basis))
        codec.baseline = codec.residual(part)
        return codec

    @classmethod
    def _on_axes(cls, mean: torch.Tensor, basis: torch.Tensor, width: int, exact: bool,
                 reach: torch.Tensor | None = None) -> tuple[FeatureCodec, torch.Tensor]:
        """A codec of these axes and the order it keeps them in: float16 coordinates (steps of 1, the
        axes as given: widest variance first from ``fit``), or int8 steps that cover ``reach`` (each
        axis' largest coordinate) with headroom, widest range first: the fine digits go where a
        coarse step costs a score the most."""
        k = len(basis)
        if exact:
            return cls(mean, basis.contiguous(), torch.ones(k), width, exact=True), torch.arange(k)
        step = torch.clamp(HEADROOM * reach / CODE_LIMIT, min=1e-6)
        order = torch.argsort(step, descending=True)
        return cls(mean, basis[order].contiguous(), step[order].contiguous(), width, fine=min(k, width - k)), order

    def as_kind(self, codes: np.ndarray, width: int, exact: bool) -> tuple[np.ndarray, FeatureCodec]:
        """``codes`` of this codec as the other kind (``width`` columns: float16 coordinates or int8
        digits) and that kind's codec: the same mean and axes (the leading ones, as many as fit), int8
        steps from the coordinates' reach; no decode to the full feature."""
        coordinates = self.coordinates(codes)
        k = min(self.axes, width)
        coordinates = coordinates[:, :k]
        reach = coordinates.abs().amax(0) if len(coordinates) else torch.zeros(k)
        new, order = self._on_axes(self.mean, self.basis[:k], width, exact, reach)
        new.baseline = self.baseline
        return new.encode_coordinates(coordinates[:, order]), new

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(N, k) exact coordinates of (N, D) features in the basis."""
        x = torch.as_tensor(features).float()
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UserError(f"features are {tuple(x.shape)}, the codes were fitted on {self.dim}-d features")
        return (x - self.mean) @ self.basis.T

    def encode(self, features: torch.Tensor) -> np.ndarray:
        """(N, width) int8 codes of (N, D) features (coordinates beyond an axis' range saturate:
        ``widened`` first where that matters)."""
        return self.encode_coordinates(self.project(features))

    def encode_coordinates(self, y: torch.Tensor) -> np.ndarray:
        if self.exact:
            out16 = torch.zeros(len(y), self.width, dtype=torch.float16)
            out16[:, : self.axes] = y
            return out16.numpy()
        coarse = torch.round(y / self.step).clamp_(-CODE_LIMIT, CODE_LIMIT)
        out = torch.zeros(len(y), self.width, dtype=torch.int8)
        out[:, : self.axes] = coarse.to(torch.int8)
        h = self.fine
        if h:
            rest = (y[:, :h] - coarse[:, :h] * self.step[:h]) / (self.step[:h] / FINE)
            out[:, self.axes:self.axes + h] = rest.round_().clamp_(-CODE_LIMIT, CODE_LIMIT).to(torch.int8)
        return out.numpy()

    def column_steps(self) -> torch.Tensor:
        """(width,) the coordinate one unit of each code column adds (0 for unused columns)."""
        s = torch.zeros(self.width)
        s[: self.axes] = self.step
        s[self.axes:self.axes + self.fine] = self.step[: self.fine] / FINE
        return s

    def column_basis(self) -> torch.Tensor:
        """(width, D) the basis row each code column moves along (a fine digit: its axis' row)."""
        b = torch.zeros(self.width, self.dim)
        b[: self.axes] = self.basis
        b[self.axes:self.axes + self.fine] = self.basis[: self.fine]
        return b

    def coordinates(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, k) float coordinates in the basis (pool these, then ``lift``: cheaper than decoding).
        Linear in the codes, so mean codes (pooled as floats) give the mean coordinates."""
        c = codes.float() if isinstance(codes, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(codes)).float()
        if self.exact:
            return c[:, : self.axes].clone()
        y = c[:, : self.axes] * self.step
        if self.fine:
            y[:, : self.fine] += c[:, self.axes:self.axes + self.fine] * (self.step[: self.fine] / FINE)
        return y

    def lift(self, coordinates: torch.Tensor) -> torch.Tensor:
        """(N, D) features from basis coordinates (e.g. pooled ones)."""
        return coordinates.float() @ self.basis + self.mean

    def decode(self, codes: np.ndarray) -> torch.Tensor:
        return self.lift(self.coordinates(codes))

    def _mean_split(self) -> tuple[torch.Tensor, float, torch.Tensor]:
        """The mean as (its coordinates in the axes, the length and unit direction of the rest)."""
        inside = self.basis @ self.mean
        rest = self.mean - inside @ self.basis
        length = float(rest.norm())
        return inside, length, (rest / length if length > 1e-12 else torch.zeros_like(rest))

    def isometric(self, coordinates: torch.Tensor) -> torch.Tensor:
        """(N, k + 1) the lifted features in an orthonormal basis of (axes, the mean's remainder):
        the same norms and inner products as the D-d features, from k + 1 numbers."""
        inside, length, _ = self._mean_split()
        c = coordinates.float()
        return torch.cat([c + inside, torch.full((len(c), 1), length)], 1)

    def from_isometric(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) features of ``isometric`` coordinates (e.g. means taken there)."""
        _, _, direction = self._mean_split()
        k = self.axes
        return x[:, :k].float() @ self.basis + x[:, k:k + 1].float() * direction

    def residual(self, features: torch.Tensor) -> float:
        """Share of the features' variance about the mean that the basis misses (0: none)."""
        x = torch.as_tensor(features).float() - self.mean
        total = float((x * x).sum())
        kept = float(((x @ self.basis.T) ** 2).sum())
        return max(0.0, 1.0 - kept / total) if total > 0 else 0.0

    def overflows(self, features: torch.Tensor) -> bool:
        """Whether some coordinate of ``features`` lies beyond its axis' range (it would saturate:
        the extremes are exactly the best answers of a query)."""
        return self.widened(features) is not self

    def widened(self, features: torch.Tensor) -> FeatureCodec:
        """The same axes with the steps of those whose range ``features`` exceed grown to hold them;
        this codec itself when none is exceeded (one projection of the features either way)."""
        return self.widened_to(self.project(features))

    def widened_to(self, coordinates: torch.Tensor) -> FeatureCodec:
        """``widened`` from the features' coordinates in these axes (``project``: made once, then
        encoded with ``encode_coordinates`` by whichever codec this returns: the axes are the same)."""
        if self.exact:  # float16 holds any coordinate of a unit feature
            return self
        reach = coordinates.abs().amax(0)
        over = reach > CODE_LIMIT * self.step
        if not bool(over.any()):
            return self
        step = torch.where(over, WIDEN * reach / CODE_LIMIT, self.step)
        return FeatureCodec(self.mean, self.basis, step, self.width, self.fine, self.baseline, self.exact)

    def state(self) -> dict[str, np.ndarray]:
        return {"code_mean": self.mean.numpy(), "code_basis": self.basis.numpy(), "code_step": self.step.numpy(),
                "code_baseline": np.float32(self.baseline), "code_width": np.int32(self.width),
                "code_fine": np.int32(self.fine), "code_exact": np.bool_(self.exact)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> FeatureCodec:
        try:
            mean, basis, step = (torch.as_tensor(np.asarray(state[k], np.float32))
                                 for k in ("code_mean", "code_basis", "code_step"))
            width, fine = int(state["code_width"]), int(state["code_fine"])
            exact = bool(state.get("code_exact", False))  # maps of format 2 hold int8 codes
        except KeyError as exc:
            raise UserError(f"the saved map has no feature codes ({exc.args[0]} missing)") from None
        except (TypeError, ValueError):
            raise UserError("the saved map's feature codes are malformed (width and fine digits are not numbers)") \
                from None
        if (mean.ndim != 1 or basis.ndim != 2 or basis.shape[1] != len(mean) or step.shape != (len(basis),)
                or not 0 <= fine <= len(basis) or len(basis) + fine > width):
            raise UserError("the saved map's feature codes are malformed (basis, mean, step and width do not fit)")
        if not (torch.isfinite(mean).all() and torch.isfinite(basis).all() and (step > 0).all()):
            raise UserError("the saved map's feature codes hold NaN, inf or non-positive steps")
        if exact and (fine or not bool((step == 1).all())):
            raise UserError("the saved map's float16 rows are malformed (steps or fine digits where none belong)")
        return cls(mean, basis, step, width, fine, float(state.get("code_baseline", 0.0)), exact)


def _reach(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    """(k,) largest |coordinate| of the features ``x`` on each axis."""
    out = torch.zeros(len(basis))
    for i in range(0, len(x), chunk):
        out = torch.maximum(out, ((x[i:i + chunk] - mean) @ basis.T).abs().amax(0))
    return out


def recode(codes: np.ndarray, old: FeatureCodec, new: FeatureCodec, chunk: int = 100_000) -> None:
    """Re-express ``codes`` (written in place) from ``old``'s axes in ``new``'s: coordinates moved by
    one k x k matrix and a shift, never a decode to the full feature."""
    if old.width != new.width or old.width != codes.shape[1]:
        raise UserError(f"codes of {codes.shape[1]} columns cannot move between axes of {old.width} and {new.width}")
    turn = old.basis @ new.basis.T
    shift = (old.mean - new.mean) @ new.basis.T
    for start in range(0, len(codes), chunk):
        part = codes[start:start + chunk]
        part[:] = new.encode_coordinates(old.coordinates(part) @ turn + shift)


class TextProjection:
    """Text embeddings (R, D) projected into a codec's basis: cosine-like scores of every code
    against every row by one matrix product over the codes, ``score = codes @ weights + offset``.

    One row (a query, ``scores``) is one compiled pass over the codes: each code's int8 columns
    times the row's weights, summed in float32, without the GIL (5 ms for 1M codes here, against
    15 ms for widening the codes to float32 a chunk at a time and multiplying). Many rows (a
    vocabulary, ``best``) take one of two products: float32 (codes widened a chunk at a time, the
    offset folded in as one more column) or int8 (``torch._int_mm``, weights as two int8 digits).
    Which is faster depends on the CPU: on an AVX2 EPYC without VNNI the int8 product of 1M codes
    took 290 ms against 14 ms in float32, while another machine ran the int8 one in about 36 ms a
    query. So it is measured once per code width (``_int8_is_faster``), not assumed; ``method``
    forces one (tests)."""

    def __init__(self, codec: FeatureCodec, texts: torch.Tensor, method: str | None = None):
        t = torch.nn.functional.normalize(torch.as_tensor(texts).float().reshape(-1, codec.dim), dim=1)
        self.rows = t.shape[0]
        w = (codec.column_basis() @ t.T) * codec.column_steps()[:, None]  # (width, R)
        offset = codec.mean @ t.T  # (R,)
        # the first row for ``scores``: every column's weight (a fine digit's: its axis' / 254)
        self._first = (w[:, 0].numpy().astype(np.float32), np.float32(offset[0])) if self.rows else None
        if method not in (None, "float", "int8"):
            raise ValueError(f"unknown product {method!r}")
        if codec.exact and method == "int8":
            raise ValueError("float16 rows have no int8 product")
        self.dtype = np.dtype(codec.dtype)
        self.int8 = not codec.exact and (_int8_is_faster(codec.code_dim) if method is None else method == "int8")
        if method == "int8" and not _int_mm_works(codec.code_dim):
            raise RuntimeError("this torch build has no int8 matrix product on the CPU")
        # float: each fine digit folded into its axis' coarse one as it is widened (exact, and 7 of
        # 56 fewer columns to multiply), the offset as the last row against a constant 1 column
        self._axes, self._fine = codec.axes, codec.fine
        self._weights = torch.cat([w[: codec.axes], offset[None]]).contiguous()  # (axes + 1, R)
        if self.int8:
            # two int8 digits per weight (w ~ scale * (hi * 128 + lo)): as exact as float32 scores
            # here, where one digit flipped a few percent of the labels of close vocabularies
            self.scale = float(w.abs().max()) / (CODE_LIMIT * 128) or 1.0
            padded = -(-max(self.rows, 1) // 8) * 8  # the int8 product wants a multiple of 8 columns
            steps = torch.round(w / self.scale)
            hi = torch.round(steps / 128)
            self.hi = torch.zeros(codec.code_dim, padded, dtype=torch.int8)
            self.lo = torch.zeros(codec.code_dim, padded, dtype=torch.int8)
            self.hi[:, : self.rows] = hi.to(torch.int8)
            self.lo[:, : self.rows] = (steps - 128 * hi).clamp(-CODE_LIMIT, CODE_LIMIT).to(torch.int8)
            self._offset_steps = torch.round(offset / self.scale).to(torch.int32)  # (R,)

    def _chunks(self, codes: np.ndarray, size: int):
        """(start, (n, R) scores) per chunk: float32, or int32 in units of ``scale`` (int8 product)."""
        c = torch.from_numpy(np.ascontiguousarray(codes))
        if self.int8:
            for i in range(0, len(c), size):
                part = c[i:i + size]
                if len(part) <= 16:  # the int8 product wants more than 16 rows
                    yield i, (part.int() @ (self.hi.int() * 128 + self.lo.int()))[:, : self.rows] + self._offset_steps
                    continue
                raw = torch.add(torch._int_mm(part, self.lo), torch._int_mm(part, self.hi), alpha=128)
                yield i, raw[:, : self.rows] + self._offset_steps
            return
        weights = self._weights
        k, h = self._axes, self._fine
        buf = torch.ones(min(size, len(c)), k + 1)
        out = torch.empty(min(size, len(c)), weights.shape[1])
        for i in range(0, len(c), size):
            part = c[i:i + size]
            n = len(part)
            buf[:n, :k].copy_(part[:, :k])  # int8 -> float32 in place, the ones column stays
            if h:
                buf[:n, :h].add_(part[:, k:k + h], alpha=1 / FINE)
            yield i, torch.matmul(buf[:n], weights, out=out[:n])

    @property
    def _unit(self) -> float:
        """What one unit of ``_chunks``' scores is worth."""
        return self.scale if self.int8 else 1.0

    def scores(self, codes: np.ndarray) -> np.ndarray:
        """(N,) score of every code against the first (only) row."""
        weights, offset = self._first
        codes = np.ascontiguousarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(weights) or codes.dtype != self.dtype:
            raise UserError(f"codes of shape {codes.shape} ({codes.dtype}) are not this map's "
                            f"{len(weights)} {self.dtype} columns")
        if not self.exact and _compiled_scan_is_faster(codes.shape[1]):
            return _row_scores(codes, weights, offset, np.empty(len(codes), np.float32))
        # float16 rows (numba has no float16 on the CPU), or int8 ones where the product wins: a chunk at a time
        out = np.empty(len(codes), np.float32)
        for i, s in self._chunks(codes, _CHUNK):
            out[i:i + len(s)] = s[:, 0].numpy() * np.float32(self._unit)
        return out

    @property
    def exact(self) -> bool:
        return self.dtype == np.float16

    def best(self, codes: np.ndarray, row_class: torch.Tensor | None = None, classes: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
        """(label, score) per code: the best row, or with ``row_class`` the best class (max over its
        rows)."""
        labels = np.empty(len(codes), np.int64)
        scores = np.empty(len(codes), np.float32)
        grouped = row_class is not None and classes != self.rows
        for i, s in self._chunks(codes, _CHUNK):
            if grouped:
                s = torch.full((len(s), classes), torch.iinfo(torch.int32).min if not s.is_floating_point()
                               else -torch.inf, dtype=s.dtype).scatter_reduce(
                    1, row_class.expand(len(s), -1), s, reduce="amax")
            s = s.numpy()  # numpy's arg-max along rows is vectorised: 5-8x torch's here
            arg = s.argmax(1)
            labels[i:i + len(s)] = arg
            scores[i:i + len(s)] = s[np.arange(len(s)), arg]
        return labels, scores * np.float32(self._unit)


@numba.njit(cache=True, nogil=True, fastmath=True)  # fastmath: the 56-term sums vectorise
def _row_scores(codes, weights, offset, out):
    for i in range(codes.shape[0]):
        total = np.float32(0.0)
        for j in range(codes.shape[1]):
            total += np.float32(codes[i, j]) * weights[j]
        out[i] = total + offset
    return out


_INT_MM: dict[int, bool] = {}
_INT8_FASTER: dict[int, bool] = {}
_SCAN_FASTER: dict[int, bool] = {}


def _int_mm_works(k: int) -> bool:
    """Whether this torch build multiplies int8 matrices on the CPU (private API: checked, not assumed)."""
    if k not in _INT_MM:
        try:
            a = torch.ones(32, k, dtype=torch.int8)
            _INT_MM[k] = bool((torch._int_mm(a, torch.ones(k, 8, dtype=torch.int8)) == k).all())
        except (RuntimeError, AttributeError):
            _INT_MM[k] = False
    return _INT_MM[k]


def _int8_is_faster(k: int, rows: int = 16_384, reps: int = 3) -> bool:
    """Whether the two int8 products beat one float32 product of ``k``-column codes on this CPU:
    timed once (a few ms) on a chunk like the ones a query multiplies, best of ``reps``."""
    if k not in _INT8_FASTER:
        if not _int_mm_works(k):
            _INT8_FASTER[k] = False
            return False
        codes = torch.randint(-CODE_LIMIT, CODE_LIMIT + 1, (rows, k), dtype=torch.int8)
        w8 = torch.randint(-CODE_LIMIT, CODE_LIMIT + 1, (k, 8), dtype=torch.int8)
        wf, buf, out = torch.randn(k + 1, 8), torch.ones(rows, k + 1), torch.empty(rows, 8)

        def int8() -> None:
            torch.add(torch._int_mm(codes, w8), torch._int_mm(codes, w8), alpha=128)

        def float32() -> None:
            buf[:, :-1].copy_(codes)
            torch.matmul(buf, wf, out=out)

        _INT8_FASTER[k] = _best_time(int8, reps) < _best_time(float32, reps)
    return _INT8_FASTER[k]


def _compiled_scan_is_faster(k: int, rows: int = 1 << 20, reps: int = 2) -> bool:
    """Whether one compiled pass (``_row_scores``) scores ``k``-column int8 codes against one text
    faster than widening them to float32 a chunk at a time and multiplying. It depends on the CPU
    and on the width (1.12M rows here: 12.7 against 12.9 ms at 64 columns, 23-28 against 10-15 ms at
    52-60; 5 against 15 ms at 56 on the host of 2026-12-03) and only shows on more rows than the
    caches hold (262k rows of 52: 1.8 against 2.0 ms, 7 ns a row where 1.12M took 20). So it is timed
    once per width on 1M rows (about 0.1 s and 60 MB for a moment), like ``_int8_is_faster``."""
    if k not in _SCAN_FASTER:
        codes = np.ones((rows, k), np.int8)  # every page written: zeros would all read one page
        weights, out = np.ones(k, np.float32), np.empty(rows, np.float32)
        c, wf = torch.from_numpy(codes), torch.ones(k + 1, 1)
        buf, res = torch.ones(_CHUNK, k + 1), torch.empty(_CHUNK, 1)

        def compiled() -> None:
            _row_scores(codes, weights, np.float32(0.0), out)

        def widened() -> None:
            for i in range(0, rows, _CHUNK):
                buf[:, :k].copy_(c[i:i + _CHUNK])
                torch.matmul(buf, wf, out=res)
                out[i:i + _CHUNK] = res[:, 0].numpy()

        _SCAN_FASTER[k] = _best_time(compiled, reps) < _best_time(widened, reps)
    return _SCAN_FASTER[k]


def _best_time(fn, reps: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
