"""Builds that a deploy runs on the cluster's node on this machine, showing their output as it comes.

An app's environment or container image is built where its replicas run; the deploy
builds it first on the deploying machine's node so that the user sees the build's output
and a bad build fails the deploy before the serving revision is touched.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Optional

Log = Callable[[str], None]


def _stream(build: Callable[[Log], Any]) -> Iterator[Any]:
    """Ray task body: each line `build` logs, then ("done", its result) or ("failed", its error)."""
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome[:] = ["done", build(lines.put)]
        except Exception as error:  # noqa: BLE001 - handed to the caller as it was raised
            outcome[:] = ["failed", error]
        finally:
            lines.put(None)

    threading.Thread(target=run, daemon=True).start()
    while (line := lines.get()) is not None:
        yield line
    yield tuple(outcome)


def run_here(build: Callable[[Log], Any], progress: Log) -> Any:
    """`build(log)` in a Ray task on this machine's node (another node where it has none),
    each line it logs passed to `progress` as it comes; returns its result, raises its error."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(_stream).options(
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True),
    )
    for ref in task.remote(build):
        item = ray.get(ref)
        if isinstance(item, tuple):
            state, value = item
            if state == "failed":
                raise value
            return value
        progress(item)
    raise RuntimeError("the build's task ended without an outcome")
