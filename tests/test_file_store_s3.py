"""The file store on an S3-compatible bucket (TENANTSERVE_STORAGE=s3://bucket/prefix) as on
local disk: stored, found by id, read, expired. The bucket is a real S3 API served by moto
on 127.0.0.1, reached through s3fs and botocore like a real one."""

import time

import pytest

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

from tenantserve.platform.runtime.storage import FileStore, file_id_of  # noqa: E402

from helpers import free_port  # noqa: E402


@pytest.fixture()
def bucket(monkeypatch):
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("outputs")
    yield "s3://outputs/tenantserve"
    server.stop()


def test_files_live_in_an_s3_bucket(bucket, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TENANTSERVE_STORAGE", bucket)
    store = FileStore.configured(tmp_path)
    assert store.root == bucket and not (tmp_path / "files").exists()
    stored = store.put(b"\x89PNG fake", owner="alice", auth="private", content_type="image/png",
                       file_name="../../out.png")
    assert stored.file_name == "out.png"
    assert sorted(s3fs.S3FileSystem().ls("outputs/tenantserve")) == [
        f"outputs/tenantserve/{stored.id}", f"outputs/tenantserve/{stored.id}.json"]
    found = store.find(stored.id)
    assert found == stored and store.read(found) == b"\x89PNG fake"
    url = "http://127.0.0.1:8000" + stored.path()
    assert file_id_of(url, "http://127.0.0.1:8000") == stored.id
    assert store.find("../" + stored.id[3:]) is None

    brief = store.put(b"soon gone", owner="alice", auth="public", content_type="text/plain", file_name="x",
                      ttl_s=0.5)
    time.sleep(1)
    assert store.sweep() == 1
    assert store.find(brief.id) is None and store.find(stored.id) == stored
    assert not s3fs.S3FileSystem().exists(f"outputs/tenantserve/{brief.id}")
