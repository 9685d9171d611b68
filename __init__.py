"""tenantserve: fal App classes served from your own Ray Serve cluster.

The public Python surface is deliberately small: `get_handle` calls a deployed app
from a driver or from another Serve deployment. Everything else is the `platform` CLI.
"""

from typing import Any

__all__ = ["AppHandle", "get_handle"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`get_handle` and `AppHandle` import Ray when first used, not with the package (the
    `platform` CLI's `--help` stays light)."""
    if name in __all__:
        from tenantserve.platform.cluster import handles

        return getattr(handles, name)
    raise AttributeError(f"module 'tenantserve' has no attribute {name!r}")
