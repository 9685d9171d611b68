"""Many apps at min_concurrency=0 on one node: each deploys, scales to zero, and answers
its first call by starting a replica again."""

import time

import pytest
import ray

from helpers import APPS, deployed

COUNT = 24


@pytest.mark.timeout(900)  # 24 deploys and 24 cold starts: slow on a busy 2-core machine
def test_two_dozen_scale_to_zero_apps_each_answer(cli, http) -> None:
    names = [f"tiny-{index:02d}" for index in range(COUNT)]
    try:
        for name in names:
            deployed(cli, f"{APPS}/many.py::Tiny", "--user", "sam", "--app-name", name)

        def running() -> int:
            statuses = ray.serve.status().applications
            return sum(deployment.replica_states.get("RUNNING", 0) for name in names
                       for deployment in statuses[f"sam.{name}"].deployments.values())

        deadline = time.monotonic() + 60
        while running() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert running() == 0, "the apps did not all scale to zero"
        for name in names:
            # A cold start through a spare runner that hangs (seen on a loaded CI machine) waits
            # for the spare's WARM_WITHIN_S and then starts a runner of its own: over 60 s.
            answer = http.post(f"/sam/{name}/", json={"text": name}, timeout=150)
            assert answer.status_code == 200 and answer.json() == {"text": name}
    finally:
        for name in names:
            cli("apps", "delete", name, "--user", "sam")
