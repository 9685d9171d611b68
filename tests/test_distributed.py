"""fal.distributed on the platform: an app's DistributedRunner starts its two workers
inside the app's runner (gloo on this CPU-only node) and answers through them."""

import pytest

from helpers import APPS, deployed


@pytest.mark.timeout(600)  # the app's environment (pyzmq) is built on first use
def test_a_distributed_app_runs_its_workers_and_answers(cli, http) -> None:
    deployed(cli, f"{APPS}/distributed_app.py::Distributed", "--user", "xena")
    answer = http.post("/xena/distributed/", json={"values": [1, 2, 3]}, timeout=120)
    assert answer.status_code == 200, answer.text
    # Each worker weighs the sum by its rank + 1; the all-reduce adds both: 6 * 1 + 6 * 2.
    assert answer.json() == {"total": 18.0, "workers": 2, "device": "cpu"}
    cli("apps", "delete", "distributed", "--user", "xena")  # its two workers' memory, for the tests after it
