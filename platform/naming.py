"""Names of users and apps, and where an app lives in Serve and on the HTTP port."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class InvalidNameError(ValueError):
    """A user or app name that could not be a URL path segment."""


# First path segments the platform serves itself (`/files/...`, `/queue/...`), so no user may take them.
RESERVED_USERS = frozenset({"files", "queue"})


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise InvalidNameError(
            f"invalid {kind} name {value!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if kind == "user" and value in RESERVED_USERS:
        raise InvalidNameError(f"the user name {value!r} is reserved: the platform serves /{value}/ itself")
    return value


def serve_app_name(owner: str, app: str) -> str:
    """The Serve application's name, as the Ray dashboard shows it: `alice.my-app`."""
    return f"{owner}.{app}"


def route_prefix(owner: str, app: str) -> str:
    return f"/{owner}/{app}"


def parse_app_ref(ref: str) -> tuple[str, str]:
    """`alice/my-app` -> ("alice", "my-app")."""
    owner, sep, app = ref.partition("/")
    if not sep:
        raise InvalidNameError(f"name the app as USER/APP, e.g. alice/{ref}")
    return check_name("user", owner), check_name("app", app)
