"""The Ray cluster under the platform: starting and reaching it, the ingress, cold starts, node environments, placement, handles, and the Serve patches."""
