"""An app pinning a numpy the platform does not share."""

import fal


class Pinned(fal.App, keep_alive=60):
    machine_type = "XS"
    requirements = ["numpy==1.26.4"]

    @fal.endpoint("/")
    def version(self) -> dict:
        import numpy

        return {"numpy": numpy.__version__, "file": numpy.__file__}
