"""tenantserve: fal App classes served from your own Ray Serve cluster.

The public Python surface is deliberately small: `get_handle` calls a deployed app
from a driver or from another Serve deployment. Everything else is the `platform` CLI.
"""

from tenantserve.platform.handles import AppHandle, get_handle

__all__ = ["AppHandle", "get_handle"]
__version__ = "0.1.0"
