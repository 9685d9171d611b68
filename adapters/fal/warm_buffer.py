"""fal's `concurrency_buffer` / `concurrency_buffer_perc` as a Serve autoscaling policy:
Serve's own queue-length policy, with warm replicas kept above the current load.

Serve runs the policy in its controller (found by import path) and still applies the
app's bounds and delays (`min_concurrency`, `max_concurrency`, `scaling_delay`,
`keep_alive`) to what it returns.
"""

from __future__ import annotations

import math
from typing import Any

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext

POLICY_PATH = f"{__name__}:WarmBuffer"


def buffered_replicas(requests: float, per_replica: float, buffer: int, buffer_perc: int) -> int:
    """Replicas for `requests` in flight at `per_replica` each, plus the larger of `buffer`
    and `buffer_perc` percent of those (rounded up), as fal counts its warm buffer."""
    busy = math.ceil(requests / per_replica) if requests > 0 else 0
    return busy + max(buffer, math.ceil(busy * buffer_perc / 100))


class WarmBuffer:
    def __init__(self, buffer: int = 0, buffer_perc: int = 0) -> None:
        self.buffer, self.buffer_perc = buffer, buffer_perc

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
        desired, state = replica_queue_length_autoscaling_policy(ctx)
        wanted = buffered_replicas(ctx.total_num_requests, ctx.config.get_target_ongoing_requests(),
                                   self.buffer, self.buffer_perc)
        return max(desired, wanted), state
