"""The platform's services while the registry is busy: 503 with Retry-After, not a 500.

SQLite answers "database is locked" once another process has held a write lock past the
busy timeout (5 s); PostgreSQL raises the same OperationalError when it cannot be reached.
The request was not taken, so the client may simply try again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

RETRY_AFTER_S = 1


async def registry_busy(request: Request, error: Exception) -> JSONResponse:
    """A FastAPI exception handler for SQLAlchemy's OperationalError."""
    return JSONResponse({"detail": "The platform's registry is busy; retry shortly"}, status_code=503,
                        headers={"retry-after": str(RETRY_AFTER_S)})
