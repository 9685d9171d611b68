"""What tests share besides fixtures: where the test apps are, ports, waiting, the
`platform` command as a user runs it, and looks at the session's cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import httpx
from click.testing import Result

# The PostgreSQL server the registry tests use (the machine's, trust auth); skipped without one.
POSTGRES = os.environ.get("TENANTSERVE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

def serve_connected() -> Any:
    """Ray Serve's API, on the session's cluster: this process connects to it first, so that
    no Serve call starts a private Ray instance of its own."""
    from tenantserve.platform.cluster.ray_cluster import connect

    connect(start=False)
    from ray import serve

    return serve


def running_replicas(app_name: str) -> int:
    """Replicas of a Serve app that run or are starting (0 for an app Serve does not have)."""
    app = serve_connected().status().applications.get(app_name)
    if app is None:
        return 0
    return sum(n for d in app.deployments.values() for state, n in d.replica_states.items()
               if state in ("RUNNING", "STARTING"))


def replica_pids(app_name: str) -> list[int]:
    """The processes of a Serve app's live replicas: the Ray workers, not their runners."""
    serve_connected()
    from ray.util.state import list_actors

    from tenantserve.platform.cluster.ray_cluster import state_api_address

    actors = list_actors(address=state_api_address(), filters=[("state", "=", "ALIVE")], limit=10_000)
    return [a.pid for a in actors if (a.name or "").startswith(f"SERVE_REPLICA::{app_name}#")]


def runner_pids(app_name: str) -> list[int]:
    """The app's runners: the interpreters, inside their sandboxes, that its replicas started."""
    replicas = set(replica_pids(app_name))
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tenantserve_runner" not in b" ".join(argv) or argv[0].endswith(b"bwrap"):
            continue
        ancestor = int(pid)
        while ancestor > 1 and ancestor not in replicas:
            try:
                ancestor = int(Path(f"/proc/{ancestor}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
        if ancestor in replicas:
            found.append(int(pid))
    return found


PLATFORM = str(Path(sys.executable).parent / "platform")


def laptop_env(base_url: str, key: str, home: Path) -> dict[str, str]:
    """A shell on another machine: the platform's URL and a key, nothing of this one's."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "TENANTSERVE_URL": base_url, "TENANTSERVE_KEY": key}


def laptop_cli(env: dict[str, str], timeout: float = 600) -> Callable[..., str]:
    """`platform(*args, ok=True)` in that shell: its output, asserting how it exited."""

    def platform(*args: str, ok: bool = True) -> str:
        result = subprocess.run([PLATFORM, *args], capture_output=True, text=True, env=env, timeout=timeout)
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result.stdout + result.stderr

    return platform


class CuttingProxy:
    """A TCP proxy to the platform that cuts every connection whose request starts with
    `cut_request` once the answer has carried `cut_after`: a proxy reload or a dropped
    laptop connection in the middle of a streamed answer."""

    def __init__(self, base_url: str, cut_request: bytes, cut_after: bytes) -> None:
        import socket
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(base_url)
        self._target = (target.hostname, target.port)
        self.cut_request, self.cut_after, self.cuts = cut_request, cut_after, 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: Any, upstream: Any) -> None:
        import select

        cutting, answered = False, b""
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 120)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        cutting = cutting or data.startswith(self.cut_request)
                        upstream.sendall(data)
                        continue
                    client.sendall(data)
                    answered += data
                    if cutting and self.cut_after in answered:
                        self.cuts += 1
                        return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._server.close()

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


T = TypeVar("T")


def wait_until(check: Callable[[], Optional[T]], what: str, timeout: float = 90, every: float = 1) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def platform_cmd(
    *args: str, timeout: float = 300, check: bool = True, env: Optional[dict[str, str]] = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `platform` console script as a user would."""
    exe = shutil.which("platform") or str(Path(sys.executable).parent / "platform")
    result = subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"platform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


class RetryingTransport(httpx.HTTPTransport):
    """Sends a request again, once, when its pooled connection closed before any answer:
    HAProxy closes idle connections at each reload (README, "Ingress"), and fal_client
    retries such transport errors the same way."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.RemoteProtocolError:
            return super().handle_request(request)


def deployed(cli, ref: str, *extra: str) -> Result:
    """Deploy through the CLI and assert it worked; public unless `extra` sets --auth."""
    auth = () if "--auth" in extra else ("--auth", "public")
    result = cli("deploy", str(APPS / ref) if "/" not in ref else ref, *extra, *auth)
    assert result.exit_code == 0, result.output
    return result


TEST_BASE_IMAGE = "tenantserve-test-base"


def ensure_test_base_image() -> None:
    """The local base image the container app tests build on (no registry is reachable):
    a minimal Debian root with Python, made with debootstrap from Debian's packages and
    imported into buildah's store once per machine."""
    if subprocess.run(["buildah", "inspect", "--type", "image", TEST_BASE_IMAGE], capture_output=True).returncode == 0:
        return
    root = Path(tempfile.mkdtemp(prefix="tenantserve-debian-"))
    try:
        subprocess.run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root / "rootfs"),
                        "http://deb.debian.org/debian"], check=True, capture_output=True, timeout=900)
        subprocess.run(["tar", "-C", str(root / "rootfs"), "-cf", str(root / "rootfs.tar"), "."], check=True)
        container = subprocess.run(["buildah", "from", "scratch"], check=True, capture_output=True,
                                   text=True).stdout.strip()
        try:
            subprocess.run(["buildah", "add", container, str(root / "rootfs.tar"), "/"], check=True,
                           capture_output=True)
            subprocess.run(["buildah", "commit", container, TEST_BASE_IMAGE], check=True, capture_output=True)
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def remove_image_containers(home: Path) -> None:
    """Unmount and remove the working containers that container apps left in each owner's
    image store under a platform's home (their mounts would outlive the test's folder)."""
    for conf in (home / "images" / "stores").glob("*/storage.conf"):
        subprocess.run(["buildah", "rm", "--all"], env={**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)},
                       capture_output=True)
    inside = str(home.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(inside)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)  # the store's own overlay home
