"""Everything one deploy of a fal App carries: owner, name, source, options."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from tenantserve.platform.core.naming import InvalidNameError, check_name

from .loader import AppLoadError, AppSource, read_source
from .machines import check_machine_type
from .options import AppOptions, kebab_case, read_options
from .routes import find_endpoints

# The options Serve changes on running replicas: not part of a bundle's code version.
SCALING_OPTIONS = ("keep_alive", "min_concurrency", "max_concurrency", "max_multiplexing")


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

    @property
    def revision(self) -> str:
        """A content hash of the code and options: equal bundles deploy the same revision."""
        digest = hashlib.sha256()
        digest.update(self.source.digest.encode())
        digest.update(self.options.model_dump_json().encode())
        digest.update(json.dumps(self.local_files, sort_keys=True).encode())
        return digest.hexdigest()[:12]

    @property
    def code_version(self) -> str:
        """What a replica is built from: everything but the autoscaling options, which
        Serve changes on running replicas. Two bundles with equal code versions share replicas."""
        digest = hashlib.sha256()
        digest.update(self.source.digest.encode())
        digest.update(self.options.model_dump_json(exclude=set(SCALING_OPTIONS)).encode())
        digest.update(json.dumps(self.local_files, sort_keys=True).encode())
        return digest.hexdigest()[:12]

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

    def to_json(self) -> str:
        data = asdict(self)
        data["options"] = self.options.model_dump(mode="json")
        return json.dumps(data, sort_keys=True)

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
        )


MAX_LOCAL_MODULE_BYTES = 20 * 1024 * 1024


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
    paths = [found] if found.is_file() else sorted(
        p for p in found.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    files = {str(p.relative_to(found.parent)): base64.b64encode(p.read_bytes()).decode() for p in paths}
    if sum(len(v) for v in files.values()) > MAX_LOCAL_MODULE_BYTES:
        raise AppLoadError(f"local_python_modules: {name!r} is over 20 MB; install it as a requirement instead")
    return files


def check_serves(app_class: type) -> dict[str, Any]:
    """Build the app's FastAPI app as fal's runner will (without setup()) and return its
    OpenAPI schema; AppLoadError with fal's reason if it cannot be built."""
    try:
        return app_class(_allow_init=True).openapi()
    except Exception as error:
        cause = error.__cause__ or error
        raise AppLoadError(f"{app_class.__name__} cannot be served: {type(cause).__name__}: {cause}") from None


def prepare(ref: str, owner: str, app_name: Optional[str] = None) -> AppBundle:
    """Load `FILE::CLASS` and check all of it that can be checked before deploying."""
    source, app_class = read_source(ref)
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
    return AppBundle(
        owner=owner,
        app_name=name,
        source=source,
        options=options,
        local_files={
            path: data for name in options.local_python_modules for path, data in module_files(name, app_dir).items()
        },
        endpoints={e.name: e.path for e in endpoints if not e.is_websocket},
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
    }
