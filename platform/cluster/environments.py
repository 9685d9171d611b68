"""Per-app Python environments for `requirements`, kept on each node across cluster restarts.

Ray's own `pip`/`uv` runtime envs live under the session directory, so every cluster
restart rebuilds them, and the first build of a list goes through a full virtualenv. Here
an app's list becomes a uv virtualenv on top of the node's packages, under a folder of the
node's own (`$TENANTSERVE_ENVS`, default `envs/` in the state directory), keyed by the list and the
interpreter. uv fills it from its package cache, so a new list of packages the node has
seen before builds in well under a second.

The node's own packages count: a list they already satisfy needs no environment at all
(`python_for` answers the node's interpreter), and a venv holds only what the node lacks
or has at another version. uv alone would not do that: it does not count the packages of a
`--system-site-packages` base as installed (astral-sh/uv issues 7358 and 4466) and would
download, say, a second torch into the venv for an app that asks for `accelerate`.

`prepare` builds an app's environment at deploy time on the deploying node and streams
uv's output to the user; a replica placed on another node builds it there as it starts
(`python_for`, in the replica), before its runner starts in that environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tenantserve.platform.core import settings
from tenantserve.platform.core.settings import state_dir

READY = ".tenantserve-ready"

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """uv could not build an app's environment; the message holds uv's own words."""


def root() -> Path:
    return settings.ENVS.get() or state_dir() / "envs"


def key(packages: Sequence[str]) -> str:
    """One environment per package list (order aside) and interpreter."""
    identity = {"packages": sorted(packages), "python": os.path.realpath(sys.executable), "version": sys.version}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _uv() -> str:
    import uv

    return uv.find_uv_bin()


def run_builder(command: list[str], log: Log, env: Optional[dict[str, str]] = None) -> tuple[int, list[str]]:
    """Run a builder (uv, buildah), passing each line of its output to `log` as it comes."""
    lines: list[str] = []
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        log(line.rstrip())
    return process.wait(), lines


def unsatisfied(packages: Sequence[str]) -> list[str]:
    """The requirements of `packages` that the node's interpreter does not meet as installed.

    A requirement is met when it, and everything it needs in turn, is installed in the
    interpreter's site-packages at a version its specifier allows (markers evaluated, extras
    followed). A URL, an option or anything unreadable counts as unmet: uv decides those."""
    from packaging.requirements import InvalidRequirement
    from packaging.version import InvalidVersion

    paths = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    unmet = []
    for text in packages:
        try:
            if not _met(text, paths):
                unmet.append(text)
        except (InvalidRequirement, InvalidVersion):
            unmet.append(text)
    return unmet


def _met(text: str, paths: list[str]) -> bool:
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pending = [(Requirement(text), frozenset({""}))]  # a requirement and the extras its asker was installed with
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, asked = pending.pop()
        if requirement.marker and not any(requirement.marker.evaluate({"extra": extra}) for extra in asked):
            continue
        if requirement.url:
            return False
        name = canonicalize_name(requirement.name)
        dist = next(iter(importlib.metadata.distributions(name=name, path=paths)), None)
        if dist is None or not requirement.specifier.contains(dist.version, prereleases=True):
            return False
        extras = frozenset(canonicalize_name(extra) for extra in requirement.extras)
        if (name, extras) not in seen:
            seen.add((name, extras))
            pending.extend((Requirement(line), extras | {""}) for line in dist.requires or [])
    return True


def python_for(packages: Sequence[str], log: Log = lambda line: None) -> str:
    """The interpreter a runner process for `packages` runs: the node's own when its packages
    satisfy them all (no environment is built), else the environment's, built first if need be."""
    if not unsatisfied(packages):
        log(f"requirements satisfied by the node's packages: {', '.join(packages)}")
        return sys.executable
    return str(ensure(packages, log) / "bin" / "python")


def uv_pip_install(arguments: list[str], log: Log) -> list[str]:
    """`uv pip install ARGUMENTS` from uv's cache alone, then, if that cannot, with the index:
    uv's output, passed to `log` too. Raises BuildError with uv's words."""
    # Wheels only: building a source distribution runs the package's code on the node, as the platform.
    arguments = ["--no-build", *arguments]
    code, lines = run_builder([_uv(), "pip", "install", "--color", "never", "--offline", *arguments], lambda line: None)
    if code == 0:
        for line in lines:
            log(line)
        return lines
    code, lines = run_builder([_uv(), "pip", "install", "--color", "never", *arguments], log)
    if code != 0:
        raise BuildError("\n".join(lines))
    return lines


def _plan(packages: Sequence[str]) -> tuple[list[str], list[str]]:
    """What the environment must add to the node's packages, pinned (`name==version`), and
    the node's packages those shadow.

    uv resolves `packages` against the node's interpreter itself, the one place where it
    counts the node's packages as installed and keeps their versions (a CPU torch built
    here and on no index included), and says what it would change; `--dry-run` changes
    nothing there (so `--break-system-packages` is safe for an externally managed one).
    Resolving for the venv instead, even with the node's versions as preferences
    (`uv pip compile -o` a file of them), picks the index's torch over the node's `+cpu` one."""
    lines = uv_pip_install(["--dry-run", "--break-system-packages", "--python", sys.executable, *packages],
                            lambda line: None)
    add = [line[3:].strip() for line in lines if line.startswith((" + ", " ~ "))]
    shadowed = [line[3:].strip() for line in lines if line.startswith(" - ")]
    return add, shadowed


def ensure(packages: Sequence[str], log: Log = lambda line: None) -> Path:
    """The environment's folder on this node, built first if it is missing or half-built.

    The venv gets only what the node's packages lack (installed with `--no-deps`, the
    resolution being done): a pin that differs from a node's package shadows it, since a
    venv's site-packages come before the system's. Concurrent callers on one node (a deploy
    and a replica, two replicas) wait for one build. uv tries its cache alone first and asks
    the package index only for what it lacks. A failed build leaves nothing behind."""
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
        try:
            unmet = set(unsatisfied(packages))
            met = [p for p in packages if p not in unmet]
            if met:
                log(f"requirements satisfied by the node's packages: {', '.join(met)}")
            add, shadowed = _plan(packages) if packages else ([], [])
            log(f"adding to the node's packages: {', '.join(add)}" if add else "nothing to add to the node's packages")
            if shadowed:
                log(f"shadowing the node's {', '.join(shadowed)}")
            code, lines = run_builder([_uv(), "venv", "--quiet", "--system-site-packages", "--python", sys.executable,
                                       str(target)], log)
            if code != 0:
                raise BuildError("\n".join(lines) or "uv could not create the virtualenv")
            if add:
                uv_pip_install(["--no-deps", "--python", str(target / "bin" / "python"), *add], log)
            (target / READY).write_text(json.dumps(
                {"packages": list(packages), "installed": add, "seconds": time.monotonic() - started}))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    return target


def _build(packages: list[str], log: Log) -> dict[str, Any]:
    """How the node came by the environment: built (in seconds), reused, or not needed."""
    started = time.monotonic()
    was_ready = (root() / key(packages) / READY).exists()
    if python_for(packages, log) == sys.executable:
        return {"satisfied": True}
    return {"built": None if was_ready else time.monotonic() - started}


def prepare(packages: Sequence[str], progress: Log) -> None:
    """Build an app's environment on the cluster (on this machine's node where it has one),
    streaming uv's output, so that a deploy shows the build and fails on a bad list. Replicas
    on other nodes build theirs where they start (`python_for`)."""
    from .node_builds import run_here

    packages = list(packages)
    progress(f"environment {key(packages)}: {', '.join(packages)}")
    try:
        outcome = run_here(partial(_build, packages), lambda line: progress(f"  {line}"))
    except BuildError as error:
        raise BuildError(f"cannot build the environment for {', '.join(packages)}:\n{error}") from None
    built = outcome.get("built")
    if outcome.get("satisfied"):
        progress("environment: none needed, the node's own packages run the app")
    else:
        progress(f"environment built in {built:.1f}s" if built is not None else "environment: reusing the one on this node")
