"""The options of a fal App class, read as fal's SDK records them and checked.

fal keeps an App's options in two places: class attributes (`machine_type = "GPU-A100"`,
fal's `ClassVar`s) and `host_kwargs`, where class keywords (`class MyApp(fal.App,
keep_alive=300)`) and most attributes end up. Every option fal knows either maps onto
the platform (the README's table) or fails the deploy naming it; unknown keywords and
attributes that look like misspelled options fail too. Nothing is silently ignored.
"""

from __future__ import annotations

import difflib
import itertools
import re
import sys
from pathlib import PurePosixPath
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fal import App
from fal.api.api import FalServerlessHost
from fal.app import _to_fal_app_name
from tenantserve.platform.core.naming import check_secret_name
from tenantserve.platform.core.outcomes import QUEUE_ATTEMPTS


class OptionsError(ValueError):
    """An App class option is unknown or has a value the platform cannot use."""


REGION_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")  # a Ray label value


def platform_python() -> str:
    """The interpreter version runners use: the node's own, as `3.11.7`."""
    return ".".join(map(str, sys.version_info[:3]))


RetryCondition = Literal["timeout", "server_error", "connection_error"]  # fal's names


class RetryCount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(ge=0, le=10)


class HealthCheckOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    method: str = "POST"
    start_period_seconds: Optional[float] = None
    timeout_seconds: Optional[float] = None
    failure_threshold: Optional[int] = None
    call_regularly: Optional[bool] = None


class ImageOptions(BaseModel):
    """fal's `ContainerImage`: the Dockerfile the platform builds the app's image from, its
    build arguments, and the build context's files its COPY/ADD lines name (shipped apart)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dockerfile: str = Field(min_length=1, max_length=1024 * 1024)
    build_args: dict[str, str] = Field(default_factory=dict)
    copies: list[str] = Field(default_factory=list)  # the COPY/ADD sources, as the Dockerfile names them


# ContainerImage fields with no meaning here: how fal's own builders compress and build.
_IMAGE_ACCEPTED = ("builder", "compression", "force_compression", "use_isolate", "context_dir",
                   "dockerignore", "dockerignore_path")
_IMAGE_REFUSED = {
    "registries": "registry credentials are the operator's: the nodes pull base images from the registry "
                  "TENANTSERVE_IMAGE_REGISTRY names (docs/configuration.md)",
    "secrets": "build secrets are not supported by tenantserve; use the app's runtime secrets (`secrets=`)",
    "entrypoint": "the platform runs fal's runner in the image, not its entrypoint",
    "cmd": "the platform runs fal's runner in the image, not its command",
}


def dockerfile_problems(text: str) -> list[str]:
    """What a Dockerfile asks that the node's builder must not do for a tenant: RUN steps that
    mount (buildah's bind, cache and secret mounts have reached the node's files), pick their
    network or drop their confinement, and ADD from the network (fetched by the builder
    itself, outside the build's network)."""
    problems = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = line.split()
        if words and words[0].upper() == "ONBUILD":  # run by a later build that starts from this image
            words = words[1:]
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        flags = [w.split("=", 1)[0] for w in itertools.takewhile(lambda w: w.startswith("--"), words[1:])]
        if instruction == "RUN":
            problems += [f"RUN {flag}: not allowed (the platform's builder gives RUN steps no mounts and the "
                         "runners' network)" for flag in flags if flag in ("--mount", "--network", "--security")]
        if instruction == "ADD" and any("://" in w or w.startswith("git@") for w in words[1:-1]):
            problems.append("ADD from a URL: not allowed (RUN curl or pip inside the build instead)")
    return problems


def read_image(image: Any) -> ImageOptions:
    """A `fal.ContainerImage` (or its `to_dict()` form) as ImageOptions; OptionsError names
    the fields the platform does not take."""
    if isinstance(image, ImageOptions):
        return image
    fields = image if isinstance(image, dict) else vars(image) if hasattr(image, "dockerfile_str") else None
    if not fields or not isinstance(fields.get("dockerfile_str"), str):  # a function's options hold `to_dict()`
        raise OptionsError(f"image must be a fal.ContainerImage (from_dockerfile_str or from_dockerfile), "
                           f"not {type(image).__name__}")
    problems = [f"image.{name}: {why}" for name, why in _IMAGE_REFUSED.items() if fields.get(name)]
    problems += [f"image's Dockerfile: {problem}" for problem in dockerfile_problems(fields["dockerfile_str"])]
    if problems:
        raise OptionsError("; ".join(problems))
    copies = image.get_copy_add_sources() if hasattr(image, "get_copy_add_sources") \
        else list(fields.get("docker_files_list") or [])
    return ImageOptions(dockerfile=fields["dockerfile_str"], build_args=dict(fields.get("build_args") or {}),
                        copies=copies)


class AppOptions(BaseModel):
    """What a fal App class asks of the platform; fal's defaults where it says nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Optional[str] = None
    machine_type: Union[str, list[str]] = "S"
    num_gpus: Optional[int] = Field(default=None, ge=0)
    requirements: list[str] = Field(default_factory=list)
    local_python_modules: list[str] = Field(default_factory=list)
    app_auth: Literal["private", "shared", "public"] = "private"
    keep_alive: float = Field(default=60, ge=0)
    min_concurrency: int = Field(default=0, ge=0)
    max_concurrency: int = Field(default=2, ge=1)
    max_multiplexing: int = Field(default=1, ge=1)
    request_timeout: Optional[float] = Field(default=None, gt=0)
    startup_timeout: float = Field(default=600, gt=0)
    termination_grace_period_seconds: Optional[float] = Field(default=None, ge=0)
    health_check: Optional[HealthCheckOptions] = None
    scaling_delay: Optional[float] = Field(default=None, ge=0)
    private_logs: bool = False
    app_files: list[str] = Field(default_factory=list)
    app_files_ignore: list[str] = Field(default_factory=list)
    app_files_context_dir: Optional[str] = None

    secrets: Optional[list[str]] = None
    skip_retry_conditions: list[RetryCondition] = Field(default_factory=list)
    retry_config: Optional[dict[RetryCondition, RetryCount]] = None
    concurrency_buffer: int = Field(default=0, ge=0)
    concurrency_buffer_perc: int = Field(default=0, ge=0)
    regions: Optional[list[str]] = None
    request_start_timeout: Optional[float] = Field(default=None, ge=0)
    data_mounts: Optional[list[str]] = None
    python_version: Optional[str] = None
    version: Optional[str] = None  # fal's label for the app's code (BaseServable.version)
    image: Optional[ImageOptions] = None  # fal's container image: the runner runs inside it

    @field_validator("image", mode="before")
    @classmethod
    def _container_image(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, dict) else read_image(value)

    @field_validator("requirements")
    @classmethod
    def _requirements_not_options(cls, value: list[str]) -> list[str]:
        for requirement in value:
            if not requirement.strip() or requirement.lstrip().startswith("-"):
                raise ValueError(f"{requirement!r} is not a requirement: the installer's options (such as -r, "
                                 "--index-url) are the platform's to set")
        return value

    @field_validator("app_files_ignore")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None
        return value

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and not value:
            raise ValueError("regions must name at least one region (leave it out for any region)")
        for region in value or []:
            if not REGION_NAME.fullmatch(region):
                raise ValueError(f"{region!r} is not a region name (letters, digits, '-', '_' and '.')")
        return value

    @field_validator("data_mounts")
    @classmethod
    def _data_paths(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        paths = []
        for path in value:
            pure = PurePosixPath(path)
            if pure.parts[:2] != ("/", "data") or ".." in pure.parts or not pure.is_absolute():
                raise ValueError(f"{path!r}: data mounts are /data or a folder below it, such as /data/.cache")
            paths.append(str(pure))
        return sorted(set(paths))

    @field_validator("python_version", mode="before")
    @classmethod
    def _python_version(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, str) and re.fullmatch(r"3\.\d+(\.\d+)?", value)):
            raise ValueError(f"{value!r} is not a Python version such as '3.11' (written as a string)")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        for name in value or []:
            check_secret_name(name)
        return value

    @field_validator("retry_config", mode="before")
    @classmethod
    def _fal_retry_config(cls, value: Any) -> Any:
        """fal's `RetryConfig(connection_error=2)` or its dict form `{condition: {"retries": n}}`."""
        if value is not None and hasattr(value, "to_dict"):
            value = value.to_dict()
        return value

    @model_validator(mode="after")
    def _retries_the_platform_makes(self) -> "AppOptions":
        unsupported = [c for c, count in (self.retry_config or {}).items() if c != "connection_error" and count.retries]
        if unsupported:
            raise ValueError(f"retry_config: tenantserve retries a request only when its runner or replica dies "
                             f"(connection_error), not on {', '.join(unsupported)}")
        return self

    @property
    def queue_attempts(self) -> int:
        """How many times the queue runs a request whose runner or replica dies under it
        (fal's `connection_error` condition); 3 unless the app says otherwise."""
        if "connection_error" in self.skip_retry_conditions:
            return 1
        configured = (self.retry_config or {}).get("connection_error")
        return configured.retries + 1 if configured is not None else QUEUE_ATTEMPTS

    @field_validator("machine_type")
    @classmethod
    def _machine_types_not_empty(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(value, list) and not value:
            raise ValueError("machine_type list must name at least one machine type")
        return value

    @model_validator(mode="after")
    def _concurrency_bounds(self) -> "AppOptions":
        if self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) is greater than "
                f"max_concurrency ({self.max_concurrency})"
            )
        return self

    @property
    def machine_types(self) -> list[str]:
        return [self.machine_type] if isinstance(self.machine_type, str) else list(self.machine_type)


# fal spells the app name `app_name` as an attribute and `name` as a class keyword.
_ALIASES = {"app_name": "name", "machine_types": "machine_type"}
MAPPED = frozenset(AppOptions.model_fields) - {"health_check"} | frozenset(_ALIASES)
# Options fal has that the platform does not map: a deploy that sets one fails, saying why.
NOT_SUPPORTED = {
    "kind": "tenantserve runs fal's kinds virtualenv (the default) and container (with image=), not conda",
    "_base_image": "base images are not supported by tenantserve yet",
    "requirements_context_dir": "local-path requirements are not supported by tenantserve yet",
    "metrics_port": "tenantserve does not scrape an app's own metrics server: each app's requests, "
                    "latency and replicas are exported by the platform (docs/operations.md)",
    "setup_function": "fal's setup functions belong to fal's own function runtime; use App.setup()",
    "metadata": "deploy metadata is fal's own deployment record; tenantserve keeps its own revisions",
    "_scheduler": "fal's scheduler choice has no meaning on a Ray cluster",
}
# fal's scheduler options the platform reads: `region` (an older spelling of `regions`), and
# `storage_region`, where fal keeps an app's files (the platform keeps them in its own store).
SCHEDULER_OPTIONS = frozenset({"region", "storage_region"})
# How fal builds environments (its resolver, a forced rebuild, bytecode): the platform builds
# its own, content-addressed, with uv.
_ACCEPTED = {"resolver", "force", "compile_bytecode"}
KNOWN_OPTIONS = MAPPED | frozenset(NOT_SUPPORTED) | frozenset(FalServerlessHost._SUPPORTED_KEYS) | _ACCEPTED


def kebab_case(class_name: str) -> str:
    """`MyApp` -> `my-app`, `SDXLFlash` -> `sdxl-flash`: the default app name."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", class_name)
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", words)
    return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(KNOWN_OPTIONS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _user_classes(app_class: type) -> list[type]:
    return [k for k in reversed(app_class.__mro__) if issubclass(k, App) and k is not App]


def _misspelled_attributes(app_class: type) -> list[str]:
    """Class attributes that look like a misspelled option rather than the user's own."""
    found = []
    for klass in _user_classes(app_class):
        for attr, value in vars(klass).items():
            if attr.startswith("_") or attr in KNOWN_OPTIONS or attr == "host_kwargs" or callable(value):
                continue
            if difflib.get_close_matches(attr, sorted(KNOWN_OPTIONS), n=1, cutoff=0.75):
                found.append(attr)
    return found


def _given(app_class: type) -> dict[str, Any]:
    """The options the app's own classes set, as attributes or class keywords."""
    raw: dict[str, Any] = {}
    for klass in _user_classes(app_class):
        for attr, value in vars(klass).items():
            if attr in KNOWN_OPTIONS and not callable(value):
                raw[attr] = value
    # fal writes a derived `app_name` on every class: it is the user's only if no class of
    # the MRO would derive it (`name=` or `app_name = ...` somewhere, subclasses inheriting it).
    raw.pop("app_name", None)
    derived = {_to_fal_app_name(k.__name__) for k in app_class.__mro__ if isinstance(k, type) and issubclass(k, App)}
    if app_class.app_name and app_class.app_name not in derived:
        raw["app_name"] = app_class.app_name
    host = app_class.host_kwargs
    for key in app_class._explicit_host_kwargs:
        if key in host and key != "health_check_config":
            raw[key] = host[key]
    return raw


def _health_check(app_class: type) -> Optional[HealthCheckOptions]:
    config = app_class.host_kwargs.get("health_check_config")
    if config is None:
        return None
    fields = {k: getattr(config, k) for k in HealthCheckOptions.model_fields if getattr(config, k, None) is not None}
    return HealthCheckOptions(**fields)


def _flat_requirements(value: Any) -> Any:
    """fal's install layers (a list of lists) as one list, in order."""
    if isinstance(value, list) and any(isinstance(item, list) for item in value):
        return [req for item in value for req in (item if isinstance(item, list) else [item])]
    return value


def read_options(app_class: type) -> AppOptions:
    """Collect and check the options of an App class; raise OptionsError naming what is wrong."""
    raw = _given(app_class)
    kind = raw.pop("kind", "virtualenv")
    if kind == "container" and raw.get("image") is None:
        raise OptionsError(f"kind='container' on {app_class.__name__} needs image=fal.ContainerImage...(...)")
    if kind not in ("virtualenv", "container"):
        raw["kind"] = kind  # refused below
    problems = [f"unknown option {key!r} on {app_class.__name__}{_suggestion(key)}"
                for key in app_class._explicit_host_kwargs if key not in KNOWN_OPTIONS]
    problems += [f"unknown option {key!r} on {app_class.__name__}{_suggestion(key)}"
                 for key in _misspelled_attributes(app_class)]
    problems += [f"option {key!r} on {app_class.__name__}: {NOT_SUPPORTED[key]}" for key in raw if key in NOT_SUPPORTED]
    scheduler = raw.pop("_scheduler_options", None) or {}
    if not isinstance(scheduler, dict):
        problems.append(f"_scheduler_options on {app_class.__name__} must be a dict, not {type(scheduler).__name__}")
        scheduler = {}
    problems += [f"_scheduler_options: {key!r} means nothing to tenantserve (it reads only "
                 f"{', '.join(sorted(SCHEDULER_OPTIONS))})" for key in scheduler if key not in SCHEDULER_OPTIONS]
    if scheduler.get("region") and not raw.get("regions"):
        region = scheduler["region"]
        raw["regions"] = [region] if isinstance(region, str) else region  # AppOptions checks the list
    python = raw.get("python_version")
    if raw.get("image") is not None:
        try:
            raw["image"] = read_image(raw["image"])
        except OptionsError as error:
            problems.append(f"option 'image' on {app_class.__name__}: {error}")
    elif isinstance(python, str) and not (platform_python() + ".").startswith(python + "."):
        problems.append(f"Python {python} is not available: tenantserve runs an app on its nodes' interpreter, "
                        f"Python {platform_python()} (leave python_version out, or set it to that)")
    if problems:
        raise OptionsError("; ".join(problems))
    for key in [k for k in raw if k in _ACCEPTED or k not in MAPPED]:
        raw.pop(key)
    for alias, field in _ALIASES.items():
        if alias in raw:
            value = raw.pop(alias)
            raw.setdefault(field, value)
    if "requirements" in raw:
        raw["requirements"] = _flat_requirements(raw["requirements"])
    raw = {k: v for k, v in raw.items() if v is not None}
    try:
        return AppOptions(**raw, health_check=_health_check(app_class))
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in error.errors()
        ]
        raise OptionsError(f"invalid options on {app_class.__name__}: " + "; ".join(problems)) from None
