"""Leaves every plane shares: names and routes, request bodies, settings. They import nothing of the platform."""
