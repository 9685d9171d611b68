"""The multi-node configs the README points to: `ray up ray-cluster.yaml` and KubeRay, and
deploys onto an autoscaling cluster whose GPU group has no node yet."""

import json
import shlex
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tenantserve.platform.cluster.ray_cluster import node_env

from helpers import APPS, ROOT


def test_ray_up_config_is_valid_and_autoscales_a100_workers_from_zero() -> None:
    config = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's own schema for `ray up`
    gpu = config["available_node_types"]["gpu-a100"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["accelerator_type:A100"] == 1
    assert any("tenantserve" in command for command in config["setup_commands"])
    assert any("serve start --http-host 0.0.0.0" in command for command in config["head_start_ray_commands"])
    # Every node starts as `platform up` starts its own: the same Serve settings, the same plugins.
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        settings = dict(word.split("=", 1) for word in shlex.split(start) if "=" in word and word[0].isupper())
        assert settings == node_env()


def test_kuberay_manifest_has_a_cpu_head_and_a_gpu_group_from_zero() -> None:
    cluster, service = yaml.safe_load_all((ROOT / "deploy/kuberay/raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["rayVersion"] == "2.60.0"
    head = cluster["spec"]["headGroupSpec"]
    head_env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    assert head["rayStartParams"]["num-gpus"] == "0" and head_env["TENANTSERVE_HTTP_HOST"]["value"] == "0.0.0.0"
    assert head_env["TENANTSERVE_DB"]["valueFrom"]["secretKeyRef"]["name"] == "tenantserve-db"
    group = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-a100")
    worker_env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
    for env in (head_env, worker_env):
        assert {name: env[name]["value"] for name in node_env()} == node_env()
    assert group["minReplicas"] == 0
    assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {"accelerator_type:A100": 1}
    assert service["spec"]["ports"][0]["port"] == 8000


def test_gpu_app_waits_for_an_autoscaler_group_instead_of_being_refused(cli, cluster) -> None:
    bootstrap = Path(cluster["autoscaler_config"])  # where the session's platform reads node groups
    bootstrap.write_text(yaml.safe_dump({
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 8}, "max_workers": 0},
            "gpu-h100": {"resources": {"CPU": 32, "GPU": 8, "accelerator_type:H100": 1}, "min_workers": 0,
                         "max_workers": 2},
        },
    }))
    try:
        result = cli("deploy", f"{APPS}/gpu.py::WaitsForH100", "--user", "quinn", "--auth", "public")
    finally:
        bootstrap.unlink()
    assert result.exit_code == 1
    assert "waiting for the autoscaler to add a node of gpu-h100" in result.output
    assert "no node" not in result.output
