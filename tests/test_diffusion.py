"""A real diffusers pipeline through the platform on CPU: a tiny Stable Diffusion built
from configs with random weights, saved with `save_pretrained`, loaded by the example app
with `from_pretrained`, and answered as a PNG on `/files`. And the node's model cache,
shared by replicas and read offline by hub id."""

import io
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from helpers import ROOT, deployed

sys.path.insert(0, str(ROOT / "examples"))
from tiny_pipeline import build  # noqa: E402


@pytest.fixture(scope="module")
def model_cache(cluster) -> Path:
    cache = Path(os.environ["TENANTSERVE_HOME"]) / "cache" / "users" / "heidi"  # /data in heidi's runners
    build(cache / "tiny-sd")
    return cache


def test_tiny_pipeline_app_returns_a_fetchable_png(cli, http, model_cache) -> None:
    deployed(cli, str(ROOT / "examples/tiny_diffusion.py::TinyDiffusion"), "--user", "heidi")
    answer = http.post("/heidi/tiny-diffusion/", json={"prompt": "a red fox", "width": 64, "height": 48})
    assert answer.status_code == 200, answer.text
    image = answer.json()["image"]
    assert (image["width"], image["height"], image["content_type"]) == (64, 48, "image/png")
    png = PILImage.open(io.BytesIO(http.get(image["url"]).content))
    assert png.format == "PNG" and png.size == (64, 48)
    # The same seed gives the same image: the pipeline, not a canned answer, made it.
    again = http.post("/heidi/tiny-diffusion/", json={"prompt": "a red fox", "width": 64, "height": 48}).json()
    assert http.get(again["image"]["url"]).content == http.get(image["url"]).content
    other = http.post("/heidi/tiny-diffusion/", json={"prompt": "a red fox", "width": 64, "height": 48, "seed": 1})
    assert http.get(other.json()["image"]["url"]).content != http.get(image["url"]).content


def test_replicas_share_the_nodes_model_cache_offline(cli, http, model_cache) -> None:
    # Pre-fill the cache as an air-gapped cluster would: the hub's layout, one snapshot.
    repo = model_cache / ".cache" / "huggingface" / "hub" / "models--tenantserve-tests--tiny-sd"
    revision = "0" * 40
    shutil.copytree(model_cache / "tiny-sd", repo / "snapshots" / revision, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    assert cli("secrets", "set", "HF_HUB_OFFLINE=1", as_user="heidi").exit_code == 0

    deployed(cli, str(ROOT / "tests/apps/cached_weights.py::CachedWeights"), "--user", "heidi")
    seen = {}
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:  # two replicas behind one URL
        answer = http.post("/heidi/cached-weights/").json()
        seen[answer["instance"]] = answer
    assert len(seen) == 2
    first, second = seen.values()
    assert first["hf_home"] == second["hf_home"] == "/data/.cache/huggingface"
    assert first["snapshot"] == second["snapshot"] == f"/data/.cache/huggingface/hub/{repo.name}/snapshots/{revision}"
    assert first["offline"] == "1"
    assert [p.name for p in (repo / "snapshots").iterdir()] == [revision]  # no second copy
