"""Turning library errors into one line on stderr and an exit code (the only place the CLI does so),
and the consoles the commands print to."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from alignbench.errors import AlignbenchError, AlignbenchWarning

F = TypeVar("F", bound=Callable[..., object])

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """The terminal's width on a TTY; piped or captured, wide enough that the tables do not wrap
    (rich would assume 80 columns)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def fail(message: str, exit_code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True) if sys.stderr.isatty() else print(f"error: {message}", file=sys.stderr)
    return typer.Exit(exit_code)


def guarded(func: F) -> F:
    """Map AlignbenchError (and Ctrl-C) raised by the library to a clear line and exit code, and
    print each AlignbenchWarning as one line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except AlignbenchError as exc:
            raise fail(exc.message, exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; everything scored so far is stored and the next run resumes from there", 130) from None

    return wrapper  # type: ignore[return-value]


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """An AlignbenchWarning as one ``warning: ...`` line on stderr; others as Python shows them."""
    if issubclass(category, AlignbenchWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)
