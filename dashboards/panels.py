"""Panel builders with trimtab defaults: Prometheus targets, datasource variable, units, thresholds."""
from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common, dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")

Target = tuple[str, str]   # (PromQL, legend format)


def target(expr: str, legend: str, ref_id: str, fmt: str | None = None) -> prometheus.Dataquery:
    query = (prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id)
             .datasource(DATASOURCE))
    if fmt == "heatmap":
        query = query.format(pm.PromQueryFormat.HEATMAP)
    return query


def thresholds(*steps: tuple[float, str]) -> db.ThresholdsConfig:
    """Green below the first step; each (value, colour) starts a band."""
    return (db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=None, color="green"),
                    *(dm.Threshold(value=v, color=c) for v, c in steps)]))


def _refs(targets: list[Target]) -> list[prometheus.Dataquery]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)]


def timeseries_panel(title: str, unit: str, targets: list[Target], description: str = "",
                     limits: tuple[tuple[float, str], ...] = (), span: int = 12,
                     min_val: float | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).targets(_refs(targets)).span(span).height(8)
             .legend(cb.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM)))
    if limits:
        panel = panel.thresholds(thresholds(*limits)).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
    if min_val is not None:
        panel = panel.min(min_val)
    return panel


def stat_panel(title: str, unit: str, targets: list[Target], description: str = "",
               limits: tuple[tuple[float, str], ...] = (), span: int = 6,
               reverse: bool = False) -> stat.Panel:
    """A single-value panel; ``reverse`` makes low values red (budget remaining, targets up)."""
    panel = (stat.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).targets(_refs(targets)).span(span).height(5))
    if limits and reverse:
        panel = panel.thresholds(
            db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
                [dm.Threshold(value=None, color="red"),
                 *(dm.Threshold(value=v, color=c) for v, c in limits)]))
    elif limits:
        panel = panel.thresholds(thresholds(*limits))
    return panel


def heatmap_panel(title: str, unit: str, expr: str, description: str = "",
                  span: int = 12) -> heatmap.Panel:
    return (heatmap.Panel().title(title).description(description).unit(unit)
            .datasource(DATASOURCE).with_target(target(expr, "{{le}}", "A", fmt="heatmap"))
            .calculate(False).span(span).height(8))


class SchemaVariable(cogbuilder.Builder[dm.VariableModel]):
    """A template variable as Grafana's schema has it: without ``auto``, ``auto_min`` and
    ``auto_count``, which the SDK (0.0.21) sets on every variable although Grafana's
    ``VariableModel`` has no such fields (they are the old interval variable's)."""

    def __init__(self, inner: cogbuilder.Builder[dm.VariableModel]) -> None:
        self._inner = inner

    def build(self) -> dm.VariableModel:
        model = self._inner.build()
        model.auto = model.auto_min = model.auto_count = None
        return model


def row(title: str) -> db.Row:
    return db.Row(title)
