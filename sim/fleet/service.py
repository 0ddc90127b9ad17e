"""Batch service-time models: affine ``s(b) = base + per_item*b`` and a token-aware LLM profile."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DISTS = ("deterministic", "exponential", "lognormal")
_BUF = 8192   # variates drawn per refill: one numpy call instead of one per batch


class _Noise:
    """Multiplicative noise with mean 1: 1, Exp(1), or lognormal with the given cv."""

    def __init__(self, dist: str, cv: float, rng: np.random.Generator) -> None:
        if dist not in DISTS:
            raise ValueError(f"dist = {dist!r} is not known; known: {', '.join(DISTS)}")
        self.dist, self.cv, self._rng = dist, cv, rng
        sigma2 = math.log1p(cv * cv)
        self._sigma, self._shift = math.sqrt(sigma2), -sigma2 / 2.0
        self._buf: list[float] = []
        self._pos = 0

    def _refill(self) -> None:
        if self.dist == "exponential":
            self._buf = self._rng.standard_exponential(_BUF).tolist()
        else:   # lognormal with E = 1: exp(sigma*Z - sigma^2/2)
            z = self._rng.standard_normal(_BUF)
            self._buf = np.exp(self._sigma * z + self._shift).tolist()
        self._pos = 0

    def draw(self) -> float:
        if self.dist == "deterministic":
            return 1.0
        if self._pos >= len(self._buf):
            self._refill()
        x = self._buf[self._pos]
        self._pos += 1
        return x


def resolve_dist(dist: str | None, cv: float) -> str:
    """Default: lognormal when cv > 0, else deterministic."""
    if dist is not None:
        return dist
    return "lognormal" if cv > 0 else "deterministic"


class AffineService:
    """Batch time ``(base_ms + per_item_ms * b) / 1000`` s times noise of mean 1.

    Example: base 30 ms, 5 ms per item: a batch of 8 takes 70 ms on average.
    """

    def __init__(self, base_ms: float, per_item_ms: float, rng: np.random.Generator,
                 cv: float = 0.0, dist: str | None = None) -> None:
        self.base_s, self.per_item_s = base_ms / 1000.0, per_item_ms / 1000.0
        self._noise = _Noise(resolve_dist(dist, cv), cv, rng)
        self.needs_ids = False

    def mean_s(self, batch_size: int) -> float:
        return self.base_s + self.per_item_s * batch_size

    def sample_s(self, batch_size: int, ids: list[int]) -> float:
        noise = self._noise
        if noise.dist == "deterministic":
            return self.base_s + self.per_item_s * batch_size
        pos = noise._pos
        if pos >= len(noise._buf):
            noise._refill()
            pos = 0
        noise._pos = pos + 1
        return (self.base_s + self.per_item_s * batch_size) * noise._buf[pos]


@dataclass(frozen=True)
class ProfileTable:
    """Mean prefill time and per-token decode time (ms) on a grid of prompt size x batch size."""

    model: str
    hardware: str
    prompt_sizes: np.ndarray      # ascending
    batch_sizes: np.ndarray       # ascending
    prompt_ms: np.ndarray         # [prompt, batch]
    token_ms: np.ndarray          # [prompt, batch]

    def _interp(self, grid: np.ndarray, prompt: float, batch: float) -> float:
        # Linear in batch size (times grow about linearly with it), extrapolated from the
        # last two points beyond the grid; linear in prompt size, clamped to the grid.
        p = np.clip(prompt, self.prompt_sizes[0], self.prompt_sizes[-1])
        cols = np.array([np.interp(p, self.prompt_sizes, grid[:, j])
                         for j in range(len(self.batch_sizes))])
        bs = self.batch_sizes
        if batch > bs[-1] and len(bs) > 1:
            slope = (cols[-1] - cols[-2]) / (bs[-1] - bs[-2])
            return float(cols[-1] + slope * (batch - bs[-1]))
        return float(np.interp(batch, bs, cols))

    def batch_ms(self, batch_size: int, prompt_tokens: float, output_tokens: float) -> float:
        """Prefill of the batch plus (output - 1) decode steps: e2e as the profile measures."""
        steps = max(output_tokens - 1.0, 0.0)
        return (self._interp(self.prompt_ms, prompt_tokens, batch_size)
                + self._interp(self.token_ms, prompt_tokens, batch_size) * steps)


_PROFILE_COLUMNS = ("model", "hardware", "prompt_size", "batch_size", "prompt_time",
                    "token_time")


def load_profile(path: Path, model: str | None = None, hardware: str | None = None
                 ) -> ProfileTable:
    """Read a splitwise-style CSV; default model/hardware: the first row's."""
    rows: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _PROFILE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: line 1: missing column(s) {missing}; need "
                                 f"{list(_PROFILE_COLUMNS)}")
            for line_no, row in enumerate(reader, start=2):
                key = (row["model"], row["hardware"])
                vals = []
                for col in ("prompt_size", "batch_size", "prompt_time", "token_time"):
                    try:
                        x = float(row[col])
                    except (TypeError, ValueError):
                        raise ValueError(f"{path}: line {line_no}: column {col} = "
                                         f"{row[col]!r} is not a number") from None
                    if not math.isfinite(x) or x < 0:
                        raise ValueError(f"{path}: line {line_no}: column {col} = {x}, must "
                                         "be a finite number >= 0")
                    vals.append(x)
                rows.setdefault(key, []).append(tuple(vals))  # type: ignore[arg-type]
    except OSError as exc:
        raise ValueError(f"profile {path}: cannot read: {exc.strerror}") from None
    if not rows:
        raise ValueError(f"{path}: no data rows")
    first = next(iter(rows))
    model = model or first[0]
    hardware = hardware or first[1]
    if (model, hardware) not in rows:
        known = sorted(f"{m}/{h}" for m, h in rows)
        raise ValueError(f"{path}: no rows for profile_model = {model!r}, profile_hardware = "
                         f"{hardware!r}; known: {', '.join(known)}")
    data = np.array(rows[(model, hardware)])
    ps, bs = np.unique(data[:, 0]), np.unique(data[:, 1])
    prompt_ms = np.full((len(ps), len(bs)), np.nan)
    token_ms = np.full((len(ps), len(bs)), np.nan)
    for i, p in enumerate(ps):
        for j, b in enumerate(bs):
            sel = (data[:, 0] == p) & (data[:, 1] == b)
            if sel.any():
                prompt_ms[i, j] = data[sel, 2].mean()
                token_ms[i, j] = data[sel, 3].mean()
    for grid in (prompt_ms, token_ms):
        _fill_separable(grid, path, ps)
    return ProfileTable(model, hardware, ps, bs, prompt_ms, token_ms)


def _fill_separable(grid: np.ndarray, path: Path, ps: np.ndarray) -> None:
    """Fill cells the profile did not measure, assuming time(p, b) = f(p) * g(b).

    splitwise's profile varies the batch size at one prompt size (512) and the prompt size
    at batch 1; the row with the most batch sizes gives g's shape. Example: prefill at
    (2048, b=8) = prefill(2048, 1) * prefill(512, 8) / prefill(512, 1).
    """
    ok = ~np.isnan(grid)
    ref = int(np.argmax(ok.sum(axis=1)))
    ref_row = grid[ref].copy()
    ref_ok = ok[ref]
    cols = np.arange(grid.shape[1])
    ref_row = np.interp(cols, cols[ref_ok], ref_row[ref_ok])
    for i in range(grid.shape[0]):
        if not ok[i].any():
            raise ValueError(f"{path}: prompt_size {ps[i]:g} has no usable rows")
        measured = cols[ok[i]]
        for j in cols[~ok[i]]:
            j0 = measured[np.argmin(np.abs(measured - j))]
            grid[i, j] = grid[i, j0] * ref_row[j] / ref_row[j0]


class ProfileService:
    """Token-aware batch time from a measured profile: a batch is padded to its longest prompt
    and runs until its longest output (static batching), times noise of mean 1."""

    def __init__(self, table: ProfileTable, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                 rng: np.random.Generator, cv: float = 0.0, dist: str | None = None) -> None:
        self.table = table
        self._prompt = prompt_tokens
        self._output = output_tokens
        self._noise = _Noise(resolve_dist(dist, cv), cv, rng)
        self.needs_ids = True
        self._cache: dict[tuple[int, int, int], float] = {}

    def mean_s(self, batch_size: int, prompt_tokens: float = 512.0,
               output_tokens: float = 128.0) -> float:
        return self.table.batch_ms(batch_size, prompt_tokens, output_tokens) / 1000.0

    def sample_s(self, batch_size: int, ids: list[int]) -> float:
        if len(ids) == 1:
            p, o = int(self._prompt[ids[0]]), int(self._output[ids[0]])
        else:
            idx = np.array(ids)
            p, o = int(self._prompt[idx].max()), int(self._output[idx].max())
        key = (batch_size, p, o)
        base = self._cache.get(key)
        if base is None:
            base = self.table.batch_ms(batch_size, p, o) / 1000.0
            if len(self._cache) < 1_000_000:
                self._cache[key] = base
        return base * self._noise.draw()
