"""Per-app Python environments for `requirements`, kept on each node across cluster restarts.

Ray's own `pip`/`uv` runtime envs live under the session directory, so every cluster
restart rebuilds them, and the first build of a list goes through a full virtualenv. Here
an app's list becomes a uv virtualenv on top of the node's packages, under a folder of the
node's own (`$TENANTSERVE_ENVS`, default `envs/` in the state directory), keyed by the list and the
interpreter. uv fills it from its package cache, so a new list of packages the node has
seen before builds in well under a second.

The build happens in two places, both through `ensure`: `prepare` builds it at deploy time
on the deploying node and streams uv's output to the user, and `EnvironmentPlugin`, a Ray
runtime-env plugin that `platform up` registers on every node, builds it wherever a replica
is placed before the replica's worker starts (in that venv's interpreter).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ray._private.runtime_env.plugin import RuntimeEnvPlugin

from .cluster import state_dir

FIELD = "tenantserve_env"  # the runtime_env key this plugin owns
PLUGINS_VAR = "RAY_RUNTIME_ENV_PLUGINS"
READY = ".tenantserve-ready"

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """uv could not build an app's environment; the message holds uv's own words."""


def plugin_setting() -> str:
    """The value of RAY_RUNTIME_ENV_PLUGINS that registers the plugin on a node at `ray start`."""
    return json.dumps([{"class": f"{__name__}.{EnvironmentPlugin.__name__}"}])


def root() -> Path:
    configured = os.environ.get("TENANTSERVE_ENVS")
    return Path(configured).expanduser() if configured else state_dir() / "envs"


def key(packages: Sequence[str]) -> str:
    """One environment per package list (order aside) and interpreter."""
    identity = {"packages": sorted(packages), "python": os.path.realpath(sys.executable), "version": sys.version}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _uv() -> str:
    import uv

    return uv.find_uv_bin()


def _run(command: list[str], log: Log) -> tuple[int, list[str]]:
    """Run uv, passing each line of its output to `log` as it comes."""
    lines: list[str] = []
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        log(line.rstrip())
    return process.wait(), lines


def ensure(packages: Sequence[str], log: Log = lambda line: None) -> Path:
    """The environment's folder on this node, built first if it is missing or half-built.

    Concurrent callers on one node (a deploy and a replica, two replicas) wait for one build.
    uv tries its cache alone first and asks the package index only for what it lacks."""
    from filelock import FileLock

    target = root() / key(packages)
    if (target / READY).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / READY).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        code, lines = _run([_uv(), "venv", "--quiet", "--system-site-packages", "--python", sys.executable, str(target)], log)
        if code != 0:
            raise BuildError("\n".join(lines) or "uv could not create the virtualenv")
        install = [_uv(), "pip", "install", "--python", str(target / "bin" / "python"), *packages]
        code, lines = _run([*install[:3], "--offline", *install[3:]], lambda line: None)
        if code == 0:
            for line in lines:
                log(line)
        else:
            code, lines = _run(install, log)
            if code != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise BuildError("\n".join(lines))
        (target / READY).write_text(json.dumps({"packages": list(packages), "seconds": time.monotonic() - started}))
    return target


class EnvironmentPlugin(RuntimeEnvPlugin):
    """`{"tenantserve_env": {"packages": [...]}}` in a runtime_env: the worker runs in that
    package list's environment, built on this node if it is not there yet."""

    name = FIELD

    @staticmethod
    def validate(runtime_env_dict: dict) -> None:
        packages = (runtime_env_dict.get(FIELD) or {}).get("packages")
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise ValueError(f"{FIELD} needs {{'packages': [str, ...]}}, got {runtime_env_dict.get(FIELD)!r}")

    async def create(self, uri: Optional[str], runtime_env: Any, context: Any, logger: logging.Logger) -> float:
        packages = _packages(runtime_env)
        if packages:
            await asyncio.to_thread(ensure, packages, logger.info)
        return 0

    def modify_context(self, uris: list[str], runtime_env: Any, context: Any, logger: logging.Logger) -> None:
        packages = _packages(runtime_env)
        if not packages:
            return
        folder = root() / key(packages)
        context.py_executable = str(folder / "bin" / "python")
        context.env_vars["VIRTUAL_ENV"] = str(folder)
        context.env_vars["PATH"] = f"{folder / 'bin'}:${{PATH}}"


def _packages(runtime_env: Any) -> list[str]:
    return list((runtime_env.get(FIELD) or {}).get("packages") or [])


def _build_remote(packages: list[str]) -> Iterator[Any]:
    """Ray task body: uv's output line by line as it comes, then the outcome: how long the
    build took (None when the environment was there) and whether this node runs the plugin."""
    import queue
    import threading

    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    outcome: dict[str, Any] = {"plugin": EnvironmentPlugin.__name__ in os.environ.get(PLUGINS_VAR, ""), "built": None}

    def build() -> None:
        started = time.monotonic()
        try:
            if not (root() / key(packages) / READY).exists():
                ensure(packages, lines.put)
                outcome["built"] = time.monotonic() - started
        except BuildError as error:
            outcome["error"] = str(error)
        finally:
            lines.put(None)

    threading.Thread(target=build, daemon=True).start()
    while (line := lines.get()) is not None:
        yield line
    yield outcome


def prepare(packages: Sequence[str], progress: Log) -> dict[str, Any]:
    """Build an app's environment on the cluster (on this machine's node where it has one)
    and return the runtime_env that runs its replicas in it.

    On a cluster whose nodes were started without the plugin, falls back to Ray's own uv
    runtime env (rebuilt after each cluster restart) and says so."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    packages = list(packages)
    progress(f"environment {key(packages)}: {', '.join(packages)}")
    build = ray.remote(_build_remote).options(
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True),
    )
    outcome: dict[str, Any] = {}
    for ref in build.remote(packages):
        item = ray.get(ref)
        if isinstance(item, dict):
            outcome = item
        else:
            progress(f"  {item}")
    if "error" in outcome:
        raise BuildError(f"cannot build the environment for {', '.join(packages)}:\n{outcome['error']}")
    if not outcome.get("plugin"):
        progress(f"warning: this cluster's nodes run without {PLUGINS_VAR}={plugin_setting()}; "
                 "using Ray's uv runtime env, which each cluster restart rebuilds")
        return {"uv": {"packages": packages}}
    built = outcome.get("built")
    progress(f"environment built in {built:.1f}s" if built is not None else "environment: reusing the one on this node")
    return {FIELD: {"packages": packages}}
