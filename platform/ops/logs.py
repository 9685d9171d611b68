"""An app's replica logs (its prints, warnings and tracebacks), read through Ray's state API
from every node, so they are there for stopped replicas and on any node of a cluster."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterator, Optional, TypeVar

import ray
from ray.util.state import get_log, list_logs

from tenantserve.platform.cluster.ray_cluster import state_api_address
from tenantserve.platform.core.naming import serve_app_name

T = TypeVar("T")


@dataclass(frozen=True)
class LogLine:
    time: datetime
    replica: str
    level: str
    message: str
    request_id: str = ""

    def render(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f" {self.replica} {self.level:<7} {self.message}"


def _parse(raw: str, replica: str) -> Optional[LogLine]:
    try:
        record = json.loads(raw)
        stamp = datetime.strptime(record["asctime"], "%Y-%m-%d %H:%M:%S,%f")
    except (ValueError, KeyError, TypeError):
        return None
    message = record.get("message", "").rstrip()
    if record.get("exc_text"):
        message = f"{message}\n{record['exc_text']}"
    return LogLine(stamp, record.get("replica", replica), record.get("levelname", ""), message,
                   record.get("request_id", ""))


class LogsError(RuntimeError):
    """Ray's state API could not list or read a node's logs."""


def _retrying(call: Callable[[], T], what: str, attempts: int = 10) -> T:
    """The dashboard learns of a node's log agent a little after the node joins; retry."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # the state API raises HTTP, connection and value errors
            if attempt == attempts - 1:
                raise LogsError(f"cannot {what}: {error}") from None
            time.sleep(1)
    raise AssertionError("unreachable")


def _replica_files(serve_name: str) -> Iterator[tuple[str, str]]:
    pattern = f"serve/replica_{serve_name}_*.log"
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        node_id = node["NodeID"]
        found = _retrying(lambda: list_logs(address=state_api_address(), node_id=node_id, glob_filter=pattern),
                          f"list logs of node {node_id}")
        for names in found.values():
            for name in names:
                yield node_id, name


def _lines_of(serve_name: str) -> list[LogLine]:
    lines = []
    for node_id, name in _replica_files(serve_name):
        replica = name.rsplit("_", 1)[-1].removesuffix(".log")
        text = _retrying(
            lambda: "".join(get_log(address=state_api_address(), node_id=node_id, filename=name, tail=-1,
                                    errors="replace")), f"read {name}"
        )
        lines += [line for line in (_parse(raw, replica) for raw in text.splitlines()) if line is not None]
    return sorted(lines, key=lambda line: line.time)


def read_logs(owner: str, app: str, since: Optional[datetime] = None, request_id: Optional[str] = None) -> list[LogLine]:
    """Every log line of the app's replicas, oldest first, optionally from `since` / for one request."""
    return [line for line in _lines_of(serve_app_name(owner, app))
            if not (since and line.time < since) and not (request_id and line.request_id != request_id)]


def last_lines(serve_name: str, count: int) -> list[LogLine]:
    """The last `count` lines the replicas of the Serve app `serve_name` logged."""
    return _lines_of(serve_name)[-count:]
