"""fal SDK features of apps written for fal, served by fal's own SDK in the app's runner."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import msgpack
from websockets.sync.client import connect

from helpers import APPS, deployed, running_replicas, wait_until


class _Weights(BaseHTTPRequestHandler):
    served: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        _Weights.served.append(self.path)
        body = b"tiny weights"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_fal_features_work_as_on_fal(cli, http, base_url, tmp_path, cluster) -> None:
    # On the one local host and port the session's platform lets runners download from
    # (TENANTSERVE_DOWNLOAD_HOSTS: fal refuses private addresses).
    server = ThreadingHTTPServer(("127.0.0.1", cluster["download_port"]), _Weights)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    app_file = tmp_path / "features.py"
    app_file.write_text((APPS / "fal_features.py").read_text().replace("http://127.0.0.1:1/", f"http://127.0.0.1:{port}/"))
    try:
        deployed(cli, f"{app_file}::Features", "--user", "tina")

        assert http.post("/tina/features/size", json={}).json() == {"width": 1024, "height": 1024}
        assert http.post("/tina/features/size", json={"image_size": "landscape_16_9"}).json() == {"width": 1024, "height": 576}
        assert http.post("/tina/features/size", json={"image_size": {"width": 64, "height": 32}}).json() == {"width": 64, "height": 32}
        assert http.post("/tina/features/size", json={"image_size": "huge"}).status_code == 422
        refused = http.post("/tina/features/size", json={"image_size": {"width": 14000, "height": 14000}})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "image_size"]  # fal's FieldException shape

        seen_request = http.post("/tina/features/request", headers={"x-probe": "hi"})
        assert seen_request.json() == {"probe": "hi", "cookie": None, "request_id": seen_request.headers["x-fal-request-id"]}
        # The app's answer reaches its caller as it gave it: a redirect is not followed on
        # the way, and its cookie goes to that caller only, not to the next one.
        moved = httpx.post(f"{base_url}/tina/features/moved")
        assert moved.status_code == 307 and moved.headers["location"] == "/elsewhere" and "session=" in moved.headers["set-cookie"]
        utf8 = "résumé".encode()
        seen = httpx.post(f"{base_url}/tina/features/request", headers={b"x-probe": utf8}).json()
        assert seen["cookie"] is None and seen["probe"] == utf8.decode("latin-1")  # the bytes as sent

        video = http.post("/tina/features/video").json()
        assert video["content_type"] == "video/mp4" and video["url"].startswith(base_url + "/files/")
        assert http.get(video["url"]).content.startswith(b"\x00\x00\x00\x18ftyp")

        with connect(base_url.replace("http://", "ws://") + "/tina/features/realtime") as socket:
            socket.send(msgpack.packb({"index": 21}))
            assert msgpack.unpackb(socket.recv(timeout=10)) == {"index": 42}

        assert http.post("/tina/features/healthy").json() == {"ok": True}

        first = http.post("/tina/features/weights").json()
        assert first["bytes"] == "tiny weights" and first["path"].startswith("/data/")
        assert cli("apps", "scale", "features", "--min-concurrency", "2", "--user", "tina").exit_code == 0
        wait_until(lambda: running_replicas("tina.features") == 2, "a second replica", timeout=90, every=0.5)
        seen = {}
        deadline = time.monotonic() + 30  # the router learns of the new replica a little later
        while len(seen) < 2 and time.monotonic() < deadline:
            answer = http.post("/tina/features/weights").json()
            seen[answer["instance"]] = answer
        assert len(seen) == 2 and {a["path"] for a in seen.values()} == {first["path"]}
        assert _Weights.served.count("/weights.bin") == 1  # the second replica found them in /data
    finally:
        server.shutdown()
        cli("apps", "delete", "features", "--user", "tina")
