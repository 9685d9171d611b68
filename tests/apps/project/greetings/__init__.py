"""The project's own package, imported by the app at its top level."""


def greet(name: str) -> str:
    return f"hello {name}"
