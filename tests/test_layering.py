"""The platform's folders are planes that import one way, and Ray's internals are reached
from two modules only (no cluster: the source is read, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

# Lowest first: a module imports its own plane and the ones before it, never one after.
PLANES = ("core", "store", "runtime", "cluster", "services", "ops", "control")
# Kept at their old paths for references that outlive a release (node configs, Serve's stored classes).
COMPAT = {"coldstart", "environments", "control_server", "queue_server", "file_server"}
RAY_SEAMS = {"platform/cluster/ray_private.py", "platform/cluster/serve_patches.py"}
PRIVATE_RAY = ("ray._private", "ray.serve._private", "ray._raylet", "ray.core.generated", "ray.serve.context")


def _module(path: Path) -> str:
    return "tenantserve." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _platform_modules() -> dict[str, Path]:
    return {_module(path): path for path in (ROOT / "platform").rglob("*.py")
            if "migrations" not in path.parts and not _is_compat(path)}


def _is_compat(path: Path) -> bool:
    return path.parent == ROOT / "platform" and path.stem in COMPAT


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The platform modules `path` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tenantserve.platform"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tenantserve.platform"))
    return found


def _names(node: ast.AST) -> list[str]:
    """The modules an import statement names (none for any other node)."""
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names] if isinstance(node, ast.Import) else []


def _plane(module: str) -> str:
    return module.split(".")[2]


def test_every_platform_module_lives_in_a_plane() -> None:
    loose = [path.name for path in (ROOT / "platform").glob("*.py") if path.stem not in COMPAT]
    assert not loose, f"modules outside the planes: {loose}"
    assert {path.name for path in (ROOT / "platform").iterdir() if path.is_dir() and path.name != "__pycache__"} \
        == set(PLANES)


def test_planes_import_one_way() -> None:
    known = _platform_modules()
    wrong = []
    for module, path in known.items():
        for imported in _imports(path, known):
            if imported.split(".")[2] in PLANES and PLANES.index(_plane(imported)) > PLANES.index(_plane(module)):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_planes_under_the_adapter_do_not_import_it() -> None:
    """The fal adapter's replica stands on core, store and runtime; they know nothing of fal."""
    wrong = []
    for module, path in _platform_modules().items():
        if _plane(module) in ("core", "store", "runtime"):
            for node in ast.walk(ast.parse(path.read_text())):
                wrong += [f"{module} imports {name}" for name in _names(node) if name.startswith("tenantserve.adapters")]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_function_level_imports_included() -> None:
    known = _platform_modules()
    graph = {module: {m for m in _imports(path, known) if m in known} for module, path in known.items()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(module):] + [module]))
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, trail + [module])
        done.add(module)

    for module in graph:
        visit(module, [])


def test_rays_internals_are_reached_from_the_two_seams_only() -> None:
    users = []
    for folder in ("platform", "adapters", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            if relative in RAY_SEAMS:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if any(name.startswith(PRIVATE_RAY) for name in _names(node)):
                    users.append(f"{relative}:{node.lineno}")
                if isinstance(node, ast.keyword) and node.arg == "_internal":
                    users.append(f"{relative}:{node.value.lineno}")
                if isinstance(node, ast.Attribute) and node.attr == "_private" and ast.unparse(node.value) == "ray":
                    users.append(f"{relative}:{node.lineno}")
    assert not users, users


def test_an_unsupported_ray_is_refused_with_the_version_to_install() -> None:
    from tenantserve.platform.cluster.ray_private import SUPPORTED_RAY, UnsupportedRay, check_ray_version

    check_ray_version(SUPPORTED_RAY)
    with pytest.raises(UnsupportedRay, match=f"needs Ray {SUPPORTED_RAY}.*has Ray 2.61.0.*pip install"):
        check_ray_version("2.61.0")
