"""The ``comfyfn`` command (typer): one thin module per command group; library errors
become one escaped sentence and the documented exit code."""

from comfyfn.cli._app import app, main

__all__ = ["app", "main"]
