"""Run every trimtab benchmark in one go and print the figures; `make bench` calls this.

Each benchmark is a `trimtab ... bench` command (its code lives beside what it measures:
sim/bench.py, sim/sweep_bench.py, collectors/bench.py, controllers/shell/bench.py, alerts/bench.py) that prints its figures as ratios
against a baseline measured in the same run and writes JSON; this runner collects the JSON
under bench/results/ so figures can be compared across commits.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRIMTAB = Path(sys.executable).with_name("trimtab")

BENCHES = {
    "sim": ["sim", "bench"],
    "sweep": ["sim", "sweep-bench"],
    "sidecar": ["sidecar", "bench"],
    "controller": ["controller", "bench"],
    "alerts": ["alerts", "bench"],
}


def main(names: list[str]) -> int:
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = []
    for name, argv in BENCHES.items():
        if names and name not in names:
            continue
        out = out_dir / f"{name}.json"
        print(f"== {name}: trimtab {' '.join(argv)} --json {out.relative_to(HERE.parent)}",
              flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([str(TRIMTAB), *argv, "--json", str(out)])
        print(f"== {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
        elif out.exists():
            print(json.dumps(json.loads(out.read_text()), indent=2))
    if failed:
        print(f"benchmarks that failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
