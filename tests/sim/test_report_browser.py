"""The replay report in a real browser (headless Chromium): every policy, setting and plot shown,
every image loaded, nothing wider than the window."""
from __future__ import annotations

import html
import json
import re
import struct
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from trimtab.cli import app
from trimtab.sim.report import PAGE_WIDTH_PX, display_label, run_label
from tests.conftest import require_binary

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run")
# Ten minutes, a flash crowd from 40 to 160 req/s: short enough to replay six policies, one
# swept setting and the oracle in seconds, with a surge every policy must answer.
SCENARIO = {
    "name": "flash-browser",
    "trace": {"format": "flash-crowd", "base_rps": 40, "peak_rps": 160, "at_s": 180,
              "ramp_s": 60, "hold_s": 120, "duration_s": 600, "seed": 3},
    "service": {"model": "affine", "base_ms": 50, "per_item_ms": 10, "cv": 0.2, "max_batch": 8,
                "batch_timeout_ms": 10},
    "replicas": {"initial": 4, "min": 1, "max": 20, "cold_start_s": 30, "concurrency_limit": 32,
                 "queue_timeout_s": 10},
    "slo": {"latency_s": 0.5, "target": 0.99}, "cost": {"replica_hour": 2.5},
    "controller": {"interval_s": 15, "warmup_s": 60}, "seed": 1,
}
SWEEP = {"hpa": ["hpa:target=4"]}   # one setting: the sweep-best row without thirty replays
WINDOW_W = 1024                     # a narrow laptop window; the page must fit it
# Measured in the page once it has loaded; appended to a copy of the report, not the report.
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({src: i.getAttribute('src'),
    loaded: i.complete && i.naturalWidth > 0, natural_w: i.naturalWidth,
    shown_w: i.getBoundingClientRect().width, right: i.getBoundingClientRect().right}));
  const tables = [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right);
  const probe = {inner_w: window.innerWidth, scroll_w: document.documentElement.scrollWidth,
                 tables_right: tables, images: images};
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script>"""


def chromium(*args: str, profile: Path, timeout_s: float = 90) -> str:
    exe = require_binary("chromium")
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, f"chromium {args}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trimtab replay --sweep --out``: six policies, hpa's sweep best and the oracle."""
    require_binary("chromium")       # fail before the replays when the browser is missing
    work = tmp_path_factory.mktemp("report")
    sc = work / "scenario.yaml"
    sc.write_text(yaml.safe_dump(SCENARIO))
    sweep = types.ModuleType("trimtab.controllers.core.sweep")
    sweep.SWEEPS = SWEEP
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "trimtab.controllers.core.sweep", sweep)
        res = CliRunner().invoke(app, ["replay", "--scenario", str(sc), "--sweep", "--out",
                                       str(work / "out"), "--workers", "1"],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return work / "out"


@pytest.fixture(scope="module")
def dom(report: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The page's DOM after load, as Chromium rendered it, and what the probe measured."""
    probe_page = report / "report_probe.html"
    probe_page.write_text((report / "report.html").read_text().replace(
        "</body>", PROBE + "</body>", 1))
    text = chromium(f"--window-size={WINDOW_W},2000", "--dump-dom", probe_page.as_uri(),
                    profile=tmp_path_factory.mktemp("chromium"))
    m = re.search(r'<pre id="probe">(.*?)</pre>', text, re.S)
    assert m, "the probe did not run: no <pre id=\"probe\"> in the dumped DOM"
    return text, json.loads(html.unescape(m.group(1)))


def _results(report: Path) -> dict[str, Any]:
    return json.loads((report / "results.json").read_text())


def _rows(text: str) -> list[str]:
    return [html.unescape(p) for p in re.findall(r'<tr data-policy="([^"]*)"', text)]


def test_every_policy_has_a_row(report: Path, dom: tuple[str, dict[str, Any]]) -> None:
    doc = _results(report)
    expected = [display_label(r) for r in doc["results"]] + ["oracle"] + (
        [display_label(doc["past_only"], past_only=True)] if doc.get("past_only") else [])
    assert len(doc["results"]) == 7, doc["results"]
    assert [r["tuning"] for r in doc["results"]].count("hindsight") == 2, doc["results"]
    assert "oracle" in doc and "past_only" in doc, "the sweep should add oracle and past only"
    assert _rows(dom[0]) == expected


def test_the_scenario_and_every_setting_are_stated(dom: tuple[str, dict[str, Any]]) -> None:
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom[0]))
    for fact in ("flash-browser", "flash-crowd generator", "peak_rps=160", "cold start 30 s",
                 "latency \u2264 0.5 s for 99.00%", "2.5 per replica-hour", "every 15 s",
                 "1 to 20"):
        assert fact in text, f"scenario fact {fact!r} not on the page"
    # Each baseline's main setting with its default, the oracle's plan. (hpa's hindsight row is
    # the cheaper of its default and hpa:target=4 meeting the SLO: its label is a row.)
    for setting in ("metric=in_flight", "target=8", "threshold=10",
                    "container_concurrency=32", "target_ongoing_requests=2", "replicas=",
                    "load_factor=", "lower bound on cost"):
        assert setting in text, f"setting {setting!r} not on the page"


def test_every_plot_is_shown_and_loaded(report: Path, dom: tuple[str, dict[str, Any]]) -> None:
    images = dom[1]["images"]
    assert {i["src"] for i in images} == {p.name for p in report.glob("*.png")}
    assert {"load_replicas.png", "p99.png", "queue.png"} <= {i["src"] for i in images}
    for i in images:
        assert i["loaded"], f"{i['src']} did not load"
        assert i["natural_w"] == PAGE_WIDTH_PX, i        # drawn at the page's width
        assert i["right"] <= dom[1]["inner_w"], f"{i['src']} is wider than the window: {i}"


def test_nothing_is_wider_than_the_window(dom: tuple[str, dict[str, Any]]) -> None:
    probe = dom[1]
    assert probe["inner_w"] == WINDOW_W
    assert probe["scroll_w"] <= probe["inner_w"], probe
    assert all(right <= probe["inner_w"] for right in probe["tables_right"]), probe


def test_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium("--window-size=1280,2400", f"--screenshot={shot}", (report / "report.html").as_uri(),
             profile=tmp_path / "chromium")
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert struct.unpack(">II", head[16:24]) == (1280, 2400)
