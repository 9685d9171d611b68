"""Encryption at rest for users' secrets (Fernet: AES-128-CBC with an HMAC).

The key comes from `TENANTSERVE_SECRET_KEY`, or from `secret.key` in the state directory,
made on first use. Every node whose replicas need secrets must see the same key: on a
multi-node cluster set `TENANTSERVE_SECRET_KEY` on each node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Optional

from cryptography.fernet import Fernet, InvalidToken

from tenantserve.platform.core import settings

if TYPE_CHECKING:
    from tenantserve.platform.store.registry import Registry

class SecretsError(ValueError):
    """A value this platform's key cannot decrypt, or no key to decrypt with."""


def key_file(state_dir: Path) -> Path:
    return state_dir / "secret.key"


def load_key(path: Optional[Path], create: bool = False) -> bytes:
    env = settings.SECRET_KEY.get()
    if env:
        return env.encode()
    if path is None or (not create and not path.exists()):
        raise SecretsError(f"cannot read secrets: no TENANTSERVE_SECRET_KEY and no key file {path}")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # the CLI and the control plane may both be first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(Fernet.generate_key())
    return path.read_bytes().strip()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretsError("a stored secret cannot be decrypted with this platform's key") from None


def replica_environment(owner: str, registry: "Registry", key_path: Optional[str],
                        only: Optional[Collection[str]] = None) -> dict[str, str]:
    """A user's secrets, decrypted, for the environment of that user's replicas; `only`
    (an app's `secrets` option) names the ones it gets, None all of them."""
    sealed = {name: value for name, value in registry.secrets(owner).items() if only is None or name in only}
    if not sealed:
        return {}
    box = SecretBox(load_key(Path(key_path) if key_path else None))
    return {name: box.open(value) for name, (value, _) in sealed.items()}
