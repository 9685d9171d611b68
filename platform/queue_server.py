"""Kept at this path for references that outlive a release (node configs preload it; Serve
stores the classes of deployed apps by module path). The code is in `tenantserve.platform.services.queue_server`."""

from tenantserve.platform.services.queue_server import *  # noqa: F401,F403
