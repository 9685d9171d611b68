"""The official `fal_client`, unmodified, as a client of the platform: only FAL_RUN_HOST,
FAL_QUEUE_RUN_HOST, FAL_KEY and a CA file change. fal_client speaks only HTTPS, so this
runs a platform of its own with a certificate for 127.0.0.1 from a throwaway CA."""

import datetime
import ipaddress
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import APPS, free_port, platform_cmd

pytestmark = pytest.mark.cluster  # it starts platforms of its own


def _write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tenantserve test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_platform(tmp_path_factory, cluster):
    folder = tmp_path_factory.mktemp("tls-platform")
    ca, cert, key = _write_certificates(folder)
    # No SSL_CERT_FILE for the CLI: it verifies the platform against the CA `up` recorded.
    env = {"TENANTSERVE_HOME": str(folder / "home"), "TENANTSERVE_USER": "falu"}
    port = free_port()
    up = platform_cmd("up", f"--port={free_port()}", f"--http-port={port}", f"--dashboard-port={free_port()}",
                      "--num-cpus=4", "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca), env=env)
    assert f"https://127.0.0.1:{port} (haproxy)" in up.stdout  # HAProxy terminates TLS: the fast path
    try:
        platform_cmd("deploy", f"{APPS}/queued.py::Worker", env=env)
        platform_cmd("deploy", f"{APPS}/streaming.py::Talker", env=env)
        yield {"port": port, "ca": str(ca), "cert": str(cert), "key": (folder / "home" / "credentials").read_text().strip()}
    finally:
        platform_cmd("down", check=False, env=env)


CLIENT_SCRIPT = textwrap.dedent("""
    import json, time
    import fal_client

    out = {}
    out["run"] = fal_client.run("falu/worker", arguments={"label": "run"})
    handle = fal_client.submit("falu/worker", arguments={"label": "submitted", "seconds": 1})
    out["first_status"] = type(handle.status()).__name__
    out["result"] = handle.get()
    out["status_with_logs"] = [log["message"] for log in handle.status(with_logs=True).logs]
    out["fetched"] = fal_client.result("falu/worker", handle.request_id)

    busy = fal_client.submit("falu/worker", arguments={"label": "busy", "seconds": 3})
    waiting = fal_client.submit("falu/worker", arguments={"label": "waiting"})
    out["waiting_status"] = type(fal_client.status("falu/worker", waiting.request_id)).__name__
    fal_client.cancel("falu/worker", waiting.request_id)
    try:
        waiting.get()
        out["cancelled"] = "not raised"
    except fal_client.FalClientHTTPError as error:
        out["cancelled"] = error.status_code
    updates = []
    out["subscribed"] = fal_client.subscribe(
        "falu/worker", arguments={"label": "subscribed", "seconds": 0.5}, with_logs=True,
        on_queue_update=lambda update: updates.append(type(update).__name__), interval=0.1)
    out["updates"] = sorted(set(updates))
    out["stream"] = list(fal_client.stream("falu/talker", arguments={"text": "streamed over tls"}))
    print(json.dumps(out))
""")


def test_official_fal_client_runs_submits_subscribes_and_streams(tls_platform) -> None:
    done = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], env=_client_env(tls_platform), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["run"]["label"] == "run"
    assert out["first_status"] in ("Queued", "InProgress")
    assert out["result"]["label"] == "submitted" and out["fetched"] == out["result"]
    assert out["status_with_logs"] == ["working on submitted", "done with submitted"]
    assert out["waiting_status"] == "Queued" and out["cancelled"] == 499
    assert out["subscribed"]["label"] == "subscribed" and "Completed" in out["updates"]
    assert [chunk["text"] for chunk in out["stream"]] == ["streamed", "over", "tls"]


SDK_SCRIPT = textwrap.dedent("""
    import json
    import fal.apps

    out = {"run": fal.apps.run("falu/worker", arguments={"label": "sdk-run"})}
    handle = fal.apps.submit("falu/worker", arguments={"label": "sdk-submitted", "seconds": 0.5})
    out["events"] = sorted({type(event).__name__ for event in handle.iter_events(logs=True)})
    out["result"] = handle.get()
    done = handle.status(logs=True)
    out["done"] = [type(done).__name__, [line["message"] for line in done.logs]]
    busy = fal.apps.submit("falu/worker", arguments={"label": "busy", "seconds": 3})
    waiting = fal.apps.submit("falu/worker", arguments={"label": "waiting"})
    out["waiting"] = type(waiting.status()).__name__
    waiting.cancel()
    out["cancelled"] = waiting.status().error
    out["busy"] = busy.get()["label"]
    out["stream"] = list(fal.apps.stream("falu/talker", arguments={"text": "sdk over tls"}, path="/stream"))
    print(json.dumps(out))
""")


def _client_env(tls_platform: dict) -> dict[str, str]:
    """What a fal client needs to call the platform instead of fal: its hosts, a key, the CA."""
    port = tls_platform["port"]
    return {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
            "FAL_RUN_HOST": f"127.0.0.1:{port}", "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}/queue",
            "FAL_KEY": tls_platform["key"], "SSL_CERT_FILE": tls_platform["ca"]}


def test_fals_own_sdk_client_runs_submits_cancels_and_streams(tls_platform) -> None:
    """`fal.apps` (fal's SDK client, which asks for `.../status/` and `.../requests/<id>/`)."""
    done = subprocess.run([sys.executable, "-c", SDK_SCRIPT], env=_client_env(tls_platform), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["run"]["label"] == "sdk-run" and out["result"]["label"] == "sdk-submitted"
    assert set(out["events"]) <= {"Queued", "InProgress"} and out["events"]
    assert out["done"] == ["Completed", ["working on sdk-submitted", "done with sdk-submitted"]]
    assert out["waiting"] == "Queued" and out["cancelled"] == "Request cancelled" and out["busy"] == "busy"
    assert any("sdk" in line for line in out["stream"])


def test_websockets_and_plain_calls_over_tls(tls_platform) -> None:
    import asyncio
    import ssl

    import httpx
    import websockets

    port, context = tls_platform["port"], ssl.create_default_context(cafile=tls_platform["ca"])
    auth = {"authorization": f"Key {tls_platform['key']}"}
    answer = httpx.post(f"https://127.0.0.1:{port}/falu/talker/echo", json={"text": "hi"}, headers=auth, verify=context)
    assert answer.json() == {"index": 0, "text": "hi"}
    with pytest.raises(httpx.ConnectError):  # a client without the CA refuses the certificate
        httpx.post(f"https://127.0.0.1:{port}/falu/talker/echo", json={"text": "hi"}, headers=auth)

    async def talk() -> dict:
        async with websockets.connect(f"wss://127.0.0.1:{port}/falu/talker/ws", ssl=context,
                                      additional_headers=auth) as socket:
            await socket.send(json.dumps({"text": "over tls"}))
            return json.loads(await socket.recv())

    assert asyncio.run(talk()) == {"echo": "over tls", "length": 8}


def test_a_certificate_that_does_not_verify_fails_the_deploy_saying_how_to_fix_it(tmp_path, monkeypatch) -> None:
    """No cluster: a TLS server with the test CA's certificate, and a deploy's wait for the
    app's health with no CA recorded for it."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    from tenantserve.platform.control import apps

    ca, cert, key = _write_certificates(tmp_path)
    monkeypatch.setenv("TENANTSERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    health = FastAPI()
    health.get("/app/health")(lambda: {"status": "ok", "version": "v1"})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(health, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        with pytest.raises(apps.DeployError) as refused:
            apps._wait_answering(f"https://127.0.0.1:{port}/app", "v1", timeout=10)
        message = str(refused.value)
        assert "did not verify" in message and "--tls-ca" in message and "SSL_CERT_FILE" in message
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # a client that trusts the CA gets its answer
        apps._wait_answering(f"https://127.0.0.1:{port}/app", "v1", timeout=10)
    finally:
        server.should_exit = True
        thread.join(10)
