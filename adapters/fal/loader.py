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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from fal import App
from tenantserve_runner.app import function_app, is_function, is_served_function


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


def project_root(app_dir: Path) -> Optional[Path]:
    """The app's project, as fal's project template lays one out: the nearest folder at or
    above the app file's with a pyproject.toml. Its packages import as they do on fal."""
    for folder in (app_dir, *app_dir.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def enclosing_package(app_dir: Path) -> Optional[Path]:
    """The top of the package an app file is in (its folder has an `__init__.py`): fal's
    SDK ships it with the app, and it imports from the folder above it."""
    top = app_dir.resolve()
    if not (top / "__init__.py").is_file():
        return None
    while (top.parent / "__init__.py").is_file():
        top = top.parent
    return top


@contextmanager
def _dockerfiles(app_dir: Path, texts: dict[str, str]) -> Iterator[None]:
    """While an app's module runs: fal's `ContainerImage.from_dockerfile(path)` takes the
    text from `texts` (keyed by the path relative to the app file's folder, else as given),
    else from disk, and records it there. The client reads its Dockerfiles; the server,
    which has none of the client's files, gets the same texts with the upload."""
    from fal.container import ContainerImage

    real = ContainerImage.__dict__["from_dockerfile"]

    def from_dockerfile(cls: type, path: Any, **kwargs: Any) -> Any:
        given = Path(path)
        inside = given.is_absolute() and given.resolve().is_relative_to(app_dir)
        key = given.resolve().relative_to(app_dir).as_posix() if inside else str(path)
        if key not in texts:
            try:
                texts[key] = Path(path).read_text()
            except OSError as error:
                raise FileNotFoundError(f"ContainerImage.from_dockerfile({str(path)!r}): {error.strerror}; a path "
                                        "relative to the folder you deploy from, or one in the app's folder") from None
        return cls.from_dockerfile_str(texts[key], **kwargs)

    ContainerImage.from_dockerfile = classmethod(from_dockerfile)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        ContainerImage.from_dockerfile = real  # type: ignore[method-assign]


def read_source(ref: str, root: Optional[Path] = None,
                dockerfiles: Optional[dict[str, str]] = None) -> tuple[AppSource, type]:
    """Read `FILE[::CLASS]` from disk and load its App class, with the app file's folder,
    its project's root (`root`, else `project_root`) and the folder its package (if it is in
    one) imports from importable, as on fal. `dockerfiles`: the Dockerfiles it reads with
    `ContainerImage.from_dockerfile` (given ones are not read from disk, read ones are added)."""
    path, class_name = parse_ref(ref)
    if not path.is_file():
        raise AppLoadError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AppLoadError(f"{path}: cannot read: {error}") from None
    source = AppSource(filename=str(path.resolve()), source=text, class_name=class_name or "")
    root = root or project_root(path.resolve().parent)
    package = enclosing_package(path.resolve().parent)
    also = [str(folder) for folder in (root, package.parent if package else None) if folder is not None]
    with _dockerfiles(path.resolve().parent, {} if dockerfiles is None else dockerfiles):
        module = _run_module(source.filename, text, source.module_name, search_app_dir=True, also=also)
    class_name = class_name or _only_app_class(module, path)
    source = AppSource(filename=source.filename, source=text, class_name=class_name)
    return source, _app_class(module, class_name, path)


def _run_module(filename: str, text: str, module_name: str, search_app_dir: bool = False,
                also: Sequence[str] = ()) -> types.ModuleType:
    try:
        code = compile(text, filename, "exec")
    except SyntaxError as error:
        raise AppLoadError(f"{filename}, line {error.lineno}: {error.msg}") from None
    module = types.ModuleType(module_name)
    module.__file__ = filename
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    sys.modules[module_name] = module
    folders = [str(Path(filename).parent)] if search_app_dir else []
    added = [folder for folder in dict.fromkeys([*folders, *also]) if folder not in sys.path and Path(folder).is_dir()]
    sys.path[0:0] = added
    try:
        exec(code, module.__dict__)
    except Exception as error:
        sys.modules.pop(module_name, None)
        raise AppLoadError(f"{filename}: importing it failed: {type(error).__name__}: {error}") from error
    finally:
        for folder in added:
            sys.path.remove(folder)
        importlib.invalidate_caches()
    return module


def _app_classes(module: types.ModuleType) -> list[str]:
    """The module's own App classes and served functions, by name."""
    return [
        name
        for name, value in vars(module).items()
        if (isinstance(value, type) and issubclass(value, App) and value is not App
            and value.__module__ == module.__name__)
        or (is_served_function(value) and getattr(value.raw_func, "__module__", None) == module.__name__)
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
    if is_function(value) and value.options.gateway.get("exposed_port") is not None:
        raise AppLoadError(f"{path}: {class_name} runs its own server on exposed_port, which tenantserve does "
                           "not proxy; serve it as a fal.App, or as @fal.function(serve=True) without exposed_port")
    if is_served_function(value):
        return function_app(value)
    if is_function(value):
        raise AppLoadError(f"{path}: {class_name} is a fal.function without serve=True: a one-off remote call, "
                           "not an app to deploy (add serve=True to serve it at POST /)")
    if not (isinstance(value, type) and issubclass(value, App)):
        raise AppLoadError(f"{path}: {class_name} is not a subclass of fal.App")
    return value
