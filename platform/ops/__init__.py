"""What operators and owners look at: replicas (runners) and their logs, through Ray's state API."""
