"""Authenticated ``GET /api/v1/projects`` through the real control plane vs a bare FastAPI endpoint.

Both run as uvicorn processes with one worker on this machine, in the same run, with the same
JSON payload and the same client; rounds alternate between the two so that machine noise hits
both alike. Reports p50/p99 and throughput at concurrency 1 and 8, and the ratios.

    uv run python bench/bench_api.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
from _common import REPO, free_port, process, python, summary, wait_http

BARE_APP = textwrap.dedent(
    """
    import json, sys
    from fastapi import FastAPI
    from fastapi.responses import Response

    payload = open(sys.argv[1], "rb").read()
    app = FastAPI()

    @app.get("/api/v1/projects")
    def projects() -> Response:
        return Response(payload, media_type="application/json")

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False, log_level="warning")
    """
)


def load(url: str, headers: dict[str, str], n: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = n // concurrency

    def worker() -> None:
        local: list[float] = []
        with httpx.Client(headers=headers, timeout=30) as c:
            for _ in range(per_worker):
                t0 = time.perf_counter()
                r = c.get(url)
                local.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="selfserve-bench-"))
    api_port, bare_port = free_port(), free_port()
    env = {
        "SELFSERVE_HOME": str(tmp / "home"),
        "SELFSERVE_CONFIG_DIR": str(tmp / "config"),
        "SELFSERVE_SERVER__API_PORT": str(api_port),
    }
    with process([python(), "-m", "selfserve.server"], env, tmp / "api.log"):
        api = f"http://127.0.0.1:{api_port}"
        wait_http(f"{api}/api/v1/health")
        password = (tmp / "home" / "admin-credentials.txt").read_text().split("password:")[1].strip()
        token = httpx.post(f"{api}/api/v1/auth/login", json={"username": "admin", "password": password}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(5):
            r = httpx.post(
                f"{api}/api/v1/projects", json={"name": f"bench-{i}", "description": "benchmark"}, headers=headers
            )
            assert r.status_code == 201, r.text
        payload = httpx.get(f"{api}/api/v1/projects", headers=headers).content
        (tmp / "payload.json").write_bytes(payload)
        (tmp / "bare.py").write_text(BARE_APP)
        with process(
            [python(), str(tmp / "bare.py"), str(tmp / "payload.json"), str(bare_port)], None, tmp / "bare.log"
        ):
            bare = f"http://127.0.0.1:{bare_port}"
            wait_http(f"{bare}/api/v1/projects")
            results: dict[tuple[str, int], list[dict[str, float]]] = {}
            for conc in (1, 8):
                for _target, url in (("platform", api), ("bare", bare)):  # warm-up
                    load(f"{url}/api/v1/projects", headers, 200, conc)
                for _ in range(args.rounds):
                    for target, url in (("platform", api), ("bare", bare)):
                        results.setdefault((target, conc), []).append(
                            load(f"{url}/api/v1/projects", headers, args.requests, conc)
                        )

    def med(target: str, conc: int, key: str) -> float:
        vals = sorted(r[key] for r in results[(target, conc)])
        return vals[len(vals) // 2]

    print(
        f"payload: {len(payload)} bytes, {len(json.loads(payload))} projects; "
        f"{args.requests} requests x {args.rounds} rounds (median of rounds)\n"
    )
    print("| concurrency | target | p50 ms | p99 ms | req/s |")
    print("|---|---|---|---|---|")
    for conc in (1, 8):
        for target in ("platform", "bare"):
            print(
                f"| {conc} | {target} | {med(target, conc, 'p50_ms'):.2f} | {med(target, conc, 'p99_ms'):.2f} "
                f"| {med(target, conc, 'rps'):.0f} |"
            )
    print()
    for conc in (1, 8):
        p50 = med("platform", conc, "p50_ms") / med("bare", conc, "p50_ms")
        thr = med("platform", conc, "rps") / med("bare", conc, "rps")
        print(f"concurrency {conc}: p50 ratio platform/bare = {p50:.2f}x (target <= 2x), throughput ratio = {thr:.2f}x")
    print(f"\nrepo: {REPO}")


if __name__ == "__main__":
    main()
