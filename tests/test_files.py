"""Files and images apps return are stored and served at /files/..., with the key rules of
the app that made them; uploads become inputs; names cannot escape the store; files expire."""

import io
import json
import os
import time
from pathlib import Path

from PIL import Image as PILImage

from helpers import APPS, deployed, wait_until


def _png(data: bytes) -> PILImage.Image:
    picture = PILImage.open(io.BytesIO(data))
    assert picture.format == "PNG"
    return picture


def _auth(keys: dict, user: str) -> dict:
    return {"authorization": f"Key {keys[user]}"}


def test_image_outputs_are_urls_on_the_platform(cli, http, base_url) -> None:
    deployed(cli, f"{APPS}/images.py::Painter", "--user", "erin")
    image = http.post("/erin/painter/", json={"width": 20, "height": 10}).json()["image"]
    assert image["url"].startswith(f"{base_url}/files/") and image["url"].endswith(".png")  # fal names it
    assert (image["width"], image["height"], image["content_type"]) == (20, 10, "image/png")
    fetched = http.get(image["url"])  # a public app's outputs are public
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert _png(fetched.content).size == (20, 10) and len(fetched.content) == image["file_size"]

    in_memory = http.post("/erin/painter/in-memory", json={}).json()["image"]
    assert in_memory["url"].startswith("data:image/png;base64,")


def test_private_apps_files_need_the_owners_key(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/images.py::Painter", "--user", "frank", "--auth", "private")
    image = http.post("/frank/painter/", json={}, headers=_auth(keys, "frank")).json()["image"]
    assert http.get(image["url"]).status_code == 401
    assert http.get(image["url"], headers=_auth(keys, "erin")).status_code == 403
    assert _png(http.get(image["url"], headers=_auth(keys, "frank")).content).size == (8, 6)
    # An admin's key is a user's key here: it reads no other user's private files (nor calls private apps).
    admin = {"authorization": "Key " + (Path(os.environ["TENANTSERVE_HOME"]) / "credentials").read_text().strip()}
    assert http.get(image["url"], headers=admin).status_code == 403
    assert http.post("/frank/painter/", json={}, headers=admin).status_code == 403


def test_another_tenants_private_file_is_refused_as_an_app_input(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/images.py::Painter", "--user", "frank", "--app-name", "secret-painter", "--auth", "private")
    deployed(cli, f"{APPS}/images.py::Painter", "--user", "frank", "--app-name", "shared-viewer", "--auth", "shared")
    deployed(cli, f"{APPS}/images.py::Painter", "--user", "frank", "--app-name", "open-viewer", "--auth", "public")
    private_url = http.post("/frank/secret-painter/", json={}, headers=_auth(keys, "frank")).json()["image"]["url"]
    look = {"image": {"url": private_url}}
    through_shared = http.post("/frank/shared-viewer/look", json=look, headers=_auth(keys, "erin"))
    assert through_shared.status_code == 403, through_shared.text
    assert "not readable by the caller" in through_shared.json()["detail"]
    assert http.post("/frank/open-viewer/look", json=look).status_code == 403
    assert http.post("/frank/open-viewer/look", json=look, headers=_auth(keys, "erin")).status_code == 403
    # Through the queue too: the request runs with its submitter's rights.
    submitted = http.post("/queue/frank/open-viewer/look", json=look).json()
    result = wait_until(lambda: (r := http.get(submitted["response_url"])).status_code != 400 and r, "the queued look")
    assert result.status_code == 403
    # The owner passes their own file to their own apps.
    assert http.post("/frank/shared-viewer/look", json=look, headers=_auth(keys, "frank")).json()["width"] == 8
    assert http.post("/frank/open-viewer/look", json=look, headers=_auth(keys, "frank")).json()["width"] == 8


def test_file_names_cannot_be_guessed_or_escape_the_store(http, cluster) -> None:
    home = Path(os.environ["TENANTSERVE_HOME"])
    assert (home / "registry.db").exists()
    for path in ("/files/../registry.db", "/files/..%2Fregistry.db/x", "/files/%2E%2E/%2E%2E/registry.db",
                 "/files/" + "A" * 32 + "/x", "/files/" + "." * 32 + "/registry.db", "/files//etc/passwd"):
        answer = http.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert b"SQLite" not in answer.content


def test_uploads_become_app_inputs_and_expire(cli, http, keys) -> None:
    deployed(cli, f"{APPS}/images.py::Painter", "--user", "erin", "--app-name", "viewer")
    picture = io.BytesIO()
    PILImage.new("RGB", (5, 3), "#0000ff").save(picture, format="PNG")
    assert http.post("/files/upload", content=picture.getvalue()).status_code == 401
    uploaded = http.post("/files/upload", content=picture.getvalue(),
                         headers={**_auth(keys, "grace"), "content-type": "image/png", "x-fal-file-name": "../in.png"}).json()
    assert uploaded["file_name"] == "in.png" and uploaded["file_size"] == len(picture.getvalue())
    # An app reads an input file with its caller's rights: the uploader's key, not none.
    assert http.post("/erin/viewer/look", json={"image": {"url": uploaded["url"]}},
                     headers=_auth(keys, "grace")).json() == {"width": 5, "height": 3, "color": [0, 0, 255]}
    text = http.post("/files/upload", content=b"hello", headers={**_auth(keys, "grace"), "content-type": "text/plain"})
    upper = http.post("/erin/viewer/upper", json={"file": {"url": text.json()["url"]}},
                      headers=_auth(keys, "grace")).json()["file"]
    assert http.get(upper["url"]).content == b"HELLO"
    assert http.get(uploaded["url"]).status_code == 401  # uploads are private to the uploader over HTTP

    lifetime = {"x-fal-object-lifecycle-preference": json.dumps({"expiration_duration_seconds": 1})}
    short = http.post("/files/upload", content=b"gone soon", headers={**_auth(keys, "grace"), **lifetime}).json()
    assert http.get(short["url"], headers=_auth(keys, "grace")).content == b"gone soon"
    file_id = short["url"].split("/files/", 1)[1].split("/")[0]
    stored = Path(os.environ["TENANTSERVE_HOME"]) / "files" / file_id
    assert stored.exists()
    time.sleep(1.5)
    assert http.get(short["url"], headers=_auth(keys, "grace")).status_code == 404
    assert not stored.exists()
