"""The options of a fal App class, read as fal's SDK records them and checked.

fal keeps an App's options in two places: class attributes (`machine_type = "GPU-A100"`,
fal's `ClassVar`s) and `host_kwargs`, where class keywords (`class MyApp(fal.App,
keep_alive=300)`) and most attributes end up. Every option fal knows either maps onto
the platform (the README's table) or fails the deploy naming it; unknown keywords and
attributes that look like misspelled options fail too. Nothing is silently ignored.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fal import App
from fal.api.api import FalServerlessHost
from fal.app import _to_fal_app_name


class OptionsError(ValueError):
    """An App class option is unknown or has a value the platform cannot use."""


class HealthCheckOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    method: str = "POST"
    start_period_seconds: Optional[float] = None
    timeout_seconds: Optional[float] = None
    failure_threshold: Optional[int] = None
    call_regularly: Optional[bool] = None


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
# Options fal has that the platform does not map yet: a deploy that sets one fails, naming it.
NOT_SUPPORTED = {
    "image": "custom container images", "kind": "container apps",
    "regions": "regions", "concurrency_buffer": "warm replicas above the load",
    "concurrency_buffer_perc": "warm replicas above the load", "scaling_delay": "scaling delays",
    "app_files": "app files", "app_files_ignore": "app files", "app_files_context_dir": "app files",
    "requirements_context_dir": "local-path requirements", "secrets": "choosing secrets",
    "data_mounts": "data mounts", "metrics_port": "an app's own metrics port",
    "private_logs": "private logs", "skip_retry_conditions": "retry conditions",
    "retry_config": "retry settings", "request_start_timeout": "request start timeouts",
    "setup_function": "setup functions", "metadata": "deploy metadata", "_base_image": "base images",
    "_scheduler": "fal's schedulers", "_scheduler_options": "fal's schedulers",
}
# How fal's runners build environments: both become the platform's uv-built environments.
_ACCEPTED = {"resolver", "version"}
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
    problems = [f"unknown option {key!r} on {app_class.__name__}{_suggestion(key)}"
                for key in app_class._explicit_host_kwargs if key not in KNOWN_OPTIONS]
    problems += [f"unknown option {key!r} on {app_class.__name__}{_suggestion(key)}"
                 for key in _misspelled_attributes(app_class)]
    problems += [f"option {key!r} on {app_class.__name__} ({NOT_SUPPORTED[key]}) is not supported by tenantserve yet"
                 for key in raw if key in NOT_SUPPORTED]
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
