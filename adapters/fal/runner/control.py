"""The runner's side of the control socket: the platform's file store, asked by the replica.

One request per connection: a JSON line (`op`, the request id being served, the op's own
fields), then `size` raw bytes for an upload; the answer is a JSON line, then `size` bytes
for a download. The replica stores and reads files with the app's and the caller's rights;
the runner never sees the store.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Optional

SOCKET_VAR = "TENANTSERVE_CONTROL_SOCKET"


class ControlError(OSError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def _read_line(stream: Any) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise ControlError(503, "the platform closed the control socket")
    return json.loads(line)


def call(op: str, fields: dict[str, Any], body: bytes = b"", request_id: Optional[str] = None) -> tuple[dict[str, Any], bytes]:
    """Send one request; return the answer's header and its bytes. Raises ControlError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(os.environ[SOCKET_VAR])
        header = {"op": op, "request_id": request_id, "size": len(body), **fields}
        conn.sendall(json.dumps(header).encode() + b"\n" + body)
        stream = conn.makefile("rb")
        answer = _read_line(stream)
        if "error" in answer:
            raise ControlError(int(answer.get("status", 500)), answer["error"])
        data = stream.read(int(answer.get("size", 0)))
        return answer, data
