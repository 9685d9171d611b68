"""Kept at this path for references that outlive a release (node configs preload it; Serve
stores the classes of deployed apps by module path). The code is in `tenantserve.platform.cluster.coldstart`."""

from tenantserve.platform.cluster.coldstart import *  # noqa: F401,F403
