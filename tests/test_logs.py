"""`platform logs` shows an app's prints and tracebacks, and only to its owner."""

import subprocess
import threading
import time

from helpers import APPS, PLATFORM, deployed, laptop_env


def _logs(cli, *args: str, user: str = "mia", expect: tuple[str, ...] = (), timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:  # Serve flushes replica logs in batches
        result = cli("logs", *args, as_user=user)
        if all(text in result.output for text in expect) or time.monotonic() > deadline:
            return result.output
        time.sleep(1)


def test_logs_show_prints_and_tracebacks_to_the_owner(cli, http) -> None:
    deployed(cli, f"{APPS}/chatty.py::Chatty", "--user", "mia")
    assert http.post("/mia/chatty/", headers={"x-request-id": "req-talk-1"}).status_code == 200
    failed = http.post("/mia/chatty/fail")
    assert failed.status_code == 500

    everything = _logs(cli, "chatty", expect=("loading the weights", "KeyError: 'missing-tensor'", "POST /mia/chatty 500"))
    assert "loading the weights" in everything  # setup()'s print
    assert "handling a request" in everything
    assert "this model is deprecated" in everything
    assert "KeyError: 'missing-tensor'" in everything and "chatty.py" in everything
    assert "Exception in ASGI application" not in everything  # the traceback once, with its request
    line = next(l for l in everything.splitlines() if "handling a request" in l)
    assert line[:4].isdigit() and len(line.split()[2]) == 8  # time, then the replica id

    one_request = _logs(cli, "chatty", "--request", "req-talk-1", expect=("handling a request",))
    assert "handling a request" in one_request and "missing-tensor" not in one_request
    time.sleep(2)
    assert "loading the weights" not in _logs(cli, "chatty", "--since", "1s")

    refused = cli("logs", "mia/chatty", as_user="bob")
    assert refused.exit_code == 1 and "bob cannot act as mia" in refused.output


def test_logs_follow_streams_lines_as_they_come(cli, http, keys, base_url, tmp_path) -> None:
    """`platform logs --follow` from a shell with only the URL and a key: new lines arrive on the open stream."""
    deployed(cli, f"{APPS}/chatty.py::Chatty", "--user", "mia")
    follower = subprocess.Popen([PLATFORM, "logs", "chatty", "--follow", "--since", "1s"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=laptop_env(base_url, keys["mia"], tmp_path))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any("handling a request" in line for line in lines) and time.monotonic() < deadline:
            assert follower.poll() is None, "".join(lines)
            http.post("/mia/chatty/")
            time.sleep(1)
        assert any("handling a request" in line for line in lines), "".join(lines)
        assert follower.poll() is None  # still following
    finally:
        follower.kill()
        follower.wait()
