from pathlib import Path

import fal
from greetings import greet  # the project's package: importable on the platform as on fal
from pydantic import BaseModel


class Ask(BaseModel):
    name: str


class ProjectApp(fal.App, keep_alive=300, app_files=["service", "greetings"], app_files_context_dir=".."):
    machine_type = "XS"
    app_files_ignore = [r"\.skip$", r"__pycache__/"]  # fal reads this one as a class attribute only

    def setup(self) -> None:
        self.line = Path("greeting.txt").read_text().strip()  # relative to the app file's folder, as on fal

    @fal.endpoint("/")
    def answer(self, request: Ask) -> dict:
        return {"greeting": greet(request.name), "file": self.line, "skipped_shipped": Path("notes.skip").exists()}
