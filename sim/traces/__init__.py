"""Trace input for the simulator: read or generate arrivals, then scale, window and jitter them.

    >>> cfg = TraceConfig(format="poisson", rate_rps=10, duration_s=60, seed=1)
    >>> trace = load_trace(cfg, Path("."))
    >>> trace.duration_s
    60.0
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from trimtab.sim.traces import family, files, rates
from trimtab.sim.traces.config import (FILE_FORMATS, FORMATS, GENERATOR_FORMATS, LengthsConfig,
                                       TraceConfig, TraceError)
from trimtab.sim.traces.lengths import HASH_BLOCK_TOKENS, with_lengths
from trimtab.sim.traces.rates import RateCurve

__all__ = ["FILE_FORMATS", "FORMATS", "GENERATOR_FORMATS", "LengthsConfig", "Trace",
           "TraceConfig", "TraceError", "load_trace", "trace_from_arrays"]

log = logging.getLogger("trimtab.sim.traces")


@dataclass(frozen=True)
class Trace:
    """Arrivals in seconds from the trace start (sorted, >= 0), with token counts if known.

    ``span_s`` is the length of the window the trace covers (a generator's ``duration_s``, a
    file's first-to-last timestamp, cut by the window); ``duration_s`` is the larger of it and
    the last arrival. ``hash_ids`` (Mooncake): per arrival, the prefix hashes of its prompt,
    one per ``hash_block_tokens`` tokens (None: no prefix information).
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    span_s: float | None = None
    hash_ids: list[list[int]] | None = None
    hash_block_tokens: int = HASH_BLOCK_TOKENS

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def duration_s(self) -> float:
        last_s = float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0
        return max(last_s, self.span_s or 0.0)


def trace_from_arrays(arrival_s: np.ndarray, prompt_tokens: np.ndarray | None = None,
                      output_tokens: np.ndarray | None = None, source: str = "arrays") -> Trace:
    """A trace from in-memory arrays (tests, the validator); sorts them if needed."""
    arrival_s = np.asarray(arrival_s, dtype=np.float64)
    bad = ~np.isfinite(arrival_s) | (arrival_s < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(f"{source}: arrival_s[{i}] = {arrival_s[i]}, must be a finite number "
                         ">= 0")
    order = np.argsort(arrival_s, kind="stable")
    pick = (lambda a: None if a is None else np.asarray(a, np.int32)[order])
    return Trace(arrival_s[order], pick(prompt_tokens), pick(output_tokens), source, [])


# What a replay can hold: the fleet keeps about this many bytes of per-request arrays for each
# arrival (times, outcome, replica, tokens), so 50 million arrivals are about 3 GiB.
BYTES_PER_ARRIVAL = 64
MAX_ARRIVALS = 50_000_000
MAX_RATE_PIECES = 10_000_000     # a generator's piecewise envelope (diurnal: 48 per period)


def _check_size(expected: float, source: str, what: str) -> None:
    """Refuse, before allocating, a trace too large to replay, saying how large it would be."""
    if not (math.isfinite(expected) and expected <= MAX_ARRIVALS):
        size = (f"about {expected:.3g} arrivals, {expected * BYTES_PER_ARRIVAL / 2**30:.3g} GiB"
                if math.isfinite(expected) else "an unbounded number of arrivals")
        raise TraceError(f"{source}: {what} would give {size} of per-request arrays; the "
                         f"limit is {MAX_ARRIVALS:,} arrivals: lower rate_scale, shorten the "
                         f"window (start_s/end_s, duration_s) or raise time_scale")


def load_trace(cfg: TraceConfig, base_dir: Path) -> Trace:
    """Read or generate the trace ``cfg`` describes; ``cfg.path`` is relative to ``base_dir``.

    A trace too large to replay (over MAX_ARRIVALS) is refused before it is sampled; with
    ``cfg.lengths``, each arrival gets a (prompt, output) pair drawn from that file's rows
    (``trimtab.sim.traces.lengths``)."""
    trace = _load_arrivals(cfg, base_dir)
    if cfg.lengths is None:
        return trace
    prompt, output, hash_ids, warnings = with_lengths(len(trace), cfg.lengths, cfg.seed,
                                                      Path(base_dir))
    for w in warnings:
        log.warning(w)
    return replace(trace, prompt_tokens=prompt, output_tokens=output, hash_ids=hash_ids,
                   warnings=trace.warnings + warnings)


def _load_arrivals(cfg: TraceConfig, base_dir: Path) -> Trace:
    rng = np.random.default_rng(cfg.seed)
    if cfg.is_generator:
        if cfg.format == "diurnal":
            pieces = 48 * float(cfg.duration_s) / float(cfg.period_s)  # type: ignore[arg-type]
            if not pieces <= MAX_RATE_PIECES:
                raise TraceError(f"diurnal generator: duration_s / period_s = "
                                 f"{pieces / 48:.3g} periods, over the limit of "
                                 f"{MAX_RATE_PIECES // 48:,}: shorten duration_s")
        if cfg.format == "family":
            pieces = float(cfg.duration_s) / family.PIECE_S  # type: ignore[arg-type]
            if not pieces <= MAX_RATE_PIECES:
                raise TraceError(f"family generator: duration_s = {cfg.duration_s:g} is "
                                 f"{pieces:.3g} pieces of {family.PIECE_S:g} s, over the limit "
                                 f"of {MAX_RATE_PIECES:,}: shorten duration_s")
        return _from_curve(cfg, _generator(cfg), rng, f"{cfg.format} generator", [])
    path = Path(cfg.path)  # type: ignore[arg-type]
    if not path.is_absolute():
        path = Path(base_dir) / path
    if cfg.format == "azure-llm":
        return _from_events(cfg, files.read_azure(path), rng, str(path))
    if cfg.format == "mooncake":
        return _from_events(cfg, files.read_mooncake(path, cfg.bucket_s, rng), rng, str(path))
    if cfg.format == "counts":
        curve, warnings = files.read_counts(path, cfg.interval_s)
    else:
        curve, warnings = files.read_prometheus(path, cfg.interval_s)
    return _from_curve(cfg, curve, rng, str(path), warnings)


def _generator(cfg: TraceConfig) -> RateCurve:
    duration_s = float(cfg.duration_s)  # type: ignore[arg-type]
    if cfg.format == "poisson":
        return rates.poisson(cfg.rate_rps, duration_s)  # type: ignore[arg-type]
    if cfg.format == "diurnal":
        return rates.diurnal(cfg.peak_rps, cfg.trough_rps, cfg.period_s,  # type: ignore[arg-type]
                             duration_s)
    if cfg.format == "step":
        return rates.step(cfg.steps, duration_s)  # type: ignore[arg-type]
    if cfg.format == "family":
        return family.curve(cfg.family, duration_s, cfg.seed)  # type: ignore[arg-type]
    return rates.flash_crowd(cfg.base_rps, cfg.peak_rps, cfg.at_s, cfg.ramp_s,  # type: ignore[arg-type]
                             cfg.hold_s, duration_s)


def _warn(warnings: list[str], message: str) -> None:
    warnings.append(message)
    log.warning(message)


def _window(cfg: TraceConfig, span_s: float, source: str, warnings: list[str]
            ) -> tuple[float, float]:
    """The ``[start_s, end_s)`` window cut to the data; says so when the data ends first."""
    lo_s = cfg.start_s or 0.0
    hi_s = span_s if cfg.end_s is None else min(cfg.end_s, span_s)
    if cfg.end_s is not None and cfg.end_s > span_s:
        _warn(warnings, f"{source}: end_s = {cfg.end_s:g} is past the end of the data "
                        f"({span_s:g} s after time_scale): the window is "
                        f"{max(hi_s - lo_s, 0.0):g} s, not {cfg.end_s - lo_s:g} s")
    return lo_s, max(hi_s, lo_s)


def _from_curve(cfg: TraceConfig, curve: RateCurve, rng: np.random.Generator, source: str,
                warnings: list[str]) -> Trace:
    """Rate sources take ``rate_scale`` as a rate multiplier: a Poisson process scaled by k is
    Poisson with rate k*lambda, whereas k copies of each arrival would clump them."""
    for w in warnings:
        log.warning(w)
    if len(curve.start_s):
        origin_s = float(curve.start_s.min())
        curve = curve.shifted(origin_s)
    if cfg.time_scale != 1.0:
        curve = curve.scaled_time(cfg.time_scale)
    lo_s, hi_s = _window(cfg, curve.span_s, source, warnings)
    curve = curve.clipped(lo_s, hi_s).shifted(lo_s)
    if cfg.rate_scale != 1.0:
        curve = curve.scaled_rate(cfg.rate_scale)
    _check_size(curve.expected_count(), source, "this rate curve")
    arrival_s = curve.sample(rng)
    if cfg.jitter_s > 0:
        arrival_s = _jitter(arrival_s, cfg.jitter_s, hi_s - lo_s, rng)
    if len(arrival_s) == 0:
        _warn(warnings, f"{source}: no arrivals in the window [{lo_s:g}, {hi_s:g}) s")
    return Trace(arrival_s, None, None, source, warnings, hi_s - lo_s)


def _from_events(cfg: TraceConfig, events: files.Events, rng: np.random.Generator,
                 source: str) -> Trace:
    warnings = list(events.warnings)
    for w in warnings:
        log.warning(w)
    time_s = events.time_s
    if len(time_s) == 0:
        raise TraceError(f"{source}: no rows after the header; a trace needs at least one")
    prompt, output = events.prompt_tokens, events.output_tokens
    row = np.arange(len(time_s))          # each arrival's row in the file (its hash ids)
    if len(time_s) > 1 and (np.diff(time_s) < 0).any():
        order = np.argsort(time_s, kind="stable")
        _warn(warnings, f"{source}: {int(np.sum(np.diff(time_s) < 0))} row(s) out of time order;"
                        " sorted by timestamp")
        time_s = time_s[order]
        prompt = None if prompt is None else prompt[order]
        output = None if output is None else output[order]
        row = row[order]
    origin_s = time_s[0] if events.origin_s is None else events.origin_s
    time_s = (time_s - origin_s) / cfg.time_scale
    lo_s, hi_s = _window(cfg, float(time_s[-1]), source, warnings)
    end_inclusive = cfg.end_s is None or cfg.end_s > time_s[-1]   # keep the last row
    hi_idx = (np.searchsorted(time_s, hi_s, side="right") if end_inclusive
              else np.searchsorted(time_s, hi_s, side="left"))
    sl = slice(np.searchsorted(time_s, lo_s, side="left"), hi_idx)
    time_s = time_s[sl] - lo_s
    prompt = None if prompt is None else prompt[sl]
    output = None if output is None else output[sl]
    row = row[sl]
    if cfg.rate_scale != 1.0:
        _check_size(len(time_s) * cfg.rate_scale, source,
                    f"{len(time_s)} rows at rate_scale {cfg.rate_scale:g}")
        copies = _copies(len(time_s), cfg.rate_scale, rng)
        time_s = np.repeat(time_s, copies)
        prompt = None if prompt is None else np.repeat(prompt, copies)
        output = None if output is None else np.repeat(output, copies)
        row = np.repeat(row, copies)
    if cfg.jitter_s > 0 and len(time_s):
        time_s = time_s + rng.uniform(-cfg.jitter_s, cfg.jitter_s, len(time_s))
        time_s = np.clip(time_s, 0.0, hi_s - lo_s)
        order = np.argsort(time_s, kind="stable")
        time_s = time_s[order]
        prompt = None if prompt is None else prompt[order]
        output = None if output is None else output[order]
        row = row[order]
    if len(time_s) == 0:
        _warn(warnings, f"{source}: no arrivals in the window [{lo_s:g}, {hi_s:g}) s")
    hashes = events.hash_ids
    return Trace(np.ascontiguousarray(time_s, np.float64), prompt, output, source, warnings,
                 hi_s - lo_s, None if hashes is None else [hashes[k] for k in row.tolist()])


def _copies(n: int, k: float, rng: np.random.Generator) -> np.ndarray:
    """floor(k) or ceil(k) copies per arrival, ceil with probability frac(k): mean exactly k."""
    whole = int(np.floor(k))
    return whole + (rng.random(n) < (k - whole)).astype(np.int64)


def _jitter(arrival_s: np.ndarray, jitter_s: float, span_s: float,
            rng: np.random.Generator) -> np.ndarray:
    out = np.clip(arrival_s + rng.uniform(-jitter_s, jitter_s, len(arrival_s)), 0.0, span_s)
    out.sort()
    return out
