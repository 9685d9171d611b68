"""The options of a fal App class, read from its keywords and attributes and checked."""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .sdk import App


class OptionsError(ValueError):
    """An App class option is unknown or has a value the platform cannot use."""


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
_ALIASES = {"app_name": "name"}
KNOWN_OPTIONS = frozenset(AppOptions.model_fields) | frozenset(_ALIASES)


def kebab_case(class_name: str) -> str:
    """`MyApp` -> `my-app`, `SDXLFlash` -> `sdxl-flash`: fal's default app name."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", class_name)
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", words)
    return re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(KNOWN_OPTIONS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _misspelled_attributes(app_class: type) -> list[str]:
    """Class attributes that look like a misspelled option rather than the user's own."""
    found = []
    for klass in app_class.__mro__:
        if klass is App or klass is object:
            break
        for attr, value in vars(klass).items():
            if attr.startswith("_") or attr in KNOWN_OPTIONS or callable(value):
                continue
            if difflib.get_close_matches(attr, sorted(KNOWN_OPTIONS), n=1, cutoff=0.75):
                found.append(attr)
    return found


def read_options(app_class: type) -> AppOptions:
    """Collect and check the options of an App class; raise OptionsError naming what is wrong."""
    raw: dict[str, Any] = {}
    for klass in reversed(app_class.__mro__):
        if klass is App or not issubclass(klass, App):
            continue
        for attr in KNOWN_OPTIONS:
            if attr in vars(klass):
                raw[attr] = vars(klass)[attr]
    raw.update(app_class.__fal_options__)

    unknown = [key for key in app_class.__fal_options__ if key not in KNOWN_OPTIONS]
    unknown += _misspelled_attributes(app_class)
    if unknown:
        raise OptionsError(
            "; ".join(f"unknown option {key!r} on {app_class.__name__}{_suggestion(key)}" for key in unknown)
        )

    for alias, field in _ALIASES.items():
        if alias in raw:
            value = raw.pop(alias)
            raw.setdefault(field, value)
    try:
        return AppOptions(**raw)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in error.errors()
        ]
        raise OptionsError(f"invalid options on {app_class.__name__}: " + "; ".join(problems)) from None
