"""What runs on the request path inside every replica: the key check and the one access table, metrics, the files apps store and read."""
