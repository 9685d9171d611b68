"""The control plane: the API at `/api`, who may act as whom, deploys, quotas, and the platform's status."""
