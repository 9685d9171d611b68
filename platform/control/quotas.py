"""Per-user limits on apps, replicas and GPUs, checked before a deploy or a scale.

Replicas and GPUs count what an app may grow to (`max_concurrency`), not what it runs
now: a deploy that fits cannot later autoscale past the user's share."""

from __future__ import annotations

from typing import Iterable

from tenantserve.adapters.fal.bundle import AppBundle
from tenantserve.adapters.fal.machines import is_gpu
from tenantserve.platform.store.registry import Registry


class QuotaError(ValueError):
    """A deploy or scale that would pass one of the user's limits."""


def gpus_per_replica(bundle: AppBundle) -> int:
    if not any(is_gpu(t) for t in bundle.options.machine_types):
        return 0
    return bundle.options.num_gpus or 1


def check_quota(registry: Registry, bundle: AppBundle, deployed: Iterable[str] = (),
                unregistered: Iterable[AppBundle] = ()) -> None:
    """Refuse a deploy that would pass one of the owner's limits. Apps count once each,
    whether registered or only running on Serve (`deployed`: Serve's app names, where
    `platform run`'s ephemeral apps show up); replicas and GPUs count registered apps and
    the `unregistered` ones (`platform run`'s) whose bundles are known."""
    quota = registry.quota(bundle.owner)
    others = [AppBundle.from_json(r.bundle) for r in registry.list(bundle.owner) if r.app != bundle.app_name]
    known = {b.app_name for b in others}
    others += [b for b in unregistered
               if b.owner == bundle.owner and b.app_name != bundle.app_name and b.app_name not in known]
    names = {b.app_name for b in others}
    prefix = f"{bundle.owner}."
    names |= {name[len(prefix):] for name in deployed if name.startswith(prefix)}
    names.discard(bundle.app_name)
    apps = len(names) + 1
    replicas = sum(b.options.max_concurrency for b in others + [bundle])
    gpus = sum(b.options.max_concurrency * gpus_per_replica(b) for b in others + [bundle])
    for name, used, limit in (
        ("apps", apps, quota.max_apps),
        ("replicas (sum of max_concurrency)", replicas, quota.max_replicas),
        ("GPUs (max_concurrency x GPUs per replica)", gpus, quota.max_gpus),
    ):
        if limit is not None and used > limit:
            raise QuotaError(f"quota exceeded for {bundle.owner}: {name} would be {used}, the limit is {limit}")
