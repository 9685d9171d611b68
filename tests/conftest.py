"""One real local Ray cluster with Serve for the whole test session, started by `platform up`.

The node advertises a fake A100 (`--num-gpus=1` plus the `accelerator_type:A100`
resource), so GPU placement is tested without a GPU.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import httpx
import pytest
from click.testing import CliRunner, Result

# Nothing in the test process may quietly start a second, private Ray instance (Ray reads
# this when it is first imported).
os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the session's cluster is a `cluster` test (the slow tier); those
    that start platforms of their own say so with `pytest.mark.cluster` themselves.
    `pytest -m "not cluster"` runs the rest, with no Ray cluster at all."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


from helpers import POSTGRES, RetryingTransport, free_port, platform_cmd, remove_image_containers  # noqa: E402

DOWNLOAD_PORT = free_port()  # the one local port the session's runners may download from


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("tenantserve-home")
    os.environ["TENANTSERVE_HOME"] = str(home)
    os.environ.pop("RAY_ADDRESS", None)
    http_port = free_port()
    # The operator's settings, read where the platform runs (its control plane deploys):
    # a file the autoscaler tests write node groups into, and a local host runners may
    # download from (fal refuses private addresses). The node is in region `local` (Ray's
    # region label, which apps' `regions` select).
    operator = {"TENANTSERVE_AUTOSCALER_CONFIG": str(home / "ray_bootstrap_config.yaml"),
                "TENANTSERVE_DOWNLOAD_HOSTS": f"127.0.0.1:{DOWNLOAD_PORT}", "RAY_NODE_REGION": "local"}
    platform_cmd(
        "up", f"--port={free_port()}", f"--http-port={http_port}", f"--dashboard-port={free_port()}",
        "--num-cpus=8", "--num-gpus=1", "--resources", json.dumps({"accelerator_type:A100": 1}), env=operator,
    )
    info = {**json.loads((home / "cluster.json").read_text()), "autoscaler_config": operator["TENANTSERVE_AUTOSCALER_CONFIG"],
            "download_port": DOWNLOAD_PORT}
    from tenantserve.platform.cluster.ray_cluster import connect

    connect(start=False)  # this process's Ray and Serve calls go to the session's cluster, never a new one
    try:
        yield info
    finally:
        from tenantserve.platform.cluster.ray_cluster import down

        down()
        remove_image_containers(home)


@pytest.fixture(scope="session")
def base_url(cluster: dict) -> str:
    return cluster["http_url"]


@pytest.fixture(scope="session")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60, transport=RetryingTransport()) as client:
        yield client


TEST_USERS = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    "ivan", "judy", "kim", "lena", "mia", "olga", "petra", "quinn", "rita", "sam", "remote", "tina", "uma",
    "vera", "walt", "xena", "yara",
)


@pytest.fixture(scope="session")
def keys(cluster: dict) -> dict[str, str]:
    """The test users, created by the bootstrap admin (this process), and one key each."""
    from tenantserve.cli.main import cli as platform_cli

    runner = _ShowingRunner()
    created = {}
    for name in TEST_USERS:
        result = runner.invoke(platform_cli, ["users", "create", name], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        created[name] = result.output.strip().splitlines()[-1]
    return created


class _ShowingRunner(CliRunner):
    """Writes what a command printed to the real stderr when it is cut off (a test's
    timeout), so that the failure shows where a deploy was waiting."""

    @contextmanager
    def isolation(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with super().isolation(*args, **kwargs) as streams:
            try:
                yield streams
            except BaseException:
                sys.__stderr__.write(streams[-1].getvalue().decode(errors="replace"))
                raise


@pytest.fixture(scope="session")
def cli(cluster: dict, keys: dict[str, str]):
    """Invoke the `platform` CLI in this process (sharing its Ray connection), as the admin
    unless `as_user` names a test user."""
    from tenantserve.cli.main import cli as platform_cli

    runner = _ShowingRunner()

    def invoke(*args: str, as_user: str | None = None) -> Result:
        env = {"TENANTSERVE_KEY": keys[as_user]} if as_user else None
        return runner.invoke(platform_cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL server, for one test module."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = f"tenantserve_{uuid.uuid4().hex[:10]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # no driver, no server, no rights
        print(f"PostgreSQL registry tests skipped: {POSTGRES} unusable: {error}")
        pytest.skip(f"no PostgreSQL server usable at {POSTGRES}: {error}")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The registry on each database the platform supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")
