"""Class options are read and checked the way fal users expect (no cluster needed)."""

import sys

import pytest

from tenantserve.adapters.fal.bundle import prepare
from tenantserve.adapters.fal.loader import AppLoadError
from tenantserve.adapters.fal.machines import UnplaceableError, actor_options
from tenantserve.adapters.fal.options import OptionsError, kebab_case, read_options

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
    with pytest.raises(UnplaceableError, match="unknown machine_type 'XXL'"):
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
        "class Conda(fal.App, kind='conda'):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Metered(fal.App, metrics_port=9090):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Layered(fal.App, termination_grace_period_seconds=5):\n"
        "    requirements = [['setuptools'], ['humanize==4.9.0']]\n"
        "    @fal.endpoint('/', health_check=fal.HealthCheck(timeout_seconds=3))\n"
        "    def run(self) -> dict:\n        return {}\n"
    )
    # A class attribute, as fal also reads it (tests/test_image_options.py has the rest).
    assert prepare(f"{app}::Imaged", owner="alice").options.image.dockerfile == "FROM python:3.11-slim"
    with pytest.raises(OptionsError, match=r"option 'kind' on Conda: .* not conda"):
        prepare(f"{app}::Conda", owner="alice")
    with pytest.raises(OptionsError, match=r"option 'metrics_port' on Metered: tenantserve does not scrape"):
        prepare(f"{app}::Metered", owner="alice")
    layered = prepare(f"{app}::Layered", owner="alice").options
    assert layered.requirements == ["setuptools", "humanize==4.9.0"]  # fal's install layers, in order
    assert layered.termination_grace_period_seconds == 5
    assert layered.health_check.path == "/" and layered.health_check.timeout_seconds == 3


def test_scaling_secrets_and_retry_options_map_onto_the_platform(tmp_path) -> None:
    from tenantserve.adapters.fal.deployment import autoscaling_config

    app = tmp_path / "tuned.py"
    app.write_text(
        "import fal\nfrom fal.sdk import RetryConfig\n\n"
        "class Tuned(fal.App, scaling_delay=30, secrets=['HF_TOKEN'], skip_retry_conditions=['timeout'],\n"
        "            private_logs=True):\n"
        "    retry_config = RetryConfig(connection_error=5)\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Once(fal.App, skip_retry_conditions=['connection_error']):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class RetriesErrors(fal.App, retry_config={'server_error': {'retries': 2}}):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class BadSecret(fal.App, secrets=['not a name']):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n"
    )
    tuned = prepare(f"{app}::Tuned", owner="alice")
    assert autoscaling_config(tuned)["upscale_delay_s"] == 30  # Serve waits this long before adding a replica
    assert tuned.options.secrets == ["HF_TOKEN"] and tuned.options.private_logs
    assert tuned.options.queue_attempts == 6  # the first run and 5 retries when the runner dies
    assert prepare(f"{app}::Once", owner="alice").options.queue_attempts == 1
    assert prepare(f"{app}::Once", owner="alice").options.skip_retry_conditions == ["connection_error"]
    with pytest.raises(OptionsError, match=r"retries a request only when its runner or replica dies.*server_error"):
        prepare(f"{app}::RetriesErrors", owner="alice")
    with pytest.raises(OptionsError, match=r"secrets.*invalid secret name 'not a name'"):
        prepare(f"{app}::BadSecret", owner="alice")
    # A scaling delay changes the running app's bounds, not its replicas' code.
    slower = tuned.options.model_copy(update={"scaling_delay": 60})
    from dataclasses import replace

    assert replace(tuned, options=slower).code_version == tuned.code_version


def test_an_apps_secrets_option_picks_which_of_its_owners_secrets_it_gets(tmp_path) -> None:
    from tenantserve.platform.store.registry import Registry
    from tenantserve.platform.store.secret_box import SecretBox, load_key, replica_environment

    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.create_user("alice")
    key = tmp_path / "secret.key"
    box = SecretBox(load_key(key, create=True))
    for name in ("HF_TOKEN", "OTHER"):
        registry.set_secret("alice", name, box.seal(f"{name}-value"))
    assert replica_environment("alice", registry, str(key)) == {"HF_TOKEN": "HF_TOKEN-value", "OTHER": "OTHER-value"}
    assert replica_environment("alice", registry, str(key), only=["HF_TOKEN", "MISSING"]) == {"HF_TOKEN": "HF_TOKEN-value"}


def test_fals_gpu_names_find_the_nodes_ray_names_for_those_cards() -> None:
    # What Ray detects: "NVIDIA RTX A6000" -> RTX-A6000, "NVIDIA A100-SXM4-40GB" -> A100.
    a6000 = [{"CPU": 8, "GPU": 2, "accelerator_type:RTX-A6000": 1}]
    a100 = [{"CPU": 8, "GPU": 1, "accelerator_type:A100": 1}]
    assert actor_options(["GPU-A6000"], None, a6000)["accelerator_type"] == "RTX-A6000"
    for fal_name in ("GPU-A100", "GPU-A100-40GB", "GPU-A100-80GB"):
        assert actor_options([fal_name], None, a100)["accelerator_type"] == "A100"
    assert actor_options(["GPU-H200"], None, [{"CPU": 8, "GPU": 1, "accelerator_type:H200": 1}])["num_gpus"] == 1
    # fal's bare GPU: any GPU node.
    assert actor_options(["GPU"], 2, a6000) == {"num_cpus": 1.0, "num_gpus": 2}
    with pytest.raises(UnplaceableError, match="no node has GPU"):
        actor_options(["GPU"], None, [{"CPU": 8}])
    with pytest.raises(UnplaceableError, match="unknown machine_type 'GPU-'"):
        actor_options(["GPU-"], None, a100)


def test_app_files_ship_the_projects_files_as_fal_does(tmp_path) -> None:
    from tenantserve.adapters.fal.upload import collect, unpack

    bundle = prepare(f"{APPS}/project/service/app.py::ProjectApp", owner="alice")
    assert sorted(bundle.project_files) == ["greetings/__init__.py", "service/app.py", "service/greeting.txt"]
    assert bundle.project_dir == "service"  # the app file's folder in the project: the runner works there
    # What a deploy uploads unpacks as the project was, and reads the same on the server's side.
    upload = collect(f"{APPS}/project/service/app.py::ProjectApp")
    assert upload.project_files == bundle.project_files and upload.project_dir == "service"
    app_path = unpack(upload, tmp_path / "copy")
    assert app_path == "service/app.py" and (tmp_path / "copy" / "greetings" / "__init__.py").is_file()
    server_side = prepare(f"{tmp_path / 'copy' / app_path}::ProjectApp", owner="alice", root=tmp_path / "copy")
    assert server_side.project_files == bundle.project_files and server_side.code_version == bundle.code_version
    # A changed file is a new code version.
    (tmp_path / "copy" / "service" / "greeting.txt").write_text("changed")
    changed = prepare(f"{tmp_path / 'copy' / app_path}::ProjectApp", owner="alice", root=tmp_path / "copy")
    assert changed.code_version != bundle.code_version


def test_app_files_that_leave_the_project_or_do_not_exist_are_refused(tmp_path) -> None:
    app = tmp_path / "proj" / "app.py"
    app.parent.mkdir()
    body = "    @fal.endpoint('/')\n    def run(self) -> dict:\n        return {}\n"
    app.write_text("import fal\n\n"
                   f"class Outside(fal.App, app_files=['../secrets.txt']):\n{body}\n"
                   f"class Missing(fal.App, app_files=['nope.txt']):\n{body}\n"
                   f"class BadPattern(fal.App, app_files=['app.py']):\n    app_files_ignore = ['(']\n{body}")
    (tmp_path / "secrets.txt").write_text("not yours")
    with pytest.raises(AppLoadError, match="outside the project folder"):
        prepare(f"{app}::Outside", owner="alice")
    with pytest.raises(AppLoadError, match="'nope.txt' does not exist"):
        prepare(f"{app}::Missing", owner="alice")
    with pytest.raises(OptionsError, match="not a regular expression"):
        prepare(f"{app}::BadPattern", owner="alice")


def test_warm_buffer_regions_data_mounts_and_python_version_map_onto_the_platform(tmp_path) -> None:
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    from tenantserve.adapters.fal.bundle import describe
    from tenantserve.adapters.fal.deployment import autoscaling_config
    from tenantserve.adapters.fal.warm_buffer import WarmBuffer

    this_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    app = tmp_path / "placed.py"
    app.write_text(
        "import fal\n\n"
        "class Buffered(fal.App, concurrency_buffer=1, concurrency_buffer_perc=50, max_concurrency=10):\n"
        "    regions = ['us-east', 'eu-west']\n"
        "    data_mounts = ['/data/.cache', '/data/models/']\n"
        "    request_start_timeout = 5\n"
        "    version = '2.0.1'\n"
        f"    python_version = '{this_python}'\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Escaping(fal.App, data_mounts=['/data/../etc']):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class Scheduled(fal.App, _scheduler_options={'region': ['us-east', 'eu-north'], 'storage_region': 'us'}):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n\n"
        "class OldPython(fal.App, python_version='3.6'):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self) -> dict:\n        return {}\n"
    )
    buffered = prepare(f"{app}::Buffered", owner="alice")
    options = buffered.options
    assert (options.regions, options.data_mounts) == (["us-east", "eu-west"], ["/data/.cache", "/data/models"])
    assert (options.request_start_timeout, options.python_version) == (5, this_python)
    assert describe(buffered)["version"] == "2.0.1"  # fal's label, in the app's Serve metadata
    assert prepare(f"{app}::Scheduled", owner="alice").options.regions == ["us-east", "eu-north"]  # fal's older spelling
    with pytest.raises(OptionsError, match=r"data_mounts.*/data or a folder below it"):
        prepare(f"{app}::Escaping", owner="alice")
    with pytest.raises(OptionsError, match=rf"Python 3.6 is not available.*Python {this_python}"):
        prepare(f"{app}::OldPython", owner="alice")

    # Regions: Ray's region label selects the nodes; a cluster with none of them refuses the deploy.
    nodes = [{"CPU": 4, "region:eu-west": 1}, {"CPU": 4, "region:ap-south": 1}]
    assert actor_options(["S"], None, nodes, ["us-east", "eu-west"]) == {
        "num_cpus": 0.25, "label_selector": {"ray.io/availability-region": "in(us-east,eu-west)"}}
    with pytest.raises(UnplaceableError, match=r"no node .* in region us-east \(its nodes' regions: ap-south, eu-west\)"):
        actor_options(["S"], None, nodes, ["us-east"])
    # A node group the autoscaler can add, its region unknown until a node starts: it may fit.
    assert actor_options(["S"], None, [*nodes, {"CPU": 4, "region:*": 1}], ["us-east"])["num_cpus"] == 0.25
    with pytest.raises(UnplaceableError, match="no node has GPU"):  # the GPU is in another region
        actor_options(["GPU"], None, [{"CPU": 4, "region:eu-west": 1}, {"CPU": 4, "GPU": 1}], ["eu-west"])

    # The warm buffer: Serve's policy, with max(1, 50%) replicas kept above the load.
    config = autoscaling_config(buffered)
    assert config["policy"]["policy_kwargs"] == {"buffer": 1, "buffer_perc": 50}
    policy = WarmBuffer(**config["policy"]["policy_kwargs"])
    serve_config = AutoscalingConfig(**{k: v for k, v in config.items() if k != "policy"})

    def wanted(requests: float, replicas: int) -> float:
        context = AutoscalingContext(
            deployment_id=None, deployment_name="Buffered", app_name="alice.buffered",
            current_num_replicas=replicas, target_num_replicas=replicas, running_replicas=[],
            total_num_requests=requests, total_queued_requests=0, aggregated_metrics={}, raw_metrics={},
            capacity_adjusted_min_replicas=0, capacity_adjusted_max_replicas=10, policy_state={},
            last_scale_up_time=None, last_scale_down_time=None, current_time=None, config=serve_config)
        return policy(context)[0]

    assert wanted(0, 1) == 1  # idle: one warm replica, never zero
    assert wanted(1, 1) == 2  # one busy, one warm
    assert wanted(6, 4) == 9  # six busy and half as many again
    # Changing the buffer changes the running app's bounds, not its replicas' code.
    from dataclasses import replace
    more = replace(buffered, options=options.model_copy(update={"concurrency_buffer": 3}))
    assert more.code_version == buffered.code_version and more.revision != buffered.revision


def test_served_functions_deploy_as_one_endpoint_apps_with_their_options() -> None:
    greet = prepare(f"{APPS}/functions.py::greet", owner="alice")
    assert (greet.app_name, greet.endpoints) == ("greet", {"greet": "/"})
    assert (greet.options.machine_type, greet.options.keep_alive, greet.options.max_concurrency) == ("XS", 30, 2)
    # fal adds its own serving packages to a served function's requirements: the runner has them.
    assert prepare(f"{APPS}/functions.py::counted", owner="alice").options.requirements == ["httpx"]
    with pytest.raises(AppLoadError, match="one_off is a fal.function without serve=True"):
        prepare(f"{APPS}/functions.py::one_off", owner="alice")
    with pytest.raises(AppLoadError, match=r"App classes found: greet, counted"):
        prepare(f"{APPS}/functions.py", owner="alice")


def test_requirements_cannot_pass_options_to_the_installer() -> None:
    """uv runs on the node: `-r /etc/shadow` or another index would be the tenant's to choose."""
    import fal

    for requirement in ("-r /etc/shadow", "--index-url=http://10.0.0.1/simple", " "):
        class Installs(fal.App, requirements=[requirement]):
            @fal.endpoint("/")
            def run(self) -> dict:
                return {}

        with pytest.raises(OptionsError, match="is not a requirement"):
            read_options(Installs)
