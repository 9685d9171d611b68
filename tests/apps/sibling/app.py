"""Imports a module beside it without shipping it (no local_python_modules): works on this
machine only, so a deploy (and its dry run) must fail."""

import fal
from helper import NAME


class Sibling(fal.App):
    @fal.endpoint("/")
    def name(self) -> dict:
        return {"name": NAME}
