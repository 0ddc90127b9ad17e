"""Adapters: scrape a model server's /metrics and re-export it under trimtab's names, fresh or not at all."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import aiohttp
import yaml
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from trimtab.collectors import names
from trimtab.common.errors import message
from trimtab.collectors.health import CollectorHealth
from trimtab.collectors.sse import ENGINE_TIMED

log = logging.getLogger(__name__)
OTHER_MODEL = "other"
# Families the admission proxy measures itself; with --proxy the adapter leaves them alone so
# each series has one source, and exports the model server's own queue under upstream names.
PROXY_FAMILIES = frozenset({names.REQUESTS, names.REQUEST_DURATION, names.QUEUE_DURATION,
                            names.TIME_TO_FIRST_BYTE, names.QUEUE_DEPTH, names.IN_FLIGHT})
SSE_FAMILIES = frozenset({names.LLM_TTFT, names.LLM_ITL})
PROXY_RENAMES = {names.QUEUE_DEPTH: names.UPSTREAM_QUEUE_DEPTH,
                 names.IN_FLIGHT: names.UPSTREAM_IN_FLIGHT}


class Rule(BaseModel):
    """One source family re-exported as one trimtab family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str                       # family name as the parser gives it (counters: no _total)
    target: str                       # a name from trimtab.collectors.names
    scale: float = 1.0                # values (and histogram bounds) times this: µs -> s = 1e-6
    labels: dict[str, str] = {}       # fixed target labels, e.g. {"outcome": "ok"}
    model_label: str = "model"        # source label holding the model name
    unless_present: str | None = None  # skip this rule when that source family exists
    match: dict[str, str] = {}        # only source samples with these label values
    # How samples landing on one target series combine (several engines of a data-parallel
    # vLLM, unlisted models summed into ``other``): counts add up, a ratio takes the max.
    combine: Literal["sum", "max"] = "sum"

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        mdef = names.BY_NAME.get(value)
        if mdef is None:
            raise ValueError("unknown trimtab metric; see collectors/names.py")
        if mdef.kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"{mdef.kind} metrics cannot be mapped")
        return value

    def check_labels(self) -> None:
        wanted = set(names.BY_NAME[self.target].labels)
        given = set(self.labels) | ({"model"} if "model" in wanted else set())
        if given != wanted:
            raise ValueError(f"labels must give exactly {sorted(wanted - {'model'})} for "
                             f"{self.target}, got {sorted(self.labels)}")


class Mapping(BaseModel):
    """A generic adapter mapping file: ``rules:`` a list of Rule."""

    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]


def load_mapping(path: str) -> list[Rule]:
    """Read a YAML mapping; errors name the file, the rule index, the field and the rule."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read mapping: {exc}") from None
    try:
        mapping = Mapping(**(raw if isinstance(raw, dict) else {"rules": raw}))
    except (ValidationError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            raise ValueError(message(exc, path, first_only=True)) from None
        raise ValueError(f"{path}: top level must be a mapping with 'rules'") from None
    for i, rule in enumerate(mapping.rules):
        try:
            rule.check_labels()
        except ValueError as exc:
            raise ValueError(f"{path}: rules.{i}.labels: {exc}") from None
    return mapping.rules


@dataclass
class _Hist:
    buckets: dict[float, float]
    total: float = 0.0
    count: float = 0.0


def _model(labels: dict[str, str], rule: Rule, models: frozenset[str], default: str) -> str:
    name = labels.get(rule.model_label)
    if name is None:
        return default
    return name if name in models else OTHER_MODEL


def convert(families: Iterable[Metric], rules: Iterable[Rule], models: tuple[str, ...],
            skip: frozenset[str] = frozenset(),
            rename: dict[str, str] | None = None) -> list[Metric]:
    """Source families -> trimtab families; unlisted models are summed into ``other``.

    A target in ``rename`` is exported under the new name (same kind and labels) instead of
    being skipped.
    """
    rename = rename or {}
    by_name = {f.name: f for f in families}
    model_set, default = frozenset(models), models[0]
    scalars: dict[str, dict[tuple[str, ...], float]] = {}
    hists: dict[str, dict[tuple[str, ...], _Hist]] = {}
    for rule in rules:
        fam = by_name.get(rule.source)
        if fam is None or (rule.target in skip and rule.target not in rename) or (
                rule.unless_present and rule.unless_present in by_name):
            continue
        mdef = names.BY_NAME[rule.target]
        order = mdef.labels

        def key(sample_labels: dict[str, str]) -> tuple[str, ...]:
            m = _model(sample_labels, rule, model_set, default)
            return tuple(m if lbl == "model" else rule.labels[lbl] for lbl in order)

        if mdef.kind == "histogram":
            if fam.type != "histogram":
                raise ValueError(f"{rule.source} is a {fam.type}, {rule.target} needs a histogram")
            out = hists.setdefault(rule.target, {})
            for s in fam.samples:
                h = out.setdefault(key(s.labels), _Hist({}))
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    bound = le if math.isinf(le) else le * rule.scale
                    h.buckets[bound] = h.buckets.get(bound, 0.0) + s.value
                elif s.name.endswith("_sum"):
                    h.total += s.value * rule.scale
                elif s.name.endswith("_count"):
                    h.count += s.value
            continue
        accepted = {rule.source, rule.source + "_total"}
        out_s = scalars.setdefault(rule.target, {})
        for s in fam.samples:
            if s.name not in accepted or any(s.labels.get(k) != want
                                             for k, want in rule.match.items()):
                continue
            if math.isnan(s.value):
                raise ValueError(f"{s.name}{s.labels} is NaN")
            k = key(s.labels)
            v = s.value * rule.scale
            if k not in out_s:
                out_s[k] = v
            else:
                out_s[k] = max(out_s[k], v) if rule.combine == "max" else out_s[k] + v
    result: list[Metric] = []
    for target, series in scalars.items():
        mdef = names.BY_NAME[rename.get(target, target)]
        cls = CounterMetricFamily if mdef.kind == "counter" else GaugeMetricFamily
        fam = cls(mdef.name, mdef.help, labels=list(mdef.labels))
        for k, v in sorted(series.items()):
            fam.add_metric(list(k), v)
        result.append(fam)
    for target, series in hists.items():
        mdef = names.BY_NAME[target]
        fam = HistogramMetricFamily(target, mdef.help, labels=list(mdef.labels))
        for k, h in sorted(series.items()):
            bounds = sorted(h.buckets)
            fam.add_metric(list(k), [(_le(b), h.buckets[b]) for b in bounds], h.total)
        result.append(fam)
    return result


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def parse(text: str) -> list[Metric]:
    """Parse exposition text completely (the parser is lazy: a late error must fail the scrape)."""
    return list(text_string_to_metric_families(text))


class ScrapeAdapter(Collector):
    """Scrapes ``metrics_url`` every ``interval_s`` in the event loop; collect() serves the cache.

    A failed or malformed scrape sets ``trimtab_collector_success{collector=NAME}`` to 0 and
    drops the cache at once: nothing old is exported as if it were fresh.
    """

    def __init__(self, name: str, metrics_url: str, rules: list[Rule], models: tuple[str, ...],
                 health: CollectorHealth, *, interval_s: float = 5.0,
                 skip: frozenset[str] = frozenset(), rename: dict[str, str] | None = None,
                 extra: Callable[[aiohttp.ClientSession], object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.metrics_url = metrics_url
        self.rules = rules
        self.models = models
        self.skip = skip
        self.rename = rename or {}
        self.interval_s = interval_s
        self._health = health
        self._extra = extra
        self._clock = clock
        self._wall = wall_clock
        self._families: list[Metric] = []
        self._ok_at: float | None = None
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        health.declare(name)

    # --- scraping ---------------------------------------------------------------------------
    def ingest(self, text: str, extra_families: list[Metric] = ()) -> None:
        """Convert one scraped page; raises ValueError if it is malformed."""
        families = convert(parse(text), self.rules, self.models, self.skip, self.rename)
        self._families = families + list(extra_families)
        self._ok_at = self._clock()

    def fail(self, error: str, duration_s: float) -> None:
        self._families = []
        self._ok_at = None
        self._health.record(self.name, ok=False, duration_s=duration_s, now_unix_s=self._wall(),
                            errors=(error,))

    async def scrape_once(self) -> bool:
        start = self._clock()
        assert self._session is not None
        try:
            async with self._session.get(self.metrics_url) as resp:
                if resp.status != 200:
                    self.fail(f"http_{resp.status}", self._clock() - start)
                    return False
                text = await resp.text(errors="replace")
            extra = await self._extra(self._session) if self._extra else []
            self.ingest(text, extra)
        except asyncio.TimeoutError:
            self.fail("timeout", self._clock() - start)
            return False
        except (aiohttp.ClientError, OSError):
            self.fail("unreachable", self._clock() - start)
            return False
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("adapter %s: malformed payload from %s: %s", self.name,
                        self.metrics_url, exc)
            self.fail("malformed", self._clock() - start)
            return False
        self._health.record(self.name, ok=True, duration_s=self._clock() - start,
                            now_unix_s=self._wall())
        return True

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=min(self.interval_s, 10.0))
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            while True:
                try:
                    await self.scrape_once()
                except Exception:          # never let the loop die
                    log.exception("adapter %s scrape failed unexpectedly", self.name)
                    self.fail("unexpected", 0.0)
                await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # --- exposition -------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        if self._ok_at is None or self._clock() - self._ok_at > 2 * self.interval_s + 10:
            return
        yield from self._families


def build_adapter(config, health: CollectorHealth, *, skip_proxy_families: bool) -> ScrapeAdapter:
    """The adapter for ``--adapter triton|vllm|sglang|prometheus`` from a SidecarConfig."""
    from trimtab.collectors.adapter_rules import (SGLANG_RULES, TRITON_RULES, VLLM_RULES,
                                                  triton_stats_fetcher)
    url = config.adapter_metrics_url or config.upstream + "/metrics"
    skip = PROXY_FAMILIES if skip_proxy_families else frozenset()
    if skip_proxy_families and config.adapter not in ENGINE_TIMED:
        skip |= SSE_FAMILIES          # the proxy times streamed responses itself
    rename = PROXY_RENAMES if skip_proxy_families else {}
    common = dict(interval_s=config.adapter_interval_s, skip=skip, rename=rename)
    if config.adapter == "triton":
        return ScrapeAdapter("triton", url, TRITON_RULES, config.models, health,
                             extra=triton_stats_fetcher(config.upstream, config.models), **common)
    if config.adapter == "vllm":
        return ScrapeAdapter("vllm", url, VLLM_RULES, config.models, health, **common)
    if config.adapter == "sglang":
        return ScrapeAdapter("sglang", url, SGLANG_RULES, config.models, health, **common)
    if config.adapter_mapping_file is None:
        raise ValueError("--adapter prometheus needs --adapter-mapping FILE (rules: source, "
                         "target, scale, labels, model_label)")
    return ScrapeAdapter("prometheus", url, load_mapping(config.adapter_mapping_file),
                         config.models, health, **common)
