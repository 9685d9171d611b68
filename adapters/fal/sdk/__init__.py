"""The `fal` module as app files see it when tenantserve loads them.

`import fal` inside an app file gives this module, whether or not fal's own package is
installed: the loader puts it in `sys.modules` before it runs the file. Only the part of
fal's SDK that describes an app lives here; nothing talks to fal's servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

from . import exceptions, toolkit

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class EndpointSpec:
    path: str
    is_websocket: bool = False


def endpoint(path: str, *, is_websocket: bool = False) -> Callable[[F], F]:
    """Mark an App method as an HTTP endpoint served at `path` under the app's URL."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"endpoint path must start with '/', got {path!r}")

    def mark(method: F) -> F:
        method.__fal_endpoint__ = EndpointSpec(path=path, is_websocket=is_websocket)  # type: ignore[attr-defined]
        return method

    return mark


class App:
    """Base class of fal apps.

    Options come as class keywords (`class MyApp(fal.App, keep_alive=300)`) or class
    attributes (`machine_type = "GPU-A100"`). Like fal, they are checked when the app is
    deployed, not when the class is defined.
    """

    __fal_options__: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__()
        cls.__fal_options__ = {**cls.__fal_options__, **options}

    def setup(self) -> Any:
        """Load models and other state; runs once per replica before any request."""

    def teardown(self) -> Any:
        """Release what `setup()` took; runs when a replica shuts down."""


__all__ = ["App", "EndpointSpec", "endpoint", "exceptions", "toolkit"]
