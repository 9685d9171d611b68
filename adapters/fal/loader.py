"""Run a user's app file as a module, with fal's own SDK, to read its App class.

The CLI does this to read the class options and endpoints; the app's runner loads the
same source text (`runner/app.py`), so that it runs exactly what was deployed.
"""

from __future__ import annotations

import hashlib
import importlib
import linecache
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fal import App


class AppLoadError(ValueError):
    """The app file or class cannot be loaded; the message says why."""


@dataclass(frozen=True)
class AppSource:
    """An app file's text and the App class in it: what travels to the replicas."""

    filename: str
    source: str
    class_name: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.class_name}\0{self.source}".encode()).hexdigest()

    @property
    def module_name(self) -> str:
        stem = "".join(c if c.isalnum() else "_" for c in Path(self.filename).stem)
        return f"tenantserve_app_{stem}_{hashlib.sha256(self.source.encode()).hexdigest()[:10]}"


def parse_ref(ref: str) -> tuple[Path, Optional[str]]:
    """`app.py::MyApp` -> (path, "MyApp"); `app.py` -> (path, None)."""
    file_part, sep, class_part = ref.partition("::")
    if sep and not class_part:
        raise AppLoadError(f"{ref!r}: nothing after '::'; write FILE::CLASS, e.g. app.py::MyApp")
    return Path(file_part), (class_part or None)


def read_source(ref: str) -> tuple[AppSource, type]:
    """Read `FILE[::CLASS]` from disk and load its App class."""
    path, class_name = parse_ref(ref)
    if not path.is_file():
        raise AppLoadError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AppLoadError(f"{path}: cannot read: {error}") from None
    source = AppSource(filename=str(path.resolve()), source=text, class_name=class_name or "")
    module = _run_module(source.filename, text, source.module_name, search_app_dir=True)
    class_name = class_name or _only_app_class(module, path)
    source = AppSource(filename=source.filename, source=text, class_name=class_name)
    return source, _app_class(module, class_name, path)


def _run_module(filename: str, text: str, module_name: str, search_app_dir: bool = False) -> types.ModuleType:
    try:
        code = compile(text, filename, "exec")
    except SyntaxError as error:
        raise AppLoadError(f"{filename}, line {error.lineno}: {error.msg}") from None
    module = types.ModuleType(module_name)
    module.__file__ = filename
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    sys.modules[module_name] = module
    directory = str(Path(filename).parent)
    added = search_app_dir and directory not in sys.path and Path(directory).is_dir()
    if added:
        sys.path.insert(0, directory)
    try:
        exec(code, module.__dict__)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise AppLoadError(f"{filename}: importing it failed: {type(error).__name__}: {error}") from error
    finally:
        if added:
            sys.path.remove(directory)
        importlib.invalidate_caches()
    return module


def _app_classes(module: types.ModuleType) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, App) and value is not App
        and value.__module__ == module.__name__
    ]


def _only_app_class(module: types.ModuleType, path: Path) -> str:
    classes = _app_classes(module)
    if len(classes) != 1:
        found = ", ".join(classes) or "none"
        raise AppLoadError(f"{path}: name the App class as {path}::CLASS (App classes found: {found})")
    return classes[0]


def _app_class(module: types.ModuleType, class_name: str, path: Path) -> type:
    value = getattr(module, class_name, None)
    if value is None:
        found = ", ".join(_app_classes(module)) or "none"
        raise AppLoadError(f"{path}: no class {class_name!r} (App classes found: {found})")
    if not (isinstance(value, type) and issubclass(value, App)):
        raise AppLoadError(f"{path}: {class_name} is not a subclass of fal.App")
    return value
