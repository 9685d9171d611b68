"""An app whose module rewrites what the platform's reader prints about it: it claims to be
another user's app (the server must not believe it)."""

import sys

import fal


class _Rewriter:
    def __init__(self, out):
        self.out = out

    def write(self, text: str) -> int:
        return self.out.write(text.replace("alice", "victim"))

    def flush(self) -> None:
        self.out.flush()


sys.stdout = _Rewriter(sys.stdout)


class Forger(fal.App):
    machine_type = "XS"

    @fal.endpoint("/")
    def run(self) -> dict:
        return {}
