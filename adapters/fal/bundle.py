"""Everything one deploy of a fal App carries: owner, name, source, options."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .loader import AppLoadError, AppSource, read_source
from .machines import check_machine_type
from .options import AppOptions, kebab_case, read_options
from .routes import find_endpoints


@dataclass(frozen=True)
class AppBundle:
    owner: str
    app_name: str
    source: AppSource
    options: AppOptions
    local_modules: tuple[str, ...] = field(default=())

    @property
    def revision(self) -> str:
        """A content hash of the code and options: equal bundles deploy the same revision."""
        digest = hashlib.sha256()
        digest.update(self.source.digest.encode())
        digest.update(self.options.model_dump_json().encode())
        return digest.hexdigest()[:12]

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
            local_modules=tuple(data.get("local_modules", ())),
        )


def _module_path(name: str, app_dir: Path) -> str:
    """Where a `local_python_modules` entry lives on this machine, to ship it to replicas."""
    candidates = [app_dir / name.replace(".", "/"), app_dir / f"{name.replace('.', '/')}.py"]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise AppLoadError(f"local_python_modules: cannot find module {name!r}")
    origin = Path(spec.origin)
    return str(origin.parent if origin.name == "__init__.py" else origin)


def prepare(ref: str, owner: str, app_name: Optional[str] = None) -> AppBundle:
    """Load `FILE::CLASS` and check all of it that can be checked before deploying."""
    source, app_class = read_source(ref)
    options = read_options(app_class)
    for machine_type in options.machine_types:
        check_machine_type(machine_type)
    if not find_endpoints(app_class):
        raise AppLoadError(f"{source.class_name} has no @fal.endpoint methods")
    app_dir = Path(source.filename).parent
    return AppBundle(
        owner=owner,
        app_name=app_name or options.name or kebab_case(source.class_name),
        source=source,
        options=options,
        local_modules=tuple(_module_path(name, app_dir) for name in options.local_python_modules),
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
