"""A registry locked by another process for longer than its busy timeout: submits answer
503 with Retry-After, and a request that finishes meanwhile is recorded once the lock is
gone, neither stranded IN_PROGRESS nor run a second time."""

import os
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import select

from helpers import APPS, deployed, wait_until


def _auth(keys: dict, user: str) -> dict:
    return {"authorization": f"Key {keys[user]}"}


def test_a_long_registry_lock_strands_no_request(cli, http, keys) -> None:
    from tenantserve.platform.store.registry import Registry
    from tenantserve.platform.store.request_queue import requests_table

    deployed(cli, f"{APPS}/queued.py::Worker", "--user", "quinn", "--auth", "private")
    submitted = http.post("/queue/quinn/worker", json={"label": "during-the-lock", "seconds": 3},
                          headers=_auth(keys, "quinn")).json()
    wait_until(lambda: http.get(submitted["status_url"], headers=_auth(keys, "quinn")).json()["status"]
               == "IN_PROGRESS", "the request to start", timeout=30, every=0.05)

    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(Path(os.environ["TENANTSERVE_HOME"]) / "registry.db", isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(12)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        busy = http.post("/queue/quinn/worker", json={"label": "refused"}, headers=_auth(keys, "quinn"))
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
        # Readers are not held up (WAL): the request that finished during the lock is still running for them.
        assert http.get(submitted["status_url"], headers=_auth(keys, "quinn")).json()["status"] == "IN_PROGRESS"
    finally:
        holder.join()

    done = wait_until(lambda: (r := http.get(submitted["response_url"], headers=_auth(keys, "quinn"))).status_code
                      == 200 and r, "the request's outcome to be recorded", timeout=30, every=0.2)
    assert done.json()["label"] == "during-the-lock"
    with Registry().engine.connect() as conn:
        row = conn.execute(select(requests_table).where(requests_table.c.id == submitted["request_id"])).one()
        refused = conn.execute(select(requests_table).where(requests_table.c.payload.contains("refused"))).all()
    assert row.status == "COMPLETED" and row.attempts == 1
    assert refused == []  # the 503 stored nothing
    time.sleep(2)
    with Registry().engine.connect() as conn:
        again = conn.execute(select(requests_table.c.status, requests_table.c.attempts)
                             .where(requests_table.c.id == submitted["request_id"])).one()
    assert tuple(again) == ("COMPLETED", 1)
