"""What `platform deploy` sends the control plane, and how the server reads it.

The CLI sends the app file's text and the files of its `local_python_modules`
(`AppUpload`); it loads the class on the developer's machine only to find those modules,
as fal's CLI does. The server never trusts what the client read: it writes the upload
into a folder of its own and reads the class's options, endpoints and OpenAPI schema in a
sandboxed runner process (`python -m tenantserve.adapters.fal.upload`, no network, as the
owner's OS user), never in the control plane's own process.
"""

from __future__ import annotations

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

from tenantserve.platform.core.naming import InvalidNameError, check_name

from . import sandbox
from .bundle import (
    MAX_LOCAL_MODULE_BYTES,
    AppBundle,
    image_files,
    local_files,
    prepare,
    project_files,
    relative_path,
    write_files,
)
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
    # fal's `app_files` ({path relative to the project root: base64}) and the app file's
    # folder in that root.
    project_files: dict[str, str] = Field(default_factory=dict)
    project_dir: str = Field(".", max_length=4096)
    # The build context files a container image's COPY/ADD lines take ({path: base64}), and
    # the Dockerfiles the app reads with ContainerImage.from_dockerfile ({path: text}).
    image_files: dict[str, str] = Field(default_factory=dict)
    dockerfiles: dict[str, str] = Field(default_factory=dict)


def collect(ref: str) -> AppUpload:
    """Read `FILE[::CLASS]` on the client: the text and the local modules to ship."""
    dockerfiles: dict[str, str] = {}
    source, app_class = read_source(ref, dockerfiles=dockerfiles)
    app_dir = Path(source.filename).parent
    options = read_options(app_class)
    files = local_files(options, app_dir)
    shipped, project_dir = project_files(options, app_dir)
    return AppUpload(filename=source.filename, source=source.source, class_name=source.class_name, files=files,
                     project_files=shipped, project_dir=project_dir, image_files=image_files(app_class, options),
                     dockerfiles=dockerfiles)


def unpack(upload: AppUpload, folder: Path) -> str:
    """Write the upload under `folder` as the client had it: the project's `app_files`
    from its root, the app file and its local modules in the app's folder there; returns
    the app file's path relative to `folder`."""
    if sum(len(data) for data in upload.files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError("local_python_modules: over 20 MB; install them as requirements instead")
    if sum(len(data) for data in upload.project_files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError("app_files: over 20 MB in all; put large files in the model cache (/data) instead")
    if sum(len(data) for data in upload.image_files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError("image: the files COPY/ADD take are over 20 MB in all")
    if sum(len(text) for text in upload.dockerfiles.values()) > MAX_SOURCE_BYTES:
        raise AppLoadError("image: the Dockerfiles are over 5 MB in all")
    name = PurePosixPath(upload.filename.replace("\\", "/")).name
    name = name if name.endswith(".py") and name.isprintable() and not name.startswith(".") else "app.py"
    app_dir = PurePosixPath(".") if upload.project_dir == "." else relative_path(upload.project_dir, "app_files")
    write_files(folder, upload.project_files, "app_files")
    write_files(folder / app_dir, upload.files, "local_python_modules")
    (folder / app_dir).mkdir(parents=True, exist_ok=True)
    (folder / app_dir / name).write_text(upload.source, encoding="utf-8")
    return str(app_dir / name)


def _give_to(folder: Path, uid: Optional[int]) -> None:
    for root, dirs, files in os.walk(folder):
        for entry in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chmod(entry, 0o755 if os.path.isdir(entry) else 0o644)
            if uid is not None:
                os.chown(entry, uid, uid)


def read_sandboxed(upload: AppUpload, owner: str, app_name: Optional[str], uid: Optional[int] = None,
                   timeout: float = READ_TIMEOUT_S, sandboxed: bool = True) -> tuple[AppBundle, dict[str, Any]]:
    """The bundle and the deploy plan of an upload, read in a sandboxed runner process;
    AppLoadError with the reader's message if the app cannot be loaded or checked.

    `sandboxed=False` (`platform deploy --dry-run`, the user's own code on their machine):
    the same read in a plain process, which sees only what the upload ships, as the server
    and the replicas do, so that an import that works only beside the app file fails here too."""
    folder = Path(tempfile.mkdtemp(prefix="tenantserve-read-"))
    try:
        mounts = sandbox.Mounts(app=folder / "app", scratch=folder / "scratch", data=folder / "data",
                                sockets=folder / "sockets")
        for path in (mounts.app, mounts.scratch, mounts.data, mounts.sockets):
            path.mkdir()
        name = unpack(upload, mounts.app)
        if sandboxed:  # readable by the reader's user, which may be the owner's
            _give_to(folder, uid)
        seen = mounts.seen() if sandboxed else mounts
        read_as = seen.app / name
        request = {"ref": f"{read_as}::{upload.class_name}".removesuffix("::"), "owner": owner,
                   "app_name": app_name, "root": str(seen.app) if upload.project_files else None,
                   "dockerfiles": upload.dockerfiles}
        argv = [sys.executable, "-m", __name__]
        if sandboxed:
            argv = sandbox.command(argv, mounts, sandbox.base_env(sys.executable, seen), uid=uid, network=False)
        try:
            done = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True, timeout=timeout,
                                  cwd=mounts.scratch)  # not the caller's folder, which `-m` would put on sys.path
        except subprocess.TimeoutExpired:
            raise AppLoadError(f"reading the app took over {timeout:g}s (its module's top level must not block)") from None
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            detail = (done.stderr or done.stdout).strip()[-2000:]
            raise AppLoadError(f"reading the app failed (exit code {done.returncode}): {detail}") from None
        if "error" in answer:  # named as the user knows the file
            message = answer["error"]
            for seen_as in {str(read_as.resolve()), str(read_as)}:
                message = message.replace(seen_as, upload.filename)
            raise AppLoadError(message)
        # The reader ran the tenant's module, which may have written anything: whose app it is,
        # its name's rules, and the text and files are this server's, not the reader's word.
        bundle = AppBundle.from_json(answer["bundle"])
        if app_name is not None and bundle.app_name != app_name:
            raise AppLoadError(f"the app's reader named it {bundle.app_name!r}, not {app_name!r}")
        try:
            check_name("app", bundle.app_name)
        except InvalidNameError as error:
            raise AppLoadError(str(error)) from None
        source = AppSource(filename=upload.filename, source=upload.source, class_name=bundle.source.class_name)
        bundle = replace(bundle, owner=owner, source=source, local_files=upload.files,
                         project_files=upload.project_files, project_dir=upload.project_dir,
                         image_files=upload.image_files)
        return bundle, {**answer["plan"], "owner": owner, "app": bundle.app_name,
                        "route": f"/{owner}/{bundle.app_name}", "revision": bundle.revision,
                        "local_files": sorted(upload.files), "project_files": sorted(upload.project_files),
                        "image_files": sorted(upload.image_files)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """The sandboxed reader: a request on stdin, one JSON line on stdout."""
    from .options import OptionsError
    from .plan import plan

    request = json.loads(sys.stdin.read())
    try:
        root = Path(request["root"]) if request.get("root") else None
        dockerfiles = request.get("dockerfiles") or {}
        bundle = prepare(request["ref"], owner=request["owner"], app_name=request["app_name"], root=root,
                         dockerfiles=dockerfiles)
        answer: dict[str, Any] = {"bundle": bundle.to_json(), "plan": asdict(plan(bundle, root, dockerfiles))}
    except (AppLoadError, OptionsError) as error:
        answer = {"error": str(error)}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
