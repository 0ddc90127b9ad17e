"""Step-time profiles: fit StepModel to measurements, bundle the fits, load them by name.

A profile is a JSON file holding one ``StepModel`` (its five coefficients in ms and the noise
``cv``), where it came from and how well it fits, and optionally the memory figures a
scenario needs to derive ``num_blocks``. Two sources are fitted:

- the splitwise-sim performance model (``traces/splitwise_sim_perf_model.csv``): per row, one
  prefill step of ``batch_size`` prompts (``prompt_time``) and the mean decode step while
  ``token_size`` tokens are generated (``token_time``);
- a real engine's own step records (``fit_steps``), e.g. vLLM's, for the validation.

The fit is non-negative least squares on relative error (each row divided by its measured
time), so a 50 ms decode step weighs as much as a 3 s prefill.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from trimtab.sim.data import data_path
from trimtab.sim.llm.types import StepModel

COEFS = ("c0_ms", "c_prefill_ms", "c_decode_ms", "c_kv_ms", "c_attn_ms")
SPLITWISE_FILE = "traces/splitwise_sim_perf_model.csv"
HARDWARE_NAMES = {"a100-80gb": "a100", "h100-80gb": "h100", "h100-80gb-pcap": "h100pcap"}
# The A (attention) term is kept only when it lowers the MAPE by at least this many
# percentage points, or this fraction of the MAPE without it, whichever is larger.
ATTN_MIN_GAIN_PP = 0.5
ATTN_MIN_GAIN_FRACTION = 0.05
SIGNIFICANT_DIGITS = 6          # coefficients are stored rounded; errors are of the rounded fit

# Memory figures of the bundled models and GPUs (fp16 weights and KV; from the models'
# published configs): Llama-2-70B has 68,976,648,192 parameters, 80 layers, 8 KV heads of
# head_dim 128; BLOOM-176B has 176,247,271,424 parameters, 70 layers, 112 heads of 128 (no
# grouped KV). Both GPUs have 80 GiB.
_MODEL_MEMORY = {
    "llama2-70b": {"weights_bytes": 2 * 68_976_648_192, "kv_bytes_per_token": 2 * 80 * 8 * 128 * 2},
    "bloom-176b": {"weights_bytes": 2 * 176_247_271_424,
                   "kv_bytes_per_token": 2 * 70 * 112 * 128 * 2},
}
_GPU_BYTES = {"a100-80gb": 80 * 2**30, "h100-80gb": 80 * 2**30, "h100-80gb-pcap": 80 * 2**30}
_TOP_KEYS = frozenset(("name", *COEFS, "cv", "source", "fit", "memory", "description"))
_MEMORY_KEYS = ("gpu_bytes", "weights_bytes", "kv_bytes_per_token")


class ProfileError(ValueError):
    """A profile file or name that cannot be used; the message names the file, field and rule."""


@dataclass
class FitResult:
    """A fitted StepModel and how well it reproduces the rows it was fitted to.

    ``rel_errors`` are per fitted row, ``model / measured - 1`` (not saved); ``mape`` and
    ``max_rel_error`` are their mean and largest absolute values (fractions, not percent);
    ``mape_prefill`` / ``mape_decode`` over the rows with / without prefill tokens.
    """

    step: StepModel
    rows: int
    mape: float
    max_rel_error: float
    attn_used: bool
    mape_without_attn: float
    mape_with_attn: float
    cv_source: str
    residual_cv: float
    rel_errors: np.ndarray = field(repr=False)
    mape_prefill: float = math.nan
    mape_decode: float = math.nan
    source: dict = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    memory: dict | None = None

    @property
    def name(self) -> str:
        return self.step.name


@dataclass(frozen=True)
class Profile:
    """A loaded profile: the step model, its memory figures (or None) and the file read."""

    step: StepModel
    memory: dict | None
    path: Path


# --------------------------------------------------------------------------- loading
def bundled_profiles() -> list[str]:
    """Names of the bundled profiles (``llama2-70b-a100-tp2`` ...), sorted."""
    root = data_path("profiles")
    return sorted(p.stem for p in root.glob("*.json"))


def profile_name(model: str, hardware: str, tensor_parallel: int) -> str:
    """The bundled name of a splitwise combination: ``llama2-70b``, ``a100-80gb``, 2 ->
    ``llama2-70b-a100-tp2``."""
    return f"{model}-{HARDWARE_NAMES.get(hardware, hardware)}-tp{int(tensor_parallel)}"


def _resolve(name_or_path: str, base_dir: Path | None) -> Path:
    text = str(name_or_path)
    if "/" in text or "\\" in text or text.endswith(".json"):
        try:
            path = Path(text).expanduser()
        except RuntimeError:            # ~user with no such user, or no home directory
            raise ProfileError(f"profile file {text}: its ~ names no home directory") from None
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise ProfileError(f"profile file {path}: not found")
        return path
    path = data_path("profiles", f"{text}.json")
    if not path.is_file():
        raise ProfileError(f"profile {text!r}: not a bundled profile (bundled: "
                           f"{', '.join(bundled_profiles())}) and not a path to a .json file")
    return path


def _number(path: Path, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ProfileError(f"profile file {path}: field {key!r} = {value!r}, "
                           "must be a finite number >= 0")
    return float(value)


def load_profile(name_or_path: str, base_dir: Path | None = None) -> Profile:
    """A bundled profile by name, or a profile JSON file (relative paths against ``base_dir``,
    e.g. the scenario's folder). Required: ``c0_ms, c_prefill_ms, c_decode_ms, c_kv_ms``;
    optional: ``c_attn_ms`` and ``cv`` (0), ``name`` (the file's stem), ``memory``."""
    path = _resolve(name_or_path, base_dir)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ProfileError(f"profile file {path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile file {path}: not valid JSON ({exc})") from None
    except (UnicodeDecodeError, RecursionError):
        raise ProfileError(f"profile file {path}: not JSON text (binary, or nested too "
                           "deeply)") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"profile file {path}: must hold a JSON object, not "
                           f"{type(doc).__name__}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ProfileError(f"profile file {path}: unknown field {unknown[0]!r} (known: "
                           f"{', '.join(sorted(_TOP_KEYS))})")
    values: dict[str, float] = {}
    for key in (*COEFS, "cv"):
        if key not in doc:
            if key in ("c_attn_ms", "cv"):
                values[key] = 0.0
                continue
            raise ProfileError(f"profile file {path}: field {key!r} is missing (required: "
                               "c0_ms, c_prefill_ms, c_decode_ms, c_kv_ms)")
        values[key] = _number(path, key, doc[key])
    name = doc.get("name", path.stem)
    if not isinstance(name, str):
        raise ProfileError(f"profile file {path}: field 'name' = {name!r}, must be a string")
    memory = doc.get("memory")
    if memory is not None:
        if not isinstance(memory, dict):
            raise ProfileError(f"profile file {path}: field 'memory' must be an object")
        for key, value in memory.items():
            if key not in _MEMORY_KEYS:
                raise ProfileError(f"profile file {path}: unknown field 'memory.{key}' "
                                   f"(known: {', '.join(_MEMORY_KEYS)})")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileError(f"profile file {path}: field 'memory.{key}' = {value!r}, "
                                   "must be an integer >= 1 (bytes)")
    return Profile(StepModel(**values, name=name), memory, path)


def load_step_model(name_or_path: str, base_dir: Path | None = None) -> StepModel:
    """The StepModel of a bundled profile (``llama2-70b-a100-tp2``) or of a profile file."""
    return load_profile(name_or_path, base_dir).step


# --------------------------------------------------------------------------- memory
def num_blocks_for(gpu_bytes: int, weights_bytes: int, kv_bytes_per_token: int,
                   block_size: int = 16, gpu_memory_utilization: float = 0.9,
                   tensor_parallel: int = 1) -> int:
    """KV blocks one replica holds, as vLLM sizes its cache (activation memory not counted).

    ``gpu_bytes`` is one GPU's memory; ``weights_bytes`` and ``kv_bytes_per_token`` are the
    whole model's (split evenly over the ``tensor_parallel`` GPUs, so they cancel out):
    ``floor((tp * gpu_bytes * utilization - weights) / (kv_bytes_per_token * block_size))``.

    Worked example: Llama-2-70B in fp16 keeps 2 (K and V) x 80 layers x 8 KV heads x 128
    (head_dim) x 2 bytes = 327,680 KV bytes per token across all GPUs; its 68,976,648,192
    parameters weigh 137,953,296,384 bytes. On two A100-80GB (85,899,345,920 bytes each) at
    utilization 0.9: 2 x 85,899,345,920 x 0.9 = 154,618,822,656 bytes, minus the weights =
    16,665,526,272 bytes of KV, over 327,680 x 16 = 5,242,880 bytes a block = 3,178 blocks
    (vLLM also subtracts its profiled activation peak, so it reports somewhat fewer).
    """
    for name, v in (("gpu_bytes", gpu_bytes), ("weights_bytes", weights_bytes),
                    ("kv_bytes_per_token", kv_bytes_per_token), ("block_size", block_size),
                    ("tensor_parallel", tensor_parallel)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"num_blocks_for: {name} = {v!r}, must be an integer >= 1")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"num_blocks_for: gpu_memory_utilization = {gpu_memory_utilization!r}"
                         ", must be in (0, 1]")
    kv_bytes = tensor_parallel * gpu_bytes * gpu_memory_utilization - weights_bytes
    block_bytes = kv_bytes_per_token * block_size
    # Compared first: a block of over 1.8e308 bytes (a 400-digit int) overflows a float's //.
    blocks = int(kv_bytes // block_bytes) if block_bytes <= kv_bytes else 0
    if blocks < 1:
        raise ValueError(f"num_blocks_for: the weights ({weights_bytes:,} bytes) leave no KV "
                         f"space in {tensor_parallel} x {gpu_bytes:,} bytes at utilization "
                         f"{gpu_memory_utilization}")
    return blocks


# --------------------------------------------------------------------------- fitting
def _round_sig(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    return 0.0 if x == 0 else float(f"{x:.{digits - 1}e}")


def _nnls_relative(x: np.ndarray, y: np.ndarray, refine: int) -> np.ndarray:
    """Coefficients >= 0 minimising the sum of squared relative errors ``(x @ c - y) / y``.

    ``refine`` > 0 re-weights by the fitted mean instead of the measurement that many times:
    with noisy measurements (a real engine's steps, cv of tens of percent) weights of
    ``1 / y`` pull the fit down by about cv squared, weights of ``1 / fit`` do not.
    """
    w = 1.0 / y
    coef, _ = nnls(x * w[:, None], y * w)
    for _ in range(refine):
        fit = x @ coef
        if np.any(fit <= 0):
            break
        w = 1.0 / fit
        coef, _ = nnls(x * w[:, None], y * w)
    return coef


def _fit(x: np.ndarray, y_ms: np.ndarray, attn: bool | None, refine: int
         ) -> tuple[StepModel, bool, float, float, np.ndarray]:
    """Fit with and without the A column; keep A when the data ask for it (or as told)."""
    def one(cols: int) -> tuple[np.ndarray, np.ndarray]:
        coef = np.zeros(5)
        coef[:cols] = _nnls_relative(x[:, :cols], y_ms, refine)
        coef = np.array([_round_sig(c) for c in coef])
        return coef, x @ coef / y_ms - 1.0

    coef4, rel4 = one(4)
    coef5, rel5 = one(5)
    mape4, mape5 = float(np.mean(np.abs(rel4))), float(np.mean(np.abs(rel5)))
    if attn is None:
        gain_needed = max(ATTN_MIN_GAIN_PP / 100.0, ATTN_MIN_GAIN_FRACTION * mape4)
        attn = mape4 - mape5 >= gain_needed
    coef, rel = (coef5, rel5) if attn else (coef4, rel4)
    return StepModel(*map(float, coef)), bool(attn), mape4, mape5, rel


def _by_kind(x: np.ndarray, rel: np.ndarray) -> dict[str, float]:
    prefill = x[:, 1] > 0
    return {"mape_prefill": float(np.mean(np.abs(rel[prefill]))) if prefill.any() else math.nan,
            "mape_decode": float(np.mean(np.abs(rel[~prefill]))) if (~prefill).any()
            else math.nan}


def _with(step: StepModel, cv: float, name: str) -> StepModel:
    return StepModel(step.c0_ms, step.c_prefill_ms, step.c_decode_ms, step.c_kv_ms,
                     step.c_attn_ms, cv=_round_sig(cv, 3), name=name)


def read_splitwise(csv_path: Path | str | None = None) -> list[dict]:
    """The splitwise rows as dicts of ints and floats (the bundled file by default)."""
    path = Path(csv_path) if csv_path is not None else data_path(*SPLITWISE_FILE.split("/"))
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = ("model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time",
            "token_time", "tensor_parallel")
    if not rows or any(k not in rows[0] for k in need):
        raise ProfileError(f"splitwise file {path}: needs the columns {', '.join(need)}")
    out = []
    for r in rows:
        out.append({"model": r["model"], "hardware": r["hardware"],
                    **{k: int(r[k]) for k in ("prompt_size", "batch_size", "token_size",
                                              "tensor_parallel")},
                    **{k: float(r[k]) for k in ("prompt_time", "token_time")}})
    return out


def splitwise_combos(csv_path: Path | str | None = None) -> list[tuple[str, str, int]]:
    """Every (model, hardware, tensor_parallel) in the file, sorted."""
    return sorted({(r["model"], r["hardware"], r["tensor_parallel"])
                   for r in read_splitwise(csv_path)})


def _anomalous(rows: list[dict]) -> set[tuple[int, int]]:
    """(prompt_size, batch_size) whose mean prefill time is below that of a smaller batch of
    the same prompt size: a failed measurement (64 prompts of 512 tokens cannot prefill in
    an eighth of the time 32 take; splitwise's TP-2 batch-64 rows do)."""
    sums: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        sums.setdefault((r["prompt_size"], r["batch_size"]), []).append(r["prompt_time"])
    means = {k: float(np.mean(v)) for k, v in sums.items()}
    return {(p, b) for (p, b), m in means.items()
            if any(p2 == p and b2 < b and m2 > m for (p2, b2), m2 in means.items())}


def splitwise_features(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix (columns 1, P, D, K, A) and measured ms, two fitted rows per CSV row.

    Prefill row: ``b`` prompts of ``p`` tokens in one step: P = b*p, D = 0, K = b*p,
    A = b*p*p. Decode row: ``token_time`` is the mean decode step over the generation (the
    file's e2e_time = prompt_time + (token_size - 1) * token_time), whose context grows from
    p + 1 to p + token_size - 1: D = b, K = b * (p + token_size / 2).
    """
    x, y = [], []
    for r in rows:
        b, p, t = r["batch_size"], r["prompt_size"], r["token_size"]
        x.append((1.0, b * p, 0.0, b * p, b * p * p))
        y.append(r["prompt_time"])
        x.append((1.0, 0.0, b, b * (p + t / 2.0), 0.0))
        y.append(r["token_time"])
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _repeat_cv(rows: list[dict]) -> float:
    """Pooled coefficient of variation of ``prompt_time`` over repeated configurations.

    A prefill row is one step measured again and again (five repeats per configuration in
    the bundled file), so its spread is the step-to-step noise; ``token_time`` is a mean
    over many steps and would understate it.
    """
    groups: dict[tuple[int, int, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r["prompt_size"], r["batch_size"], r["token_size"]),
                          []).append(r["prompt_time"])
    cv2 = [np.var(v, ddof=1) / np.mean(v) ** 2 for v in groups.values() if len(v) > 1]
    return float(math.sqrt(np.mean(cv2))) if cv2 else math.nan


def fit_splitwise(csv_path: Path | str | None, model: str, hardware: str,
                  tensor_parallel: int, attn: bool | None = None) -> FitResult:
    """Fit one (model, hardware, TP) of the splitwise profile (``csv_path`` None: bundled).

    Failed measurements (``_anomalous``) are left out and listed in ``excluded``. ``cv`` is
    the repeats' spread of prefill time (``_repeat_cv``); without repeats the residual spread.
    """
    every = read_splitwise(csv_path)
    rows = [r for r in every if (r["model"], r["hardware"], r["tensor_parallel"])
            == (model, hardware, int(tensor_parallel))]
    if not rows:
        combos = ", ".join(f"{m}/{h}/tp{t}" for m, h, t in splitwise_combos(csv_path))
        raise ProfileError(f"splitwise file {csv_path or SPLITWISE_FILE}: no rows for "
                           f"{model}/{hardware}/tp{tensor_parallel} (there are: {combos})")
    bad = _anomalous(rows)
    kept = [r for r in rows if (r["prompt_size"], r["batch_size"]) not in bad]
    excluded = [f"prompt_size {p}, batch_size {b}: prefill faster than a smaller batch "
                f"({sum(1 for r in rows if (r['prompt_size'], r['batch_size']) == (p, b))} "
                "rows)" for p, b in sorted(bad)]
    x, y = splitwise_features(kept)
    step, used, mape4, mape5, rel = _fit(x, y, attn, refine=0)
    cv, cv_source = _repeat_cv(kept), "repeats: pooled cv of prompt_time over repeated rows"
    residual_cv = float(np.std(rel, ddof=1))
    if not math.isfinite(cv):
        cv, cv_source = residual_cv, "residuals: std of the fit's relative errors (no repeats)"
    name = profile_name(model, hardware, tensor_parallel)
    if csv_path is None:
        file = SPLITWISE_FILE
    else:
        p = Path(csv_path).resolve()
        root = data_path().resolve()
        file = str(p.relative_to(root)) if p.is_relative_to(root) else str(csv_path)
    memory = None
    if model in _MODEL_MEMORY and hardware in _GPU_BYTES:
        memory = {"gpu_bytes": _GPU_BYTES[hardware], **_MODEL_MEMORY[model]}
    return FitResult(
        step=_with(step, cv, name), rows=len(y), mape=float(np.mean(np.abs(rel))),
        max_rel_error=float(np.max(np.abs(rel))), attn_used=used, mape_without_attn=mape4,
        mape_with_attn=mape5, cv_source=cv_source, residual_cv=residual_cv, rel_errors=rel,
        **_by_kind(x, rel), source={"file": file, "model": model, "hardware": hardware,
                "tensor_parallel": int(tensor_parallel)},
        excluded=excluded, memory=memory)


STEP_FIELDS = ("prefill_tokens", "decode_seqs", "kv_tokens", "attn_pairs", "duration_s")


def fit_steps(records: dict[str, np.ndarray], name: str = "steps", attn: bool | None = None,
              source: dict | None = None) -> FitResult:
    """Fit from a real engine's step records (arrays ``STEP_FIELDS``, one entry per step).

    The noise cv is the spread of measured over fitted time (``std(y / fit)``, the fit's
    degrees of freedom taken out): the engine's lognormal noise has mean 1 and that cv.
    """
    missing = [k for k in STEP_FIELDS if k not in records]
    if missing:
        raise ProfileError(f"step records: missing {', '.join(missing)} (need "
                           f"{', '.join(STEP_FIELDS)})")
    cols = [np.asarray(records[k], dtype=np.float64) for k in STEP_FIELDS]
    n = len(cols[-1])
    if any(len(c) != n for c in cols):
        raise ProfileError("step records: arrays of different lengths "
                           f"({', '.join(f'{k} {len(c)}' for k, c in zip(STEP_FIELDS, cols))})")
    if n < 6:
        raise ProfileError(f"step records: {n} steps, need at least 6 to fit 5 coefficients")
    if not np.all(np.isfinite(cols[-1])) or cols[-1].min() <= 0:
        raise ProfileError("step records: duration_s must be finite and > 0")
    y = cols[-1] * 1000.0
    x = np.column_stack([np.ones(n), *cols[:4]])
    step, used, mape4, mape5, rel = _fit(x, y, attn, refine=2)
    ratio = 1.0 / (1.0 + rel)                   # measured / fitted
    dof = max(n - (5 if used else 4), 1)
    cv = float(math.sqrt(np.sum((ratio - np.mean(ratio)) ** 2) / dof))
    return FitResult(
        step=_with(step, cv, name), rows=n, mape=float(np.mean(np.abs(rel))),
        max_rel_error=float(np.max(np.abs(rel))), attn_used=used, mape_without_attn=mape4,
        mape_with_attn=mape5, cv_source="residuals: std of measured / fitted step time",
        residual_cv=cv, rel_errors=rel, **_by_kind(x, rel), source=dict(source or {}))


def read_steps(path: Path | str) -> dict[str, np.ndarray]:
    """Step records from JSON: an object of arrays (``STEP_FIELDS``), or a list of objects."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"steps file {path}: cannot read ({exc})") from None
    if isinstance(doc, dict) and "steps" in doc and not set(STEP_FIELDS) <= set(doc):
        doc = doc["steps"]
    if isinstance(doc, list):
        try:
            doc = {k: [s[k] for s in doc] for k in STEP_FIELDS}
        except (KeyError, TypeError) as exc:
            raise ProfileError(f"steps file {path}: every step needs "
                               f"{', '.join(STEP_FIELDS)} (missing {exc})") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"steps file {path}: must hold an object of arrays or a list")
    missing = [k for k in STEP_FIELDS if k not in doc]
    if missing:
        raise ProfileError(f"steps file {path}: field {missing[0]!r} is missing (need "
                           f"{', '.join(STEP_FIELDS)})")
    return {k: np.asarray(doc[k], dtype=np.float64) for k in STEP_FIELDS}


# --------------------------------------------------------------------------- saving
def _round_or_none(x: float) -> float | None:
    return round(x, 6) if math.isfinite(x) else None


def profile_dict(result: FitResult) -> dict:
    """The JSON document of a fit (what ``save_profile`` writes)."""
    s = result.step
    doc: dict = {"name": s.name, **{k: getattr(s, k) for k in COEFS}, "cv": s.cv,
                 "source": dict(result.source),
                 "fit": {"rows": result.rows, "mape": round(result.mape, 6),
                         "max_rel_error": round(result.max_rel_error, 6),
                         "mape_prefill": _round_or_none(result.mape_prefill),
                         "mape_decode": _round_or_none(result.mape_decode),
                         "attn_term": result.attn_used,
                         "mape_without_attn": round(result.mape_without_attn, 6),
                         "mape_with_attn": round(result.mape_with_attn, 6),
                         "residual_cv": round(result.residual_cv, 6),
                         "cv_from": result.cv_source,
                         "excluded": list(result.excluded)}}
    if result.memory:
        doc["memory"] = dict(result.memory)
    return doc


def save_profile(result: FitResult, path: Path | str) -> Path:
    """Write the fit as a profile JSON file (a folder: ``<folder>/<name>.json``)."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / f"{result.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile_dict(result), indent=2) + "\n")
    return path
