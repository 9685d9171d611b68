"""Class options are read and checked the way fal users expect (no cluster needed)."""

import pytest

from tenantserve.adapters.fal.bundle import prepare
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.machines import UnplaceableError, actor_options
from tenantserve.adapters.fal.options import OptionsError, kebab_case

from helpers import APPS


def test_seed_example_options() -> None:
    bundle = prepare("examples/sdxl_flash.py::MyApp", owner="alice")
    assert bundle.app_name == "my-app"
    assert bundle.options.keep_alive == 300
    assert bundle.options.machine_type == "GPU-A100"
    assert "diffusers==0.28.0" in bundle.options.requirements
    assert bundle.options.app_auth == "private"


def test_fal_defaults_and_names() -> None:
    assert kebab_case("MyApp") == "my-app"
    assert kebab_case("SDXLFlash") == "sdxl-flash"
    bundle = prepare(f"{APPS}/async_setup.py::AsyncLoader", owner="bob")
    assert bundle.app_name == "async-loader"  # from the `name=` class keyword
    assert (bundle.options.keep_alive, bundle.options.max_multiplexing, bundle.options.min_concurrency) == (60, 1, 0)


def test_misspelled_class_keyword_is_named() -> None:
    with pytest.raises(OptionsError, match=r"unknown option 'keep_alve'.*did you mean 'keep_alive'"):
        prepare(f"{APPS}/bad_options.py::Typo", owner="alice")


def test_misspelled_class_attribute_is_named() -> None:
    with pytest.raises(OptionsError, match=r"'machine_typ'.*did you mean 'machine_type'"):
        prepare(f"{APPS}/bad_options.py::AttributeTypo", owner="alice")


def test_unknown_machine_type() -> None:
    with pytest.raises(UnplaceableError, match="unknown machine_type 'GPU'"):
        prepare(f"{APPS}/bad_options.py::BadMachine", owner="alice")


def test_bad_references(tmp_path) -> None:
    with pytest.raises(AppLoadError, match="no such file"):
        prepare(str(tmp_path / "missing.py"), owner="alice")
    broken = tmp_path / "broken.py"
    broken.write_text("import fal\nclass A(fal.App:\n")
    with pytest.raises(AppLoadError, match="line 2"):
        prepare(f"{broken}::A", owner="alice")
    with pytest.raises(AppLoadError, match=r"no class 'Nope' \(App classes found: Errors, Chat\)"):
        prepare(f"{APPS}/errors.py::Nope", owner="alice")
    with pytest.raises(AppLoadError, match="App classes found: Humanized, NoHumanize"):
        prepare(f"{APPS}/requirements_app.py", owner="alice")


def test_machine_types_map_to_ray_resources() -> None:
    a100 = [{"CPU": 8, "GPU": 1, "accelerator_type:A100": 1}]
    assert actor_options(["GPU-A100"], None, a100) == {"num_cpus": 1.0, "num_gpus": 1, "accelerator_type": "A100"}
    assert actor_options(["GPU-H100", "GPU-A100"], None, a100)["accelerator_type"] == "A100"
    assert actor_options(["S"], None, a100) == {"num_cpus": 0.25}
    with pytest.raises(UnplaceableError, match="no node has accelerator_type:H100"):
        actor_options(["GPU-H100"], None, a100)
    with pytest.raises(UnplaceableError, match="no node has GPU"):
        actor_options(["GPU-A100"], 2, a100)


def test_a_replica_must_fit_one_node_not_the_cluster_sum() -> None:
    # Two GPUs in the cluster, but on two nodes: a two-GPU replica fits neither.
    nodes = [{"CPU": 4, "GPU": 1, "accelerator_type:A100": 1}, {"CPU": 4, "GPU": 1, "accelerator_type:A100": 1}]
    with pytest.raises(UnplaceableError, match="GPU=2"):
        actor_options(["GPU-A100"], 2, nodes)
    # A CPU-only head (num-cpus 0 on KubeRay) and a GPU group the autoscaler can add.
    head, gpu_group = {"CPU": 0}, {"CPU": 8, "GPU": 1, "accelerator_type:A100": 1}
    assert actor_options(["XS"], None, [head, gpu_group]) == {"num_cpus": 0.1}
    with pytest.raises(UnplaceableError, match="no node has CPU"):
        actor_options(["XS"], None, [head])


def test_fal_options_the_platform_does_not_map_fail_naming_them(tmp_path) -> None:
    app = tmp_path / "unmapped.py"
    app.write_text(
        "import fal\n\n"
        "class Imaged(fal.App):\n"
        "    image = fal.ContainerImage.from_dockerfile_str('FROM python:3.11-slim')\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Regional(fal.App, regions=['us-east']):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Layered(fal.App, termination_grace_period_seconds=5):\n"
        "    requirements = [['setuptools'], ['humanize==4.9.0']]\n"
        "    @fal.endpoint('/', health_check=fal.HealthCheck(timeout_seconds=3))\n"
        "    def run(self) -> dict:\n        return {}\n"
    )
    with pytest.raises(OptionsError, match=r"option 'image' on Imaged \(custom container images\) is not supported"):
        prepare(f"{app}::Imaged", owner="alice")
    with pytest.raises(OptionsError, match=r"option 'regions' on Regional"):
        prepare(f"{app}::Regional", owner="alice")
    layered = prepare(f"{app}::Layered", owner="alice").options
    assert layered.requirements == ["setuptools", "humanize==4.9.0"]  # fal's install layers, in order
    assert layered.termination_grace_period_seconds == 5
    assert layered.health_check.path == "/" and layered.health_check.timeout_seconds == 3
