"""Without the trimtab[ray] extra: the Ray commands say how to install it, nothing else breaks."""
from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.core.types import Decision

RAY_MODULES = ("ray", "ray.serve", "ray.serve.context", "ray.serve.schema")


@pytest.fixture
def no_ray(monkeypatch):
    """Make every ``import ray...`` fail as it does where Ray is not installed."""
    for name in list(sys.modules):
        if name == "ray" or name.startswith("ray."):
            monkeypatch.delitem(sys.modules, name)
    for name in RAY_MODULES:
        monkeypatch.setitem(sys.modules, name, None)   # None in sys.modules -> ImportError


def test_trimtab_up_names_the_extra_to_install(no_ray):
    from trimtab.cli import app

    result = CliRunner().invoke(app, ["up", "--duration", "30", "--no-view"])
    assert result.exit_code == 2
    assert "pip install 'trimtab[ray]'" in result.output


def test_other_commands_still_work(no_ray):
    from trimtab.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "up" in result.output


def test_the_actuator_raises_a_bounded_error_with_the_hint(no_ray):
    from trimtab.controllers.shell.actuators.base import ActuationError
    from trimtab.controllers.shell.actuators.ray_serve import RayServeActuator, ray_serve_available

    assert not ray_serve_available()
    act = RayServeActuator()
    with pytest.raises(ActuationError) as info:
        act.apply(WorkloadRef("RayServeDeployment", "demo", "mlp"),
                  Decision(replicas=2, reason="scale_up"), "scale_up")
    assert info.value.error == "ray_not_installed"
    assert not info.value.retryable
    assert "trimtab[ray]" in str(info.value)
    assert act.current_replicas(WorkloadRef("RayServeDeployment", "demo", "mlp")) is None


def test_the_batching_helper_imports_without_ray(no_ray):
    import importlib

    import trimtab.collectors.ray_batching as helper

    importlib.reload(helper)
    assert helper.parse_batch_settings({"trimtab": {"max_batch_size": 3}}).max_batch_size == 3
