"""Generated files: no drift, every name known, every alert annotated and in the runbook, tests complete."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from trimtab.alerts import build as alerts_build
from trimtab.alerts.alerting import all_alerts
from trimtab.alerts.config import DEFAULT_CONFIG, ConfigError, load_config
from trimtab.alerts.promtool_tests import LONG_TEST_FILE, RULE_FILE, TEST_FILE
from trimtab.alerts.promql import duration_s
from trimtab.collectors import names as n
from trimtab.cli import app
from trimtab.dashboards import build as dash_build
from trimtab.dashboards.boards import ALL_BOARDS

ALERTS_DIR = alerts_build.ALERTS_DIR
# Series names in PromQL: recording rules (with colons) and trimtab's own families.
_NAME = re.compile(r"(?<![\w:$])([a-zA-Z_][\w]*:[\w:]+|trimtab_\w+)")


def _rules() -> dict:
    return yaml.safe_load((ALERTS_DIR / RULE_FILE).read_text())


def _rule_exprs() -> list[tuple[str, str]]:
    return [(r.get("record") or r["alert"], r["expr"])
            for g in _rules()["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(f"{name}: {title}", expr) for name in ALL_BOARDS
            for title, expr in dash_build.panel_queries(dash_build.board_dict(name))]


# --- drift ------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [alerts_build, dash_build], ids=["alerts", "dashboards"])
def test_committed_files_match_the_generators(module) -> None:
    assert module.drifted() == [], "run `trimtab alerts build` and `trimtab dashboards build`"


@pytest.mark.parametrize("area", ["alerts", "dashboards"])
def test_build_check_fails_on_drift_and_build_repairs_it(area: str, tmp_path: Path) -> None:
    runner = CliRunner()
    built = runner.invoke(app, [area, "build", "--out-dir", str(tmp_path)])
    assert built.exit_code == 0, built.output
    assert runner.invoke(app, [area, "build", "--check", "--out-dir", str(tmp_path)]).exit_code == 0
    victim = sorted(tmp_path.iterdir())[0]
    victim.write_text(victim.read_text() + "\n# hand edit\n")
    checked = runner.invoke(app, [area, "build", "--check", "--out-dir", str(tmp_path)])
    assert checked.exit_code == 1
    assert victim.name in checked.output


@pytest.mark.parametrize("area", ["alerts", "dashboards"])
@pytest.mark.parametrize("spoil, why", [
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage\x80"), "not UTF-8 text"),
    (lambda p: (p.unlink(), p.mkdir()), "not a file"),
], ids=["binary", "directory"])
def test_build_check_names_a_spoiled_file_without_a_traceback(area, spoil, why, tmp_path) -> None:
    """Issue 18, defect 8: a binary file or a directory where a generated file belongs."""
    runner = CliRunner()
    assert runner.invoke(app, [area, "build", "--out-dir", str(tmp_path)]).exit_code == 0
    victim = sorted(p for p in tmp_path.iterdir() if p.is_file())[0]
    spoil(victim)
    checked = runner.invoke(app, [area, "build", "--check", "--out-dir", str(tmp_path)])
    assert checked.exit_code == 1 and checked.exception is None or \
        isinstance(checked.exception, SystemExit), checked.output
    assert f"{victim.name} ({why})" in " ".join(checked.output.split())
    if why == "not a file":           # and writing over a directory is a message too
        built = runner.invoke(app, [area, "build", "--out-dir", str(tmp_path)])
        assert built.exit_code == 1 and "cannot write" in built.output
        assert "Traceback" not in built.output


# --- names ------------------------------------------------------------------------------------
def _defined_names() -> set[str]:
    records = {r["record"] for g in _rules()["groups"] for r in g["rules"] if "record" in r}
    return set(n.exposed_series_names()) | records


@pytest.mark.parametrize("source", ["rules", "dashboards"])
def test_every_metric_named_is_exported_or_recorded(source: str) -> None:
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    defined = _defined_names()
    unknown = {(where, name) for where, expr in exprs for name in _NAME.findall(expr)
               if name not in defined}
    assert not unknown, f"names neither in collectors/names.py nor recorded: {sorted(unknown)}"
    assert sum(len(_NAME.findall(e)) for _, e in exprs) > 10   # the regex does find names


def test_name_check_catches_a_typo() -> None:
    assert "trimtab_requets_total" not in _defined_names()
    assert _NAME.findall('sum(rate(trimtab_requets_total{job="x"}[5m]))') == [
        "trimtab_requets_total"]


def test_recording_rules_follow_level_metric_operations() -> None:
    for g in _rules()["groups"]:
        for r in g["rules"]:
            if "record" in r:
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]


# --- alerts: annotations, runbook, severities -------------------------------------------------
def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    runbook = (ALERTS_DIR / alerts_build.RUNBOOK_FILE).read_text()
    alerts = [r for g in _rules()["groups"] for r in g["rules"] if "alert" in r]
    assert len({a["alert"] for a in alerts}) >= 13
    for a in alerts:
        assert a["labels"]["severity"] in ("critical", "warning", "info"), a["alert"]
        for key in ("summary", "description", "runbook_url"):
            assert a["annotations"].get(key), f"{a['alert']} lacks {key}"
        anchor = a["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert f"## {a['alert']}\n" in runbook and anchor == a["alert"].lower()
        section = runbook.split(f"## {a['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("What it means", "What to check", "What to do"):
            assert part in section, f"runbook section {a['alert']} lacks {part!r}"


def test_burn_rate_alerts_cover_the_four_window_pairs() -> None:
    burns = [a for a in all_alerts(DEFAULT_CONFIG) if a.alert == "TrimtabErrorBudgetBurn"]
    pairs = {(a.labels["long_window"], a.labels["short_window"], a.severity) for a in burns}
    assert pairs == {("1h", "5m", "critical"), ("6h", "30m", "critical"),
                     ("1d", "2h", "warning"), ("3d", "6h", "warning")}
    assert "> 0.144" in burns[0].expr and "> 0.06" in burns[1].expr


# --- promtool test coverage (parsing the rule and test files) ------------------------------
def _tests() -> list[dict]:
    out = []
    for name in (TEST_FILE, LONG_TEST_FILE):
        data = yaml.safe_load((ALERTS_DIR / name).read_text())
        assert data["rule_files"] == [RULE_FILE]
        out.extend(data["tests"])
    return out


def test_every_recording_rule_has_a_promql_expr_test() -> None:
    records = {r["record"] for g in _rules()["groups"] for r in g["rules"] if "record" in r}
    tested = {e["expr"] for t in _tests() for e in t.get("promql_expr_test", [])
              if e["exp_samples"]}
    assert records - tested == set()


def test_every_alert_rule_is_tested_on_both_sides_of_its_for() -> None:
    tests = _tests()
    for g in _rules()["groups"]:
        for rule in g["rules"]:
            if "alert" not in rule:
                continue
            for_s = duration_s(rule["for"])
            labels = rule["labels"]

            def firing(check: dict) -> bool:
                return any(all(e["exp_labels"].get(k) == v for k, v in labels.items())
                           for e in check["exp_alerts"])

            checks = [(duration_s(c["eval_time"]), firing(c)) for t in tests
                      for c in t.get("alert_rule_test", []) if c["alertname"] == rule["alert"]]
            fired = [t for t, f in checks if f]
            assert fired, f"{rule['alert']} {labels}: never expected to fire"
            first = min(fired)
            silent_before = [t for t, f in checks if not f and t < first]
            assert silent_before, f"{rule['alert']} {labels}: no check before it fires"
            # the silent check sits within one evaluation of the for: boundary
            assert first - max(silent_before) <= 2 * 60 + 1
            assert first >= for_s, f"{rule['alert']}: fires before its for: {rule['for']}"


# --- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("data, key", [
    ({"slo_objective": 1.5}, "slo_objective"),
    ({"slo_latency_s": 0}, "slo_latency_s"),
    ({"sidecar_selector": '{job="x"}'}, "sidecar_selector"),
    ({"no_such_key": 1}, "no_such_key"),
    # promtool refused the rules these made (issue 18, defect 10): now refused at load.
    ({"sidecar_selector": 'job="trimtab'}, "sidecar_selector"),
    ({"controller_selector": 'job="a" ns="b"'}, "controller_selector"),
    ({"sidecar_selector": "job=trimtab"}, "sidecar_selector"),
    ({"pager_webhook_url": "pager"}, "pager_webhook_url"),
    ({"ticket_webhook_url": "ftp://x/tickets"}, "ticket_webhook_url"),
    ({"runbook_base_url": "http://"}, "runbook_base_url"),
], ids=["objective>1", "latency=0", "braces", "unknown-key", "unbalanced-quote",
        "no-comma", "unquoted", "webhook-not-url", "webhook-ftp", "runbook-no-host"])
def test_bad_config_names_key_value_and_rule(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert key in str(err.value) and repr(next(iter(data.values()))) in str(err.value)


@pytest.mark.parametrize("selector", ['job=~".*trimtab.*"', 'job="a", namespace!="b"',
                                      'job="a\\"b",x=~"y|z"'])
def test_valid_matchers_are_kept_as_written(selector: str) -> None:
    assert load_config({"sidecar_selector": selector}).sidecar_selector == selector


def test_config_drives_rules_and_dashboards() -> None:
    strict = load_config({"slo_latency_s": 0.25, "slo_objective": 0.999})
    rules = "\n".join(a.expr for a in all_alerts(strict))
    assert "> 0.0144" in rules          # 14.4 x 0.001
    board = dash_build.board_dict("model-detail", strict)
    steps = [s["value"] for p in board["panels"] if p.get("title") == "Latency quantiles vs SLO"
             for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert 0.25 in steps


# --- dashboards: templating, units, datasource, SLO thresholds -------------------------------
@pytest.mark.parametrize("name", sorted(ALL_BOARDS))
def test_dashboard_panels_have_units_datasource_and_unique_ids(name: str) -> None:
    board = dash_build.board_dict(name)
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables[:2] == ["datasource", "namespace"]
    if name != "gpu":
        assert variables == ["datasource", "namespace", "model"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for p in panels:
        assert p["fieldConfig"]["defaults"].get("unit"), f"{name}/{p['title']} has no unit"
        assert p["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        if "SLO" in p["title"] and p["fieldConfig"]["defaults"]["unit"] == "s":
            steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert any(s["value"] == DEFAULT_CONFIG.slo_latency_s for s in steps), p["title"]
