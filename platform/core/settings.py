"""Every `TENANTSERVE_*` setting: its name, default, type and meaning, read in one place.

Operators set them where the platform runs (the shell of `platform up`, each node of a
multi-node cluster); users set the CLI's. `docs/configuration.md` lists the same table (a
test keeps the two equal). The variables that a replica sets for its runner are named in
`RUNNER_VARIABLES` (two of them pass operator settings of the same names on).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    name: str
    default: Optional[str]
    parse: Callable[[str], T]
    doc: str
    where: str  # who reads it: platform (where the services are applied), node, replica, CLI

    def get(self) -> Optional[T]:
        """The variable's value (an empty one counts as unset), else the default's."""
        raw = os.environ.get(self.name) or self.default
        return None if raw is None else self.parse(raw)

    def value(self) -> T:
        """`get()` for a setting with a default."""
        found = self.get()
        if found is None:
            raise LookupError(f"{self.name} is not set and has no default")
        return found


SETTINGS: dict[str, Setting] = {}


def _setting(name: str, default: Optional[str], parse: Callable[[str], T], where: str, doc: str) -> Setting[T]:
    SETTINGS[name] = setting = Setting(name, default, parse, doc, where)
    return setting


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _non_negative(raw: str) -> int:
    return max(0, int(raw))


def _flag(raw: str) -> bool:
    return raw not in ("0", "false", "no")


HOME = _setting("TENANTSERVE_HOME", "~/.tenantserve", _path, "platform, CLI",
                "The state directory: the registry (SQLite), secret key, file store, envs, model cache, credentials.")
DB = _setting("TENANTSERVE_DB", None, str, "platform, CLI (operators)",
              "The registry's SQLAlchemy URL; default SQLite in the state directory. PostgreSQL for a multi-node cluster.")
SECRET_KEY = _setting("TENANTSERVE_SECRET_KEY", None, str, "platform, node",
                      "The Fernet key that seals users' secrets; default `secret.key` in the state directory.")
STORAGE = _setting("TENANTSERVE_STORAGE", None, str, "platform",
                   "Where outputs and uploads are stored: a folder, or `s3://bucket/prefix`; default `files/` in the "
                   "state directory.")
FILES_TTL = _setting("TENANTSERVE_FILES_TTL", "604800", float, "platform",
                     "Seconds a stored file is kept (default 7 days).")
RESULTS_TTL = _setting("TENANTSERVE_RESULTS_TTL", "604800", float, "platform",
                       "Seconds the queue keeps a finished request's result (default 7 days).")
URL = _setting("TENANTSERVE_URL", None, str, "platform, CLI",
               "The platform's public URL: what file URLs and app URLs start with, and what the CLI talks to.")
HTTP_HOST = _setting("TENANTSERVE_HTTP_HOST", None, str, "platform",
                     "The address the HTTP port binds on a cluster's head (0.0.0.0 behind a load balancer).")
MODEL_CACHE = _setting("TENANTSERVE_MODEL_CACHE", None, str, "platform",
                       "The node's model cache (each owner sees their own area as /data); default `cache/` in the "
                       "state directory.")
ENVS = _setting("TENANTSERVE_ENVS", None, _path, "node",
                "Where apps' `requirements` environments are kept on a node; default `envs/` in the state directory.")
IMAGES = _setting("TENANTSERVE_IMAGES", None, _path, "node",
                  "Where a node keeps what it built for apps' container images; default `images/` in the state "
                  "directory.")
IMAGE_REGISTRY = _setting("TENANTSERVE_IMAGE_REGISTRY", None, str, "node",
                          "The registry nodes pull apps' base images from: Docker Hub names (`FROM python:3.11`) "
                          "at the same paths there, as host[:port][/path]; `http://` before it for a registry "
                          "without TLS. Default: the node's own containers registries.conf.")
BUILD_UID_BASE = _setting("TENANTSERVE_BUILD_UID_BASE", "100000000", int, "node",
                          "The first OS user id of image builds: each owner's builds run as 65536 ids from this + "
                          "65536 x (the owner's number + 1).")
DOWNLOAD_HOSTS = _setting("TENANTSERVE_DOWNLOAD_HOSTS", "", str, "platform",
                          "host:port pairs on private addresses that runners may download from (comma-separated).")
SPARE_WORKERS = _setting("TENANTSERVE_SPARE_WORKERS", "1", _non_negative, "platform",
                         "Idle Ray workers each node keeps ready, each with a spare runner, for fast cold starts.")
SPARE_RUNNERS = _setting("TENANTSERVE_SPARE_RUNNERS", "1", _flag, "node",
                         "0 turns spare runners off: every replica starts its runner itself.")
QUEUE_DISPATCHERS = _setting("TENANTSERVE_QUEUE_DISPATCHERS", "1", int, "platform",
                             "Replicas of the queue service, each serving the queue API and dispatching: more than 1 "
                             "needs a PostgreSQL registry.")
AUDIT_DAYS = _setting("TENANTSERVE_AUDIT_DAYS", "90", float, "platform",
                      "Days the audit log keeps an entry.")
AUTOSCALER_CONFIG = _setting("TENANTSERVE_AUTOSCALER_CONFIG", "~/ray_bootstrap_config.yaml", _path, "platform",
                             "The Ray autoscaler's config, read for the node groups it can add.")
UNSANDBOXED = _setting("TENANTSERVE_UNSANDBOXED", None, _flag, "node",
                       "1 runs runners without bubblewrap (development only: no isolation between tenants).")
RUNNER_NETWORK = _setting("TENANTSERVE_RUNNER_NETWORK", None, str, "node",
                          "`none` takes the network away from every runner (default: runners reach the network, "
                          "never the platform's private addresses but DOWNLOAD_HOSTS).")
RUNNER_UID_BASE = _setting("TENANTSERVE_RUNNER_UID_BASE", "200000", int, "node",
                           "The first OS user id of runners: each owner's runners run as this + the owner's number.")
KEY = _setting("TENANTSERVE_KEY", None, str, "CLI",
               "The CLI's API key, KEY_ID:KEY_SECRET (`FAL_KEY` is read too; else the saved credentials).")
USER = _setting("TENANTSERVE_USER", None, str, "CLI (operators)",
                "The user the operator's direct commands act as; default the OS user.")

# Set by a replica for its runner (and read inside the sandbox, where this package is not);
# the last two carry the operator's settings of the same names into the runner.
RUNNER_VARIABLES = ("TENANTSERVE_FILES_URL", "TENANTSERVE_CONTROL_SOCKET", "TENANTSERVE_NODE_ID",
                    "TENANTSERVE_REPLICA_ID", "TENANTSERVE_MODEL_CACHE", "TENANTSERVE_DOWNLOAD_HOSTS",
                    "TENANTSERVE_ENVIRONMENT_FD")


def state_dir() -> Path:
    path = HOME.value()
    path.mkdir(parents=True, exist_ok=True)
    return path
