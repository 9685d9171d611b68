import time

import fal


class HangsInSetup(fal.App, startup_timeout=30):
    """A setup() that never finishes: the deploy gives up at startup_timeout."""

    machine_type = "XS"

    def setup(self) -> None:
        print("loading the weights from a share that never answers", flush=True)
        time.sleep(3600)

    @fal.endpoint("/")
    def ping(self) -> dict:
        return {}
