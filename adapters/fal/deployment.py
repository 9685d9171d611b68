"""An AppBundle -> a Ray Serve application: the fal -> Ray Serve mapping in one place."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ray import serve
from ray.serve import Application

from tenantserve.platform.cluster import ray_private

from .bundle import AppBundle, describe
from .machines import actor_options
from .replica import FalAppReplica
from .warm_buffer import POLICY_PATH

# A setup() that raises fails the deploy after this many tries instead of Serve's default.
CONSTRUCTOR_RETRIES = 2


def autoscaling_config(bundle: AppBundle) -> dict[str, Any]:
    options = bundle.options
    config: dict[str, Any] = {
        "min_replicas": options.min_concurrency,
        "max_replicas": options.max_concurrency,
        # Start one replica even for scale-to-zero apps, so that a deploy proves setup() works.
        "initial_replicas": max(options.min_concurrency, 1),
        "target_ongoing_requests": options.max_multiplexing,
        "downscale_delay_s": options.keep_alive,
        "downscale_to_zero_delay_s": options.keep_alive,
        "upscale_delay_s": options.scaling_delay or 0,  # fal's scaling_delay: wait this long before adding one
        "look_back_period_s": 1,
        "metrics_interval_s": 0.2,
    }
    if options.concurrency_buffer or options.concurrency_buffer_perc:  # fal's warm replicas above the load
        config["policy"] = {"policy_function": POLICY_PATH, "policy_kwargs": {
            "buffer": options.concurrency_buffer, "buffer_perc": options.concurrency_buffer_perc}}
    return config


def to_application(
    bundle: AppBundle,
    nodes: Sequence[Mapping[str, float]],
    platform_config: dict[str, Any],
) -> Application:
    """Bind the bundle into a Serve application; raises UnplaceableError if none of `nodes`
    (each node's total resources) fits a replica.

    `platform_config` tells the replica where API keys and secrets live (`registry_url`,
    `secret_key_file`). The replica runs in the platform's interpreter; the app's
    `requirements` environment is its runner's (built on the node by the replica)."""
    options = bundle.options
    actor = actor_options(options.machine_types, options.num_gpus, nodes, options.regions)
    deployment = serve.deployment(
        FalAppReplica,
        name=bundle.source.class_name,
        ray_actor_options=actor,
        autoscaling_config=autoscaling_config(bundle),
        max_ongoing_requests=options.max_multiplexing,
        max_queued_requests=-1,
        max_constructor_retry_count=CONSTRUCTOR_RETRIES,
        # fal's termination_grace_period_seconds: how long teardown() may take.
        graceful_shutdown_timeout_s=options.termination_grace_period_seconds or 30,
        # Serve asks the replica (check_health) this often; an app's health_check= sets the timeout.
        health_check_period_s=5,
        health_check_timeout_s=(options.health_check.timeout_seconds if options.health_check else None) or 30,
        # JSON lines, each with its replica, request id and time: `platform logs` filters on them.
        logging_config={"encoding": "JSON"},
        # Owner, revision, auth and machine type, readable in the Ray dashboard's Serve view
        # and REST API (/api/serve/applications/); a change is applied without a restart.
        user_config=describe(bundle),
        # A redeploy starts the new replicas before it stops the old ones, so a new
        # revision whose setup() fails never takes the serving one down.
        max_surge_percent=100,
    )
    # Serve gives every imperative deploy a random code version, so re-applying the serving
    # revision (the rollback after a failed redeploy) would restart its replicas. Pinning
    # the version to the bundle's code version makes an equal bundle a no-op, and a change
    # of autoscaling options alone an in-place update of the running replicas.
    deployment = ray_private.pinned(deployment, bundle.code_version)
    return deployment.bind(bundle.to_json(), platform_config)
