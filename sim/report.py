"""The replay report: results.json, a per-tick CSV per policy, and an HTML page with plots.

An LLM scenario's report adds TTFT, TPOT and ITL p99 and preemptions to the table (its
results carry ``ttft_p99_s``) and plots TTFT and TPOT p99 against their SLO bounds, KV-cache
usage and running/waiting sequences over time; a request-level report is unchanged.
"""
from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trimtab.sim.llm.fleet import LLM_TICK_COLUMNS
from trimtab.sim.replay import TICK_COLUMNS, RunResult

TABLE_FIELDS = ("slo_attainment", "meets_slo", "latency_p50_s", "latency_p99_s",
                "replica_hours", "cost", "cost_vs_oracle", "cold_starts", "scale_events",
                "shed", "timed_out", "oom")
# The page's column headings (the results.json field is each heading's tooltip).
HEADINGS = {"slo_attainment": "within SLO", "meets_slo": "meets SLO", "latency_p50_s": "p50 (s)",
            "latency_p99_s": "p99 (s)", "replica_hours": "replica-hours", "cost": "cost",
            "cost_vs_oracle": "cost / oracle", "cold_starts": "cold starts",
            "scale_events": "scale events", "shed": "shed", "timed_out": "timed out",
            "oom": "OOM"}
# An LLM scenario's table: these after latency_p99_s, and no OOM column (its engine has none).
LLM_TABLE_FIELDS = ("ttft_p99_s", "tpot_p99_s", "itl_p99_s", "preemptions")
LLM_HEADINGS = {"latency_p50_s": "e2e p50 (s)", "latency_p99_s": "e2e p99 (s)",
                "ttft_p99_s": "TTFT p99 (s)", "tpot_p99_s": "TPOT p99 (s)",
                "itl_p99_s": "ITL p99 (s)", "preemptions": "preempted"}
ORACLE_NOTE = ("knows every future arrival and plans the cheapest replica schedule that meets the "
               "SLO (trimtab.sim.oracle): the lower bound on cost")
FOLD_SETTINGS = 24         # a policy with more default settings than this shows them folded
PAGE_WIDTH_PX = 1100       # the page's content width; plots are drawn at it
PLOT_DPI = 100
CSS = f"""
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;
  max-width:{PAGE_WIDTH_PX}px;margin:24px auto;padding:0 16px}}
h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:28px 0 8px;
  border-bottom:1px solid #d8dde3;padding-bottom:3px}}
.lede{{color:#48525c;margin:0 0 12px}}
dl.facts{{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}}
dl.facts dt{{font-weight:600}} dl.facts dd{{margin:0}}
table{{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}}
th,td{{padding:4px 6px;border-bottom:1px solid #e3e7eb;text-align:right;vertical-align:top}}
th{{font-weight:600;font-size:12px;color:#48525c;border-bottom:2px solid #c9d0d7}}
th:first-child,td:first-child{{text-align:left}} table.results td:not(.policy){{white-space:nowrap}}
td.policy{{max-width:18em}} .swatch{{display:inline-block;width:10px;height:10px;
  border-radius:2px;margin-right:6px}}
.tag{{font-size:11px;color:#48525c;background:#eef1f4;border-radius:3px;padding:0 4px;
  margin-left:4px}}
.miss{{color:#b3261e;font-weight:600}} .ok{{color:#1b7f3b}} .best{{font-weight:700}}
table.settings td,table.settings th{{text-align:left}} table.settings code{{font-size:12px}}
figure{{margin:8px 0 0}} figure img{{width:100%;height:auto;display:block}}
figcaption{{color:#48525c;font-size:13px}}
"""


def is_llm(results: Sequence[dict[str, Any]]) -> bool:
    """Whether these results are an LLM scenario's (they carry the TTFT figures)."""
    return any("ttft_p99_s" in r for r in results)


def table_fields(results: Sequence[dict[str, Any]], oracle: bool) -> list[str]:
    """The comparison table's columns: TABLE_FIELDS (cost_vs_oracle only with an oracle),
    for an LLM scenario with LLM_TABLE_FIELDS after the end-to-end p99 and no OOM."""
    fields = [f for f in TABLE_FIELDS if f != "cost_vs_oracle" or oracle]
    if not is_llm(results):
        return fields
    at = fields.index("latency_p99_s") + 1
    return [f for f in fields[:at] + list(LLM_TABLE_FIELDS) + fields[at:] if f != "oom"]


def slo_text(latency_s: float | None, target: float, ttft_s: float | None = None,
             tpot_s: float | None = None) -> str:
    """``latency ≤ 0.5 s for 99.00 % of requests``-style text of every bound given."""
    bounds = [f"{name} ≤ {v:g} s" for name, v in (("TTFT", ttft_s), ("TPOT", tpot_s),
                                                       ("latency", latency_s)) if v is not None]
    return f"{' and '.join(bounds) or 'no bound'} for {float(target):.2%} of requests"


def run_label(summary: dict[str, Any]) -> str:
    """``static:replicas=8``-style label of a result (unique per spec)."""
    params = summary.get("params") or {}
    label = summary["policy"]
    if params:
        label += ":" + ",".join(f"{k}={v}" for k, v in params.items())
    return label


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def results_json(scenario_name: str, requests: int, results: Sequence[dict[str, Any]],
                 oracle: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's JSON shape: ``{"scenario", "requests", "results": [...]}`` (+ oracle)."""
    doc: dict[str, Any] = {"scenario": scenario_name, "requests": requests,
                           "results": [json_safe(r) for r in results]}
    if oracle is not None:
        doc["oracle"] = json_safe(oracle)
    return doc


def json_safe(x: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def tick_columns(ticks: dict[str, np.ndarray]) -> tuple[str, ...]:
    """TICK_COLUMNS, then the LLM ones an LLM replay's ticks have."""
    return TICK_COLUMNS + tuple(c for c in LLM_TICK_COLUMNS if c in ticks)


def write_ticks_csv(path: Path, ticks: dict[str, np.ndarray]) -> None:
    columns = tick_columns(ticks)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in zip(*(ticks[c] for c in columns)):
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])


# --- plots ------------------------------------------------------------------------------------

def _colours(labels: Sequence[str]) -> dict[str, str]:
    """One colour per policy, the same in every plot and in the table's swatches."""
    import matplotlib

    cycle = matplotlib.colormaps["tab10"].colors
    return {label: matplotlib.colors.to_hex(cycle[i % len(cycle)])
            for i, label in enumerate(labels)}


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of small multiples: one panel per policy, at most three across."""
    cols = 1 if n == 1 else 2 if n <= 4 else 3
    return math.ceil(n / cols), cols


def _small_multiples(runs: Sequence[tuple[str, RunResult]], panel_h_in: float):
    import matplotlib.pyplot as plt

    rows, cols = _grid(len(runs))
    fig, axes = plt.subplots(rows, cols, sharex=True, sharey=True, squeeze=False,
                             figsize=(PAGE_WIDTH_PX / PLOT_DPI, panel_h_in * rows + 0.5))
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax in axes[-1] if rows else []:
        ax.set_xlabel("time (min)")
    return fig, list(axes.flat[:len(runs)]), cols


def _save(fig: Any, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=PLOT_DPI)
    plt.close(fig)
    return name


def _plots(out: Path, runs: Sequence[tuple[str, RunResult]], slo_latency_s: float | None,
           colours: dict[str, str], slo_ttft_s: float | None = None,
           slo_tpot_s: float | None = None) -> list[tuple[str, str]]:
    """(file, caption) of each plot: per policy, replicas against the load, p99 against the SLO
    and the router queue, as small multiples on shared axes so six policies stay readable;
    an LLM replay adds TTFT and TPOT p99 against their bounds, KV-cache usage and the
    running and waiting sequences."""
    import matplotlib

    matplotlib.use("Agg")

    plots = []
    fig, axes, cols = _small_multiples(runs, 2.2)
    peak_rps = max(float(np.nanmax(r.ticks["arrival_rate_rps"], initial=0.0)) for _, r in runs)
    top = max(float(np.nanmax(r.ticks[c], initial=1.0)) for _, r in runs
              for c in ("desired_replicas", "ready_replicas"))
    twins = []
    for i, (ax, (label, r)) in enumerate(zip(axes, runs)):
        t_min = r.ticks["time_s"] / 60
        load = ax.twinx()
        twins.append(load)
        load.fill_between(t_min, r.ticks["arrival_rate_rps"], color="0.88", lw=0, step="post")
        load.set_ylim(0, peak_rps * 1.05 or 1.0)
        outer = i % cols == cols - 1 or i == len(runs) - 1     # the right-hand column
        load.tick_params(right=outer, labelright=outer, labelsize=8)
        if outer:
            load.set_ylabel("arrivals (req/s)", color="0.45", fontsize=8)
        ax.set_zorder(load.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.step(t_min, r.ticks["desired_replicas"], where="post", color=colours[label], lw=1.6,
                label="desired")
        ax.step(t_min, r.ticks["ready_replicas"], where="post", color=colours[label], lw=0.9,
                ls=":", label="ready")
        ax.set_title(label, fontsize=10, loc="left", color=colours[label])
        if i % cols == 0:
            ax.set_ylabel("replicas")
    axes[0].set_ylim(0, top * 1.08)      # shared by every panel
    plots.append((_save(fig, out, "load_replicas.png"),
                  "Replicas over time, one panel per policy: desired (solid) and ready (dotted), "
                  "on the arrival rate (grey, right axis)."))
    against = (lambda v: f" against the SLO of {v:g} s (red)" if v is not None else "")
    panels: list[_Panel] = [
        _Panel("p99.png", (("latency_p99_s", "-", ""),), "p99 (s)",
               "p99 latency per controller window (log scale)" + against(slo_latency_s) + ".",
               slo_latency_s, log=True),
        _Panel("queue.png", (("queue_depth", "-", ""),), "queue depth",
               "Mean router queue depth per controller window.", zero_floor=True)]
    if all("ttft_p99_s" in r.ticks for _, r in runs):
        panels += [
            _Panel("ttft_p99.png", (("ttft_p99_s", "-", ""),), "TTFT p99 (s)",
                   "p99 time to first token per controller window (log scale)"
                   + against(slo_ttft_s) + ".", slo_ttft_s, log=True),
            _Panel("tpot_p99.png", (("tpot_p99_s", "-", ""),), "TPOT p99 (s)",
                   "p99 time per output token per controller window (log scale)"
                   + against(slo_tpot_s) + ".", slo_tpot_s, log=True),
            _Panel("kv_cache.png", (("kv_cache_usage", "-", ""),), "KV-cache usage",
                   "KV-cache blocks in use over the blocks of the live replicas, at each "
                   "controller tick (vLLM's kv_cache_usage_perc).", top=1.0),
            _Panel("running_waiting.png", (("running", "-", "running"),
                                           ("waiting", ":", "waiting")), "sequences",
                   "Sequences running (solid) and waiting (dotted) on the replicas at each "
                   "controller tick, summed over replicas (vLLM's num_requests_running and "
                   "num_requests_waiting; the router's queue is not in waiting).",
                   zero_floor=True)]
    for panel in panels:
        plots.append((_line_panels(out, runs, colours, panel), panel.caption))
    return plots


@dataclass(frozen=True)
class _Panel:
    """One small-multiples figure of tick columns: (column, line style, legend) each."""

    fname: str
    lines: tuple[tuple[str, str, str], ...]
    ylabel: str
    caption: str
    bound: float | None = None        # a red dashed line (an SLO bound)
    log: bool = False
    zero_floor: bool = False          # shared linear axis from 0; an idle series reads as 0
    top: float | None = None          # shared linear axis from 0 to this


def _line_panels(out: Path, runs: Sequence[tuple[str, RunResult]], colours: dict[str, str],
                 panel: _Panel) -> str:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes, cols = _small_multiples(runs, 1.8)
    for i, (ax, (label, r)) in enumerate(zip(axes, runs)):
        for col, style, name in panel.lines:
            ax.plot(r.ticks["time_s"] / 60, r.ticks[col], color=colours[label], lw=1, ls=style,
                    label=name or None)
        ax.set_title(label, fontsize=10, loc="left", color=colours[label])
        if i % cols == 0:
            ax.set_ylabel(panel.ylabel)
        if panel.bound is not None:
            ax.axhline(panel.bound, color="#b3261e", ls="--", lw=1)
        if panel.log and _has_positive(r.ticks, panel.lines, panel.bound):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    if panel.zero_floor:
        top = max(1.0, *(float(np.nanmax(r.ticks[c], initial=0.0)) for _, r in runs
                         for c, _, _ in panel.lines))
        axes[0].set_ylim(-0.03 * top, 1.05 * top)
    elif panel.top is not None:
        axes[0].set_ylim(-0.03 * panel.top, 1.05 * panel.top)
    if len(panel.lines) > 1:
        axes[0].legend(fontsize=8, loc="upper left")
    return _save(fig, out, panel.fname)


def _has_positive(ticks: dict[str, np.ndarray], lines: Sequence[tuple[str, str, str]],
                  bound: float | None) -> bool:
    """Whether a log axis has something to show (all-NaN columns and no bound: none)."""
    if bound is not None and bound > 0:
        return True
    return any(bool(np.any(np.asarray(ticks[c], dtype=float) > 0)) for c, _, _ in lines)


# --- the page ---------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(field: str, v: Any) -> str:
    """One table cell's HTML (escaped), with the class that colours a miss."""
    if v is None:
        return "<td>-</td>"
    if field == "meets_slo":
        return '<td class="ok">yes</td>' if v else '<td class="miss">no</td>'
    if field == "slo_attainment":
        # Truncated, not rounded: 99.996 % must not read as 100.00 %.
        return f"<td>{math.floor(float(v) * 10000) / 100:.2f} %</td>"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"<td>{v:,}</td>"
    return f"<td>{html.escape(_fmt(v))}</td>"


def _facts(items: Sequence[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items) + "</dl>"


def _setting(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return _fmt(v)


def _pairs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_setting(v)}" for k, v in d.items())


def scenario_facts(sc: Any, doc: dict[str, Any], runs: Sequence[tuple[str, RunResult]]
                   ) -> list[tuple[str, str]]:
    """The scenario as the page states it: trace, load, service, fleet, SLO, cost, controller."""
    t = sc.trace
    if t.path:
        source = f"{Path(t.path).name} ({t.format})"
    else:
        keys = ("rate_rps", "peak_rps", "trough_rps", "period_s", "steps", "base_rps", "at_s",
                "ramp_s", "hold_s", "duration_s")
        source = f"{t.format} generator: " + _pairs({k: getattr(t, k) for k in keys
                                                      if getattr(t, k) is not None})
    shaping = {k: getattr(t, k) for k in ("rate_scale", "time_scale", "jitter_s", "start_s",
                                          "end_s") if getattr(t, k) not in (None, 0.0, 1.0)}
    lengths = getattr(t, "lengths", None)
    if lengths is not None:
        source += (f"; token counts from {Path(lengths.path).name} ({lengths.format}"
                   + (f", at most {lengths.max_total_tokens:,} tokens"
                      if lengths.max_total_tokens else "") + ")")
    facts = [("trace", source + (f"; {_pairs(shaping)}" if shaping else "") + f"; seed {t.seed}")]
    if runs:
        ticks = runs[0][1].ticks
        span_min = float(ticks["time_s"][-1]) / 60 if len(ticks["time_s"]) else 0.0
        rate = ticks["arrival_rate_rps"]
        facts.append(("load", f"{doc['requests']:,} requests over {span_min:.0f} min; "
                              f"mean {float(np.nanmean(rate)):.3g} req/s, peak window "
                              f"{float(np.nanmax(rate)):.3g} req/s"))
    s = sc.service
    if s.model == "llm":
        sch = s.scheduler_config()
        facts.append(("service", f"llm: step-time profile {s.profile}; engine {s.engine}; "
                                 "scheduler " + _pairs({
                                     k: getattr(sch, k) for k in (
                                         "max_num_seqs", "max_num_batched_tokens",
                                         "chunked_prefill", "block_size", "num_blocks",
                                         "prefix_caching")})))
    else:
        if s.model == "affine":
            service = f"affine: {s.base_ms:g} ms + {s.per_item_ms:g} ms per item of a batch"
        else:
            service = f"profile: {s.profile_model} on {s.profile_hardware}"
        facts.append(("service", f"{service}; cv {s.cv:g}; batches up to {s.max_batch} "
                                 f"({s.batching}, timeout {s.batch_timeout_ms:g} ms)"))
    r = sc.replicas
    fleet = (f"{r.initial} at start, {r.min} to {r.max}; cold start {r.cold_start_s:g} s "
             f"({r.cold_start_dist}); router {r.router}")
    if r.concurrency_limit:
        fleet += f"; concurrency limit {r.concurrency_limit} per replica"
    if r.queue_timeout_s:
        fleet += f"; queue timeout {r.queue_timeout_s:g} s"
    facts.append(("replicas", fleet))
    slo = sc.slo
    ttft_s, tpot_s = getattr(slo, "ttft_s", None), getattr(slo, "tpot_s", None)
    told = ""
    if slo.latency_s is None and hasattr(sc, "policy_latency_s"):
        told = (f"; the policies are told an end-to-end bound of {sc.policy_latency_s():.4g} s "
                "(TTFT + TPOT x the median output tokens)")
    facts.append(("SLO", slo_text(slo.latency_s, slo.target, ttft_s, tpot_s)
                  + "; shed, timed-out and failed requests are misses" + told))
    facts.append(("cost", f"{sc.cost.replica_hour:g} per replica-hour"))
    c = sc.controller
    facts.append(("controller", f"every {c.interval_s:g} s"
                  + (f"; warm-up {c.warmup_s:g} s" if c.warmup_s is not None else "")))
    return facts


def policy_settings(label: str, sc: Any) -> dict[str, Any] | None:
    """Every setting a policy spec resolves to on this scenario (its defaults included), or
    None when ``label`` is not a live policy spec (the oracle, a live run's label)."""
    from trimtab.controllers.core import registry
    from trimtab.controllers.core.spec import SpecError, parse_spec

    try:
        spec = parse_spec(label)
        registry.load_builtin_policies()
        if spec.name not in registry.POLICIES:
            return None
        policy = registry.make_policy(spec, sc.bounds(), sc.controller.interval_s)
    except SpecError:
        return None
    config = getattr(policy, "config", None)
    if config is not None and hasattr(config, "model_dump"):
        return {k: v for k, v in config.model_dump(exclude={"bounds"}).items()}
    return dict(getattr(policy, "params", {}) or {})


def _settings_section(rows: Sequence[dict[str, Any]], sc: Any) -> str:
    """Each policy's settings: what its spec set in bold, then every other value it runs with."""
    out = []
    for res in rows:
        label = run_label(res)
        if res.get("oracle"):
            what = html.escape(ORACLE_NOTE) + (
                f"; planned with <code>{html.escape(_pairs(res.get('params') or {}))}</code>"
                " (simulation runs, load factor, fitted batch time a + c per item)"
                if res.get("params") else "")
        else:
            settings = policy_settings(label, sc) if sc is not None else None
            if settings is None:
                continue
            given = res.get("params") or {}
            parts = [f"<b>{html.escape(f'{k}={_setting(v)}')}</b>" for k, v in given.items()]
            rest = [html.escape(f"{k}={_setting(v)}") for k, v in settings.items()
                    if k not in given]
            what = "<code>" + ", ".join(parts) + "</code> " if parts else ""
            if len(rest) > FOLD_SETTINGS:     # trimtab's own: dozens of tuned constants
                what += (f"<details><summary>{len(rest)} more settings (defaults)</summary>"
                         f"<code>{', '.join(rest)}</code></details>")
            elif rest:
                what += "<code>" + ", ".join(rest) + "</code>"
        out.append(f"<tr><td class=\"policy\">{html.escape(_display_name(res))}</td>"
                   f"<td>{what}</td></tr>")
    if not out:
        return ""
    return ("<h2>Policies and their settings</h2><p class=\"lede\">Bold: set in the policy spec; "
            "the rest are the defaults it runs with on this scenario.</p>"
            f"<table class=\"settings\"><tr><th>policy</th><th>settings</th></tr>{''.join(out)}"
            "</table>")


TUNING_TAGS = {"carried_over": "carried over", "hindsight": "hindsight"}


def display_label(res: dict[str, Any], past_only: bool = False) -> str:
    """A result's row name, unique in its table: the oracle, the past-only bound, or the spec
    with how it was tuned when not at its defaults (``hpa:target=6 (hindsight)``)."""
    if res.get("oracle"):
        return "oracle"
    if past_only or res.get("past_only"):
        return f"past only ({run_label(res)})"
    tag = TUNING_TAGS.get(res.get("tuning", ""))
    return run_label(res) + (f" ({tag})" if tag else "")


_display_name = display_label


def _results_table(rows: Sequence[dict[str, Any]], colours: dict[str, str],
                   fields: Sequence[str]) -> str:
    headings = dict(HEADINGS, **LLM_HEADINGS) if is_llm(rows) else HEADINGS
    meeting = [r["cost"] for r in rows if r.get("meets_slo") and r.get("cost") is not None
               and not r.get("oracle") and not r.get("past_only")]
    cheapest = min(meeting) if meeting else None
    head = "<th>policy</th>" + "".join(
        f'<th title="{f}">{html.escape(headings.get(f, f))}</th>' for f in fields)
    body = []
    for res in rows:
        label = _display_name(res)
        swatch = colours.get(run_label(res))
        name = (f'<span class="swatch" style="background:{swatch}"></span>' if swatch else "")
        name += html.escape(label).replace(",", ",<wbr>")
        if res.get("oracle"):
            name += '<span class="tag">lower bound</span>'
        if res.get("past_only"):
            name += '<span class="tag">knows only the past</span>'
        if res.get("cost") is not None and res.get("cost") == cheapest:
            name += '<span class="tag">cheapest meeting the SLO</span>'
        cells = "".join(_cell(f, res.get(f)) for f in fields)
        body.append(f'<tr data-policy="{html.escape(label)}">'
                    f'<td class="policy">{name}</td>{cells}</tr>')
    return f"<table class=\"results\"><tr>{head}</tr>{''.join(body)}</table>"


def write_report(out: Path, doc: dict[str, Any], runs: Sequence[tuple[str, RunResult]],
                 slo_latency_s: float | None, slo_target: float, scenario: Any = None, *,
                 slo_ttft_s: float | None = None, slo_tpot_s: float | None = None
                 ) -> dict[str, Path]:
    """Write results.json, ticks_<policy>.csv and report.html (+ PNG plots) into ``out``.

    ``scenario`` (a trimtab.sim.scenario.Scenario), when given, is stated on the page with
    each policy's settings on it; its ``slo.ttft_s`` / ``slo.tpot_s`` are the bounds drawn
    unless ``slo_ttft_s`` / ``slo_tpot_s`` are given."""
    if scenario is not None:
        slo_ttft_s = slo_ttft_s if slo_ttft_s is not None else getattr(scenario.slo, "ttft_s",
                                                                         None)
        slo_tpot_s = slo_tpot_s if slo_tpot_s is not None else getattr(scenario.slo, "tpot_s",
                                                                         None)
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": out / "results.json", "html": out / "report.html"}
    files["results"].write_text(json.dumps(doc, indent=2) + "\n")
    for label, r in runs:
        p = out / f"ticks_{_slug(label)}.csv"
        write_ticks_csv(p, r.ticks)
        files[f"ticks:{label}"] = p
    colours = _colours([label for label, _ in runs])
    plots = _plots(out, runs, slo_latency_s, colours, slo_ttft_s, slo_tpot_s) if runs else []
    rows = list(doc["results"]) + ([dict(doc["oracle"], oracle=True)] if doc.get("oracle") else []) \
        + ([dict(doc["past_only"], past_only=True)] if doc.get("past_only") else [])
    fields = table_fields(rows, bool(doc.get("oracle")))
    name = html.escape(doc["scenario"])
    lede = (f"{doc['requests']:,} requests; SLO: "
            f"{html.escape(slo_text(slo_latency_s, slo_target, slo_ttft_s, slo_tpot_s))} "
            "(shed, timed-out and failed requests are misses).")
    scenario_html = (f"<h2>Scenario</h2>{_facts(scenario_facts(scenario, doc, runs))}"
                     if scenario is not None else "")
    figures = "".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for p, caption in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trimtab replay: {name}</title><style>{CSS}</style></head><body>
<h1>Replay of scenario {name}</h1>
<p class="lede">{lede}</p>
{scenario_html}
<h2>Results</h2>
{_results_table(rows, colours, fields)}
{_settings_section(rows, scenario)}
{'<h2>Over time</h2>' + figures if figures else ''}
</body></html>
"""
    files["html"].write_text(page)
    return files


def comparison_markdown(docs: Sequence[dict[str, Any]]) -> str:
    """The README's comparison table: per scenario, trimtab beside the cheapest baseline that
    meets the SLO at its defaults, carried over from the other scenarios and tuned in
    hindsight, then the past-only bound and the oracle. Replica-hours (scale events); a
    policy that misses the SLO shows its attainment instead."""
    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "none meets"
        head = f"{r['replica_hours']:.2f} ({r['scale_events']})"
        return head if r["meets_slo"] else f"{head}, misses: {r['slo_attainment']:.4f}"

    def cheapest(d: dict[str, Any], tuning: str) -> str:
        ok = [r for r in d["results"] if r.get("tuning") == tuning and r["meets_slo"]
              and r["policy"] != "trimtab"]
        if not ok:
            return "none meets"
        best = min(ok, key=lambda r: r["cost"])
        return f"{run_label(best)} {cell(best)}"

    lines = ["| scenario | trimtab | cheapest at defaults | cheapest carried over | "
             "cheapest in hindsight | past only | oracle |", "|---|---|---|---|---|---|---|"]
    for d in docs:
        mine = next((r for r in d["results"] if r["policy"] == "trimtab"), None)
        past = cell(d["past_only"]) if "past_only" in d else "-"
        oracle = f"{d['oracle']['replica_hours']:.2f}" if d.get("oracle") else "-"
        lines.append(f"| {d['scenario']} | {cell(mine)} | {cheapest(d, 'default')} | "
                     f"{cheapest(d, 'carried_over')} | {cheapest(d, 'hindsight')} | {past} | "
                     f"{oracle} |")
    return "\n".join(lines) + "\n"
