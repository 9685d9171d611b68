"""What `platform deploy` sends the control plane, and how the server reads it.

The CLI sends the app file's text and the files of its `local_python_modules`
(`AppUpload`); it loads the class on the developer's machine only to find those modules,
as fal's CLI does. The server never trusts what the client read: it writes the upload
into a folder of its own and reads the class's options, endpoints and OpenAPI schema in a
sandboxed runner process (`python -m tenantserve.adapters.fal.upload`, no network, as the
owner's OS user), never in the control plane's own process.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from pydantic import BaseModel, Field

from . import sandbox
from .bundle import MAX_LOCAL_MODULE_BYTES, AppBundle, module_files, prepare
from .loader import AppLoadError, AppSource, read_source
from .options import read_options

MAX_SOURCE_BYTES = 5 * 1024 * 1024
READ_TIMEOUT_S = 120.0


class AppUpload(BaseModel):
    """An app file as the client read it: its path there (shown in tracebacks), its text,
    the App class (empty: the file's only one) and `local_python_modules`' files
    ({path relative to the import root: base64})."""

    filename: str = Field(max_length=4096)
    source: str = Field(max_length=MAX_SOURCE_BYTES)
    class_name: str = Field("", max_length=200)
    files: dict[str, str] = Field(default_factory=dict)


def collect(ref: str) -> AppUpload:
    """Read `FILE[::CLASS]` on the client: the text and the local modules to ship."""
    source, app_class = read_source(ref)
    app_dir = Path(source.filename).parent
    files = {path: data for name in read_options(app_class).local_python_modules
             for path, data in module_files(name, app_dir).items()}
    return AppUpload(filename=source.filename, source=source.source, class_name=source.class_name, files=files)


def _relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or not relative.parts or any(p in ("", ".", "..") for p in relative.parts):
        raise AppLoadError(f"local_python_modules: {path!r} is not a path inside the project")
    return relative


def unpack(upload: AppUpload, folder: Path) -> str:
    """Write the upload under `folder` as the client had it beside the app file; returns
    the app file's name there."""
    if sum(len(data) for data in upload.files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError("local_python_modules: over 20 MB; install them as requirements instead")
    name = PurePosixPath(upload.filename.replace("\\", "/")).name
    name = name if name.endswith(".py") and name.isprintable() and not name.startswith(".") else "app.py"
    for path, data in upload.files.items():
        target = folder / _relative(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(base64.b64decode(data, validate=True))
        except ValueError:
            raise AppLoadError(f"local_python_modules: {path!r} is not base64") from None
    (folder / name).write_text(upload.source, encoding="utf-8")
    return name


def _give_to(folder: Path, uid: Optional[int]) -> None:
    for root, dirs, files in os.walk(folder):
        for entry in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chmod(entry, 0o755 if os.path.isdir(entry) else 0o644)
            if uid is not None:
                os.chown(entry, uid, uid)


def read_sandboxed(upload: AppUpload, owner: str, app_name: Optional[str], uid: Optional[int] = None,
                   timeout: float = READ_TIMEOUT_S) -> tuple[AppBundle, dict[str, Any]]:
    """The bundle and the deploy plan of an upload, read in a sandboxed runner process;
    AppLoadError with the reader's message if the app cannot be loaded or checked."""
    folder = Path(tempfile.mkdtemp(prefix="tenantserve-read-"))
    try:
        mounts = sandbox.Mounts(app=folder / "app", scratch=folder / "scratch", data=folder / "data",
                                sockets=folder / "sockets")
        for path in (mounts.app, mounts.scratch, mounts.data, mounts.sockets):
            path.mkdir()
        name = unpack(upload, mounts.app)
        _give_to(folder, uid)
        seen = mounts.seen()
        request = {"ref": f"{seen.app / name}::{upload.class_name}".removesuffix("::"), "owner": owner,
                   "app_name": app_name}
        argv = sandbox.command([sys.executable, "-m", __name__], mounts, sandbox.base_env(sys.executable, seen),
                               uid=uid, network=False)
        try:
            done = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AppLoadError(f"reading the app took over {timeout:g}s (its module's top level must not block)") from None
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            detail = (done.stderr or done.stdout).strip()[-2000:]
            raise AppLoadError(f"reading the app failed (exit code {done.returncode}): {detail}") from None
        if "error" in answer:
            raise AppLoadError(answer["error"])
        bundle = AppBundle.from_json(answer["bundle"])
        source = AppSource(filename=upload.filename, source=bundle.source.source, class_name=bundle.source.class_name)
        return replace(bundle, source=source), answer["plan"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """The sandboxed reader: a request on stdin, one JSON line on stdout."""
    from .options import OptionsError
    from .plan import plan

    request = json.loads(sys.stdin.read())
    try:
        bundle = prepare(request["ref"], owner=request["owner"], app_name=request["app_name"])
        answer: dict[str, Any] = {"bundle": bundle.to_json(), "plan": asdict(plan(bundle))}
    except (AppLoadError, OptionsError) as error:
        answer = {"error": str(error)}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
