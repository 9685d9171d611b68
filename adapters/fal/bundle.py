"""Everything one deploy of a fal App carries: owner, name, source, options."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Optional

from tenantserve.platform.core.naming import InvalidNameError, check_name

from .loader import AppLoadError, AppSource, enclosing_package, read_source
from .machines import check_machine_type
from .options import AppOptions, kebab_case, read_options
from .routes import find_endpoints

if TYPE_CHECKING:
    from tenantserve.platform.store.registry import Registered

# The options Serve changes on running replicas: not part of a bundle's code version.
SCALING_OPTIONS = ("keep_alive", "min_concurrency", "max_concurrency", "max_multiplexing", "scaling_delay",
                   "concurrency_buffer", "concurrency_buffer_perc")


@dataclass(frozen=True)
class AppBundle:
    owner: str
    app_name: str
    source: AppSource
    options: AppOptions
    # `local_python_modules`, as {path relative to the import root: base64 of the bytes}.
    local_files: dict[str, str] = field(default_factory=dict)
    # The endpoint methods, {name: path}, for Python handles: the replica never loads the class.
    endpoints: dict[str, str] = field(default_factory=dict)
    # fal's `app_files`, as {path relative to the project root: base64}, and the app file's
    # folder inside that root (fal's app_files_relative_path): the runner works there.
    project_files: dict[str, str] = field(default_factory=dict)
    project_dir: str = "."
    # The build context files a container image's COPY/ADD lines take, {path: base64}.
    image_files: dict[str, str] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        """A content hash of the code and options: equal bundles deploy the same revision."""
        digest = hashlib.sha256()
        digest.update(self.source.digest.encode())
        digest.update(self.options.model_dump_json().encode())
        digest.update(json.dumps(self.local_files, sort_keys=True).encode())
        self._project_digest(digest)
        return digest.hexdigest()[:12]

    @property
    def code_version(self) -> str:
        """What a replica is built from: everything but the autoscaling options, which
        Serve changes on running replicas. Two bundles with equal code versions share replicas."""
        digest = hashlib.sha256()
        digest.update(self.source.digest.encode())
        digest.update(self.options.model_dump_json(exclude=set(SCALING_OPTIONS)).encode())
        digest.update(json.dumps(self.local_files, sort_keys=True).encode())
        self._project_digest(digest)
        return digest.hexdigest()[:12]

    def _project_digest(self, digest: Any) -> None:
        if self.project_files:
            digest.update(json.dumps([self.project_dir, self.project_files], sort_keys=True).encode())
        if self.image_files:
            digest.update(json.dumps(self.image_files, sort_keys=True).encode())

    @property
    def auth_mode(self) -> str:
        return self.options.app_auth

    def with_auth(self, auth: Optional[str]) -> "AppBundle":
        """The same bundle under another auth mode (`--auth`); None: as it is."""
        if auth is None:
            return self
        return replace(self, options=self.options.model_copy(update={"app_auth": auth}))

    def unpack_local_modules(self) -> Optional[Path]:
        """Write the shipped modules under a folder named by revision; return it for sys.path."""
        if not self.local_files:
            return None
        root = Path(tempfile.gettempdir()) / "tenantserve-modules" / self.revision
        for relative, data in self.local_files.items():
            target = root / relative
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(data))
        return root

    def unpack_project(self, folder: Path) -> None:
        """Write `app_files` under `folder`, and the app's own folder in it."""
        write_files(folder, self.project_files, "app_files")
        (folder / self.project_dir).mkdir(parents=True, exist_ok=True)

    def to_json(self) -> str:
        data = asdict(self)
        data["options"] = self.options.model_dump(mode="json")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def registered(cls, stored: Optional["Registered"]) -> Optional["AppBundle"]:
        """The bundle of a registry row (None for no row)."""
        return cls.from_json(stored.bundle) if stored is not None else None

    @classmethod
    def from_json(cls, text: str) -> "AppBundle":
        data = json.loads(text)
        return cls(
            owner=data["owner"],
            app_name=data["app_name"],
            source=AppSource(**data["source"]),
            options=AppOptions(**data["options"]),
            local_files=data.get("local_files", {}),
            endpoints=data.get("endpoints", {}),
            project_files=data.get("project_files", {}),
            project_dir=data.get("project_dir", "."),
            image_files=data.get("image_files", {}),
        )


MAX_LOCAL_MODULE_BYTES = 20 * 1024 * 1024


def relative_path(path: str, option: str = "local_python_modules") -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or not relative.parts or any(p in ("", ".", "..") for p in relative.parts):
        raise AppLoadError(f"{option}: {path!r} is not a path inside the project")
    return relative


def write_files(folder: Path, files: dict[str, str], option: str) -> None:
    """Write shipped files ({relative path: base64}) under `folder`, each path checked."""
    for path, data in files.items():
        target = folder / relative_path(path, option)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(base64.b64decode(data, validate=True))
        except ValueError:
            raise AppLoadError(f"{option}: {path!r} is not base64") from None


def module_files(name: str, app_dir: Path) -> dict[str, str]:
    """The files of a `local_python_modules` entry, found beside the app file or on sys.path."""
    top = name.split(".")[0]
    candidates = [app_dir / top, app_dir / f"{top}.py"]
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        spec = importlib.util.find_spec(top)
        if spec is None or spec.origin is None:
            raise AppLoadError(f"local_python_modules: cannot find module {name!r}")
        origin = Path(spec.origin)
        found = origin.parent if origin.name == "__init__.py" else origin
    return _files_of(found, name)


def _files_of(found: Path, name: str) -> dict[str, str]:
    """A module file or package folder's files, relative to the folder it is imported from."""
    paths = [found] if found.is_file() else sorted(
        p for p in found.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    files = {str(p.relative_to(found.parent)): base64.b64encode(p.read_bytes()).decode() for p in paths}
    if sum(len(v) for v in files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError(f"local_python_modules: {name!r} is over 20 MB; install it as a requirement instead")
    return files


def local_files(options: AppOptions, app_dir: Path) -> dict[str, str]:
    """What ships as importable modules: the `local_python_modules`, and, for an app file
    inside a package (its folder has an `__init__.py`), that package from its top, as
    fal's SDK ships it (so `from my_project.models import X` works in the app)."""
    files = {path: data for name in options.local_python_modules for path, data in module_files(name, app_dir).items()}
    package = enclosing_package(app_dir)
    if package is not None:
        files.update(_package_sources(package))
    return files


def _package_sources(top: Path) -> dict[str, str]:
    """The Python files of the package an app file is in (what fal's SDK ships of it: its
    modules), relative to the folder it imports from: no hidden folders, nothing a link
    takes out of the package."""
    inside = top.resolve()
    paths = [path for path in sorted(top.rglob("*.py"))
             if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(top).parts)
             and path.resolve().is_relative_to(inside)]
    if sum(path.stat().st_size for path in paths) * 4 // 3 > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError(f"the package the app file is in ({top}) has over 20 MB of Python files; "
                           "move the app file out of it and name the modules it needs in local_python_modules")
    return {str(path.relative_to(top.parent)): base64.b64encode(path.read_bytes()).decode() for path in paths}


def project_files(options: AppOptions, app_dir: Path, root: Optional[Path] = None) -> tuple[dict[str, str], str]:
    """fal's `app_files`: the files they name (folders whole, `app_files_ignore` regexes
    matched against each path left out), relative to `root` (default: the app file's folder
    or `app_files_context_dir` from it), and the app file's folder relative to that root."""
    if not options.app_files:
        return {}, "."
    if root is None:
        context = Path(options.app_files_context_dir or ".")
        root = context if context.is_absolute() else app_dir / context
    root, app_dir = root.resolve(), app_dir.resolve()
    if not app_dir.is_relative_to(root):
        raise AppLoadError(f"app_files_context_dir: the app file's folder {app_dir} is not inside {root}")
    ignore = [re.compile(pattern) for pattern in options.app_files_ignore]
    files: dict[str, str] = {}
    for entry in options.app_files:
        found = (root / entry).resolve()
        if not found.is_relative_to(root):
            raise AppLoadError(f"app_files: {entry!r} is outside the project folder {root}")
        if not found.exists():
            raise AppLoadError(f"app_files: {entry!r} does not exist in {root}")
        for path in _files_under(found):
            relative = path.relative_to(root).as_posix()
            if "__pycache__" in path.parts or any(pattern.search(relative) for pattern in ignore):
                continue
            files[relative] = base64.b64encode(path.read_bytes()).decode()
    if sum(len(data) for data in files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError("app_files: over 20 MB in all; put large files in the model cache (/data) instead")
    return files, app_dir.relative_to(root).as_posix()


def _files_under(found: Path) -> list[Path]:
    """A file, or the files of a folder and its subfolders, in order."""
    return [found] if found.is_file() else sorted(p for p in found.rglob("*") if p.is_file())


def image_files(app_class: type, options: AppOptions) -> dict[str, str]:
    """The build context files a container image's COPY/ADD lines name, read from its
    `context_dir` (fal's default: the folder `platform deploy` runs in), less what its
    dockerignore leaves out: {path relative to the context: base64}."""
    if options.image is None or not options.image.copies:
        return {}
    image = app_class.host_kwargs.get("image") or getattr(app_class, "image", None)
    if isinstance(image, dict):  # a function app's: fal's `ContainerImage.to_dict()`
        context, patterns = Path(image.get("docker_context_dir") or "."), image.get("docker_ignore")
    else:
        context, patterns = Path(getattr(image, "context_dir", ".")), getattr(image, "_dockerignore", None)
    context = context.resolve()
    ignore = [re.compile(pattern) for pattern in patterns or []]
    files: dict[str, str] = {}
    for source in options.image.copies:
        matches = sorted(context.glob(source.strip("/"))) if source.strip("/") not in ("", ".") else [context]
        if not matches:
            raise AppLoadError(f"image: COPY/ADD source {source!r} matches nothing in the build context {context} "
                               "(ContainerImage's context_dir, by default the folder you deploy from)")
        for found in matches:
            for path in _files_under(found):
                if not path.resolve().is_relative_to(context):
                    raise AppLoadError(f"image: COPY/ADD source {source!r} leads outside the build context {context}")
                relative = path.resolve().relative_to(context).as_posix()
                if not any(pattern.search(relative) for pattern in ignore):
                    files[relative] = base64.b64encode(path.read_bytes()).decode()
    if sum(len(data) for data in files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError("image: the files COPY/ADD take are over 20 MB in all; install large things in the "
                           "Dockerfile or put them in the model cache (/data)")
    return files


def check_serves(app_class: type) -> dict[str, Any]:
    """Build the app's FastAPI app as fal's runner will (without setup()) and return its
    OpenAPI schema; AppLoadError with fal's reason if it cannot be built."""
    try:
        return app_class(_allow_init=True).openapi()
    except Exception as error:
        cause = error.__cause__ or error
        raise AppLoadError(f"{app_class.__name__} cannot be served: {type(cause).__name__}: {cause}") from None


def prepare(ref: str, owner: str, app_name: Optional[str] = None, root: Optional[Path] = None,
            dockerfiles: Optional[dict[str, str]] = None) -> AppBundle:
    """Load `FILE::CLASS` and check all of it that can be checked before deploying; `root`
    is where an upload's `app_files` were unpacked (the server's copy of the project),
    `dockerfiles` the texts of the Dockerfiles the client read (`read_source`)."""
    source, app_class = read_source(ref, root, dockerfiles)
    options = read_options(app_class)
    for machine_type in options.machine_types:
        check_machine_type(machine_type)
    endpoints = find_endpoints(app_class)
    if not endpoints:
        raise AppLoadError(f"{source.class_name} has no @fal.endpoint methods")
    check_serves(app_class)
    app_dir = Path(source.filename).parent
    name = app_name if app_name is not None else options.name or kebab_case(source.class_name)
    check_name("user", owner)
    try:
        check_name("app", name)
    except InvalidNameError as error:
        if app_name is not None:
            raise AppLoadError(f"{error} (given with --app-name)") from None
        given = "the class's name= option" if options.name else "the class name"
        raise AppLoadError(f"{error} (the app name comes from {given}; pass --app-name to choose another)") from None
    shipped, project_dir = project_files(options, app_dir, root)
    return AppBundle(
        owner=owner,
        app_name=name,
        source=source,
        options=options,
        local_files=local_files(options, app_dir),
        endpoints={e.name: e.path for e in endpoints if not e.is_websocket},
        project_files=shipped,
        project_dir=project_dir,
    )


def describe(bundle: AppBundle) -> dict[str, Any]:
    """The bundle's facts worth showing in listings and dashboards."""
    return {
        "owner": bundle.owner,
        "app": bundle.app_name,
        "revision": bundle.revision,
        "class": bundle.source.class_name,
        "machine_type": bundle.options.machine_type,
        "auth": bundle.options.app_auth,
        **({"version": bundle.options.version} if bundle.options.version else {}),
    }
