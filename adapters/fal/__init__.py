"""The fal adapter: fal App classes -> Ray Serve deployments."""
