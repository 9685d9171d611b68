"""Exceptions an app raises to choose the HTTP answer its client gets."""

from __future__ import annotations


class AppException(Exception):
    """An error whose `status_code` and message reach the client as they are."""

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class FieldException(Exception):
    """A 422 that names the offending input field, as a validation error would."""

    def __init__(self, field: str, message: str, status_code: int = 422, type: str = "value_error") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status_code = status_code
        self.type = type


class RequestTimeoutException(AppException):
    def __init__(self, message: str = "Request timed out") -> None:
        super().__init__(message, status_code=504)
