"""fal's own toolkit, unmodified, on the platform's file store (no cluster needed): what an
app's `File`/`Image` outputs become, and how its runner reads the platform's file URLs,
through the replica's side of the control socket."""

import asyncio
import io
import threading
import urllib.error
import urllib.request

import pytest
from PIL import Image as PILImage

from tenantserve.adapters.fal.files_socket import FilesSocket
from tenantserve.platform.runtime.storage import AppStorage, FileStore
from tenantserve_runner import files as runner_files
from tenantserve_runner.logs import current_request

PUBLIC_URL = "http://platform.test:8000"


@pytest.fixture()
def platform_store(tmp_path, monkeypatch):
    """A replica's file socket for alice's private app, served from a thread's event loop."""
    store = FileStore(str(tmp_path / "files"))
    storage = AppStorage(store, PUBLIC_URL, "alice", "private")
    callers: dict = {}
    socket_path = tmp_path / "control.sock"
    loop = asyncio.new_event_loop()
    server = FilesSocket(storage, callers, default_caller="alice")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(socket_path), loop).result(10)
    monkeypatch.setenv("TENANTSERVE_CONTROL_SOCKET", str(socket_path))
    monkeypatch.setenv(runner_files.FILES_URL_VAR, PUBLIC_URL + "/files")
    runner_files.install()
    yield store, callers
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    urllib.request.install_opener(None)


def test_toolkit_outputs_become_platform_files(platform_store) -> None:
    from fal.toolkit import File, Image

    store, _ = platform_store
    made = File.from_bytes(b"hello", content_type="text/plain", file_name="hi.txt")
    assert made.url.startswith(PUBLIC_URL + "/files/") and made.url.endswith("/hi.txt")
    stored = store.find(made.url.split("/")[-2])
    assert (stored.owner, stored.auth, store.read(stored)) == ("alice", "private", b"hello")

    image = Image.from_pil(PILImage.new("RGB", (12, 7), "#00ff00"))
    assert (image.width, image.height, image.content_type) == (12, 7, "image/png")
    png = store.read(store.find(image.url.split("/")[-2]))
    assert PILImage.open(io.BytesIO(png)).getpixel((0, 0)) == (0, 255, 0)


def test_platform_file_urls_are_read_with_the_callers_rights(platform_store, tmp_path) -> None:
    from fal.exceptions import AppException
    from fal.toolkit import File, Image
    from fal.toolkit.utils.download_utils import DownloadError, download_file

    store, callers = platform_store
    private = File.from_bytes(b"alice only", content_type="text/plain", file_name="secret.txt")
    callers.update({"req-alice": "alice", "req-bob": "bob"})

    token = current_request.set("req-alice")
    try:
        opened = urllib.request.urlopen(private.url)
        assert opened.read() == b"alice only"
        assert opened.headers["Content-Type"] == "text/plain"  # the type it was stored with
    finally:
        current_request.reset(token)

    token = current_request.set("req-bob")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(private.url)
        assert refused.value.code == 403
        with pytest.raises(DownloadError) as refused_download:  # fal wraps what its fetcher raised
            download_file(private.url, "/tmp/tenantserve-test-downloads")
        assert refused_download.value.__cause__.status_code == 403
        with pytest.raises(AppException) as refused_image:  # as an endpoint's error: the caller's 403
            Image(url=private.url).to_pil()
        assert refused_image.value.status_code == 403
    finally:
        current_request.reset(token)

    token = current_request.set("req-alice")  # fal's own fetchers: download_file, Image.to_pil
    try:
        assert download_file(private.url, str(tmp_path / "downloads")).read_bytes() == b"alice only"
        picture = Image.from_pil(PILImage.new("RGB", (3, 2), "#0000ff"))
        assert Image(url=picture.url).to_pil().getpixel((0, 0)) == (0, 0, 255)
    finally:
        current_request.reset(token)

    # A request the replica is not serving (one that ended, or an id the app made up) reads
    # with no one's rights; only work outside requests (setup(), the app's threads) has the owner's.
    token = current_request.set("req-ended-or-made-up")
    try:
        with pytest.raises(urllib.error.HTTPError) as unknown:
            urllib.request.urlopen(private.url)
        assert unknown.value.code == 403
    finally:
        current_request.reset(token)
    assert urllib.request.urlopen(private.url).read() == b"alice only"  # no request: the owner's own work

    missing = PUBLIC_URL + "/files/0123456789abcdef/gone.txt"
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(missing)
    assert gone.value.code == 404
