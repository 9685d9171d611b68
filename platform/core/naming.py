"""Names of users, apps and secrets, and where an app lives in Serve and on the HTTP port.

One rule per kind of name, checked wherever a name enters the platform (the CLI, a
deploy, the registry) and again wherever a route or a Serve app name is built from one:
user and app names become URL path segments and HAProxy's routing, so nothing but
lowercase letters, digits and inner '-' may reach them.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SECRET = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

NAME_RULE = "1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
SECRET_RULE = "1-128 letters, digits and '_', not starting with a digit (an environment variable's name)"

# First path segments the platform serves itself (`/files/...`, `/queue/...`), so no user may take them.
RESERVED_USERS = frozenset({"api", "files", "queue"})

# The queue service's Serve names: the ingress (cluster/) asks it whether to admit a request.
QUEUE_APP = "queue"
QUEUE_DEPLOYMENT = "QueueServer"


class InvalidNameError(ValueError):
    """A user, app or secret name that breaks its rule; the message states the rule."""


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(kind: str, value: str) -> str:
    """`value` if it is a valid user or app name, else InvalidNameError naming the rule."""
    if not is_valid_name(value):
        raise InvalidNameError(f"invalid {kind} name {value!r}: use {NAME_RULE}")
    if kind == "user" and value in RESERVED_USERS:
        raise InvalidNameError(f"the user name {value!r} is reserved: the platform serves /{value}/ itself")
    return value


def check_secret_name(value: str) -> str:
    if not isinstance(value, str) or _SECRET.fullmatch(value) is None:
        raise InvalidNameError(f"invalid secret name {value!r}: use {SECRET_RULE}")
    return value


def is_valid_user(value: object) -> bool:
    return is_valid_name(value) and value not in RESERVED_USERS


def is_valid_app_ref(owner: object, app: object) -> bool:
    return is_valid_user(owner) and is_valid_name(app)


def serve_app_name(owner: str, app: str) -> str:
    """The Serve application's name, as the Ray dashboard shows it: `alice.my-app`."""
    return f"{check_name('user', owner)}.{check_name('app', app)}"


def route_prefix(owner: str, app: str) -> str:
    return f"/{check_name('user', owner)}/{check_name('app', app)}"


def parse_app_ref(ref: str) -> tuple[str, str]:
    """`alice/my-app` -> ("alice", "my-app")."""
    owner, sep, app = ref.partition("/")
    if not sep:
        raise InvalidNameError(f"name the app as USER/APP, e.g. alice/{ref}")
    return check_name("user", owner), check_name("app", app)
