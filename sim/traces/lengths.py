"""Token counts for traces without them: (prompt, output) pairs drawn from a trace file's rows.

A Poisson (or any generated) stream then carries real lengths. The rows of the lengths file are
drawn without replacement in an order shuffled with the trace's seed; when the stream needs
more, the rows are drawn again in a new shuffle. A row whose prompt + output exceeds
``max_total_tokens`` is scaled down in proportion, each part kept >= 1 token, e.g. (6000, 2000)
capped at 4096 becomes (3072, 1024). Mooncake rows carry their prefix hash ids along, cut to
the blocks the (scaled) prompt still covers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from trimtab.sim.traces import files
from trimtab.sim.traces.config import LengthsConfig, TraceError

HASH_BLOCK_TOKENS = 512          # Mooncake: one hash id per 512 prompt tokens
# The shuffle's random stream: spawned from the trace seed apart from the arrivals' stream, so
# adding lengths to a scenario leaves its arrival times as they were.
_LENGTHS_STREAM = 0x6C656E


def resolve_path(path: str, base_dir: Path) -> Path:
    """``path`` as given (absolute), else relative to ``base_dir`` (the scenario's folder),
    else relative to the bundled data folder (``traces/azure_llm_conv.csv``)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    local = Path(base_dir) / p
    if local.exists():
        return local
    from trimtab.sim.data import data_path

    bundled = data_path(*p.parts)
    return bundled if bundled.exists() else local


def read_rows(cfg: LengthsConfig, base_dir: Path
              ) -> tuple[np.ndarray, np.ndarray, list[list[int]] | None, Path]:
    """The file's (prompt, output) rows in file order (Mooncake: by timestamp), with its hash
    ids; errors name the file, line, field and rule."""
    path = resolve_path(cfg.path, base_dir)
    if not path.is_file():
        raise TraceError(f"trace.lengths.path: {path}: no such file (relative paths are read "
                         f"against the scenario's folder {base_dir}, then the bundled data)")
    if cfg.format == "azure-llm":
        ev = files.read_azure(path)
    else:
        ev = files.read_mooncake(path, 0.0, np.random.default_rng(0))   # times unused
    if not len(ev.time_s):
        raise TraceError(f"trace.lengths.path: {path}: no rows after the header; lengths "
                         "need at least one")
    return ev.prompt_tokens, ev.output_tokens, ev.hash_ids, path  # type: ignore[return-value]


def cap_total(prompt: np.ndarray, output: np.ndarray, max_total_tokens: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each part at least 1 token; rows over ``max_total_tokens`` scaled down in proportion:
    ``floor(x * max / (prompt + output))``, at least 1, so prompt + output <= max."""
    p = np.maximum(np.asarray(prompt, np.int64), 1)
    o = np.maximum(np.asarray(output, np.int64), 1)
    if max_total_tokens is None:
        return p, o
    total = p + o
    over = total > max_total_tokens
    if over.any():
        f = max_total_tokens / total[over]
        p[over] = np.maximum(np.floor(p[over] * f), 1).astype(np.int64)
        o[over] = np.maximum(np.floor(o[over] * f), 1).astype(np.int64)
        # Floors keep the sum <= max; the >= 1 floor of one part is paid by the other.
        extra = p + o - max_total_tokens
        fix = extra > 0
        o[fix] -= extra[fix]
    return p, o


def draw_order(n: int, rows: int, seed: int) -> np.ndarray:
    """Row indices for ``n`` arrivals: whole shuffles of ``rows``, one after another."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _LENGTHS_STREAM]))
    rounds = math.ceil(n / rows)
    return np.concatenate([rng.permutation(rows) for _ in range(rounds)])[:n]


def with_lengths(n: int, cfg: LengthsConfig, seed: int, base_dir: Path
                 ) -> tuple[np.ndarray, np.ndarray, list[list[int]] | None, list[str]]:
    """(prompt, output, hash ids or None, warnings) for ``n`` arrivals drawn from ``cfg``."""
    prompt, output, hashes, path = read_rows(cfg, base_dir)
    warnings: list[str] = []
    zero = int(np.count_nonzero((prompt == 0) | (output == 0)))
    if zero:
        warnings.append(f"{path}: {zero} row(s) with 0 prompt or output tokens; counted as 1")
    p_all, o_all = cap_total(prompt, output, cfg.max_total_tokens)
    if cfg.max_total_tokens is not None:
        over = int(np.count_nonzero(prompt.astype(np.int64) + output > cfg.max_total_tokens))
        if over:
            warnings.append(f"{path}: {over} of {len(prompt)} row(s) over max_total_tokens = "
                            f"{cfg.max_total_tokens}; scaled down")
    idx = draw_order(n, len(p_all), seed)
    p, o = p_all[idx].astype(np.int32), o_all[idx].astype(np.int32)
    ids = None
    if hashes is not None:
        ids = [hashes[k][:math.ceil(int(p[j]) / HASH_BLOCK_TOKENS)]
               for j, k in enumerate(idx.tolist())]
    return p, o, ids, warnings
