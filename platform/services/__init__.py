"""The platform's own Serve apps on the request path: the queue API and its dispatcher at `/queue`, files at `/files`."""
