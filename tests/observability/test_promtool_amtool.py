"""The committed rules and Alertmanager config, checked by the real promtool and amtool (and the bench)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from trimtab.alerts.alertmanager import NOWHERE, PAGER, TICKETS
from trimtab.alerts.build import ALERTMANAGER_FILE, ALERTS_DIR
from trimtab.alerts.promtool_tests import LONG_TEST_FILE, RULE_FILE, TEST_FILE
from tests.conftest import require_binary


def _run(*args: str, cwd: Path = ALERTS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    out = _run(require_binary("promtool"), "check", "rules", RULE_FILE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_check_rules_rejects_a_broken_expression(tmp_path: Path) -> None:
    rules = yaml.safe_load((ALERTS_DIR / RULE_FILE).read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum(rate(trimtab_requests_total[5m]"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(rules))
    out = _run(require_binary("promtool"), "check", "rules", "bad.yaml", cwd=tmp_path)
    assert out.returncode != 0


def test_promtool_unit_tests_pass() -> None:
    out = _run(require_binary("promtool"), "test", "rules", TEST_FILE, LONG_TEST_FILE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == 2


def test_promtool_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The generated tests bite: loosen the GPU memory threshold and the 'fires' checks fail."""
    rules = (ALERTS_DIR / RULE_FILE).read_text()
    assert "namespace_pod_gpu:trimtab_gpu_memory_used:ratio > 0.95" in rules
    (tmp_path / RULE_FILE).write_text(rules.replace(
        "namespace_pod_gpu:trimtab_gpu_memory_used:ratio > 0.95",
        "namespace_pod_gpu:trimtab_gpu_memory_used:ratio > 0.995"))
    (tmp_path / TEST_FILE).write_text((ALERTS_DIR / TEST_FILE).read_text())
    out = _run(require_binary("promtool"), "test", "rules", TEST_FILE, cwd=tmp_path)
    assert out.returncode != 0
    assert "TrimtabGPUMemoryNearFull" in out.stdout + out.stderr


def test_amtool_check_config() -> None:
    out = _run(require_binary("amtool"), "check-config", ALERTMANAGER_FILE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 inhibit rules" in out.stdout and "3 receivers" in out.stdout


ROUTES = [
    # (labels, receiver)
    ({"severity": "critical", "alertname": "TrimtabErrorBudgetBurn", "namespace": "prod",
      "model": "llama"}, PAGER),
    ({"severity": "critical", "alertname": "TrimtabTargetDown"}, PAGER),
    ({"severity": "warning", "alertname": "TrimtabGPUMemoryNearFull", "gpu": "0"}, TICKETS),
    ({"severity": "warning", "alertname": "TrimtabErrorBudgetBurn", "long_window": "3d"},
     TICKETS),
    ({"severity": "info", "alertname": "TrimtabControllerHolding"}, NOWHERE),
    ({"alertname": "SomethingWithoutSeverity"}, NOWHERE),
    ({"severity": "page", "alertname": "UnknownSeverity"}, NOWHERE),
]


@pytest.mark.parametrize("labels, receiver", ROUTES,
                         ids=[f"{lab.get('severity', 'none')}-{lab['alertname']}"
                              for lab, _ in ROUTES])
def test_routing(labels: dict[str, str], receiver: str) -> None:
    args = [f"{k}={v}" for k, v in labels.items()]
    out = _run(require_binary("amtool"), "config", "routes", "test",
               f"--config.file={ALERTMANAGER_FILE}", f"--verify.receivers={receiver}", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    # and the check is not vacuous: any other receiver is refused
    wrong = next(r for r in (PAGER, TICKETS, NOWHERE) if r != receiver)
    refused = _run(require_binary("amtool"), "config", "routes", "test",
                   f"--config.file={ALERTMANAGER_FILE}", f"--verify.receivers={wrong}", *args)
    assert refused.returncode != 0


def test_alerts_bench_runs_on_a_real_prometheus() -> None:
    """Smoke run of `trimtab alerts bench` (tiny history): the figures exist and are positive."""
    from trimtab.alerts.bench import run_bench
    require_binary("prometheus")
    figures = run_bench(models=2, days=0.5, step_s=300, repeats=1)
    assert figures["recording_rules"] >= 10
    assert figures["rules_cycle_s"] > 0 and figures["baseline_cycle_s"] > 0
    assert figures["slowest_rules"][0]["record"].startswith("namespace_model:")
