"""Environment builds: deploy -> first answer for an app whose `requirements` list is new
but whose package is already in the node's uv cache, through tenantserve against bare Ray
Serve with Ray's own `uv` and `pip` runtime envs, in one run. Each round uses a list no
environment was built for (`humanize!=0.0.<n>`, which resolves to the same cached wheel).

    python bench/envbuild.py [--rounds 3]

Goal (issue 7): 4 s or less through the platform (Ray alone: ~12 s with uv, ~18 s with pip).
Also a list that the node's own packages satisfy (`httpx`, `pydantic>=2`): issue 15's goal
is at most 1 s more than no requirements, nothing downloaded (the runner uses the node's
interpreter, no environment is built).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from dataclasses import replace

sys.path.insert(0, __import__("os").path.dirname(__file__))
from baselines import run_bare_serve  # noqa: E402
from common import BENCH, local_platform, table, wait_ok  # noqa: E402

SATISFIED = ["httpx", "pydantic>=2"]


def fresh_list() -> list[str]:
    return [f"humanize!=0.0.{uuid.uuid4().int % 10**9}"]


def bare(base: str, kind: str) -> float:
    started = time.perf_counter()
    route = run_bare_serve(f"bare-{kind}-{uuid.uuid4().hex[:6]}", runtime_env={kind: fresh_list()})
    wait_ok(f"{base}{route}", {"text": "hi"}, timeout=300)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tenantserve.adapters.fal.bundle import prepare
    from tenantserve.platform.control import apps
    from tenantserve.platform.store.registry import Registry

    with local_platform() as base:
        registry = Registry()
        registry.create_user("bench", admin=True)
        template = prepare(f"{BENCH}/apps/echo.py::Echo", owner="bench")

        def platform_deploy(requirements: list[str]) -> float:
            options = template.options.model_copy(update={"app_auth": "public", "requirements": requirements})
            bundle = replace(template, app_name=f"echo-{uuid.uuid4().hex[:6]}", options=options)
            started = time.perf_counter()
            url = apps.deploy(bundle, base, registry)
            wait_ok(f"{url}/", {"text": "hi"}, timeout=300)
            return time.perf_counter() - started

        platform_deploy(["humanize"])  # the package lands in uv's cache, as on a node that has seen it
        names = ("tenantserve", "tenantserve, no requirements", "tenantserve, requirements the node satisfies",
                 "Ray uv", "Ray pip")
        results: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            results["tenantserve"].append(platform_deploy(fresh_list()))
            results["tenantserve, no requirements"].append(platform_deploy([]))
            results["tenantserve, requirements the node satisfies"].append(platform_deploy(SATISFIED))
            results["Ray uv"].append(bare(base, "uv"))
            results["Ray pip"].append(bare(base, "pip"))
    rows = [("deploy -> first answer", "median s", "runs")]
    for name, times in results.items():
        rows.append((name, f"{statistics.median(times):.2f}", " ".join(f"{t:.2f}" for t in times)))
    print(table(rows))
    ours, ray_uv = statistics.median(results["tenantserve"]), statistics.median(results["Ray uv"])
    print(f"tenantserve / Ray uv: {ours / ray_uv:.2f}x")
    bare_deploy = statistics.median(results["tenantserve, no requirements"])
    satisfied = statistics.median(results["tenantserve, requirements the node satisfies"])
    print(f"requirements the node satisfies: {satisfied - bare_deploy:+.2f} s against none "
          f"({satisfied / bare_deploy:.2f}x; goal: at most +1 s)")


if __name__ == "__main__":
    main()
