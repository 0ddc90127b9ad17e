"""The live view renders load, replicas, batch size and p99 against the SLO from progress info."""
from __future__ import annotations

import numpy as np
from rich.console import Console

from trimtab.controllers.core.types import Snapshot
from trimtab.up.load import LoadGenerator, RampProfile
from trimtab.up.run import LiveConfig
from trimtab.up.view import render


def _text(renderable) -> str:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text()


def test_frame_shows_load_replicas_batch_and_p99_against_the_slo():
    cfg = LiveConfig(duration_s=60)
    load = LoadGenerator("http://127.0.0.1:1/", np.arange(0, 30, 0.1))
    for i in range(100):
        load.log.add(20.0 + i * 0.05, 1.5 if i == 99 else 0.1, "ok")
    info = {"stage": "load", "config": cfg, "load": load, "profile": RampProfile(60.0),
            "elapsed_s": 25.0, "replicas": [(25.0, 2, 1)],
            "snapshot": Snapshot(time_s=25.0, window_s=5.0, max_batch_size=6), "ticks": []}
    text = _text(render(info))
    assert "25 / 60 s" in text
    assert "2 (+1)" in text                       # running (+ starting)
    assert "max batch size" in text and " 6 " in text
    assert "SLO 1 s" in text
    # p99 of 99 fast requests and one at 1.5 s is above the 1 s SLO.
    p99 = float(np.quantile([0.1] * 99 + [1.5], 0.99))
    assert f"{p99:.3f} s" in text
    assert "10.0" in text                         # 10 rps sent over the last 5 s


def test_frame_before_the_load_names_the_stage():
    assert "starting Prometheus" in _text(render({"stage": "starting Prometheus"}))
