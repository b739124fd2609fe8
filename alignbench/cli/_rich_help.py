"""Typer's help renderer (``typer.rich_utils``) without the import of ``rich.markdown`` and ``rich.traceback``.

``typer.rich_utils`` imports both at module level, half of its import time (markdown-it, pygments),
yet uses ``Markdown`` only with ``rich_markup_mode="markdown"`` (ours is ``"rich"``) and ``Traceback``
only for pretty exceptions (disabled). ``import_rich_utils`` imports it with a stand-in for each of
the two classes that imports the real one when it is first used (called, or an attribute read), so
the rendered help is typer's own, byte for byte; only the two imports that help never needs are left
out. Without this, typer imports ``rich_utils`` itself on first use, with the same output.
"""

from __future__ import annotations

import importlib
import sys
import types

# module -> the classes typer.rich_utils takes from it
_DEFERRED = {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)}


class _Deferred(type):
    """The metaclass of a stand-in: calling it or reading an attribute uses the real class."""

    def real(cls) -> type:
        return getattr(importlib.import_module(cls.__module__), cls.__name__)

    def __call__(cls, *args, **kwargs):
        return cls.real()(*args, **kwargs)

    def __getattr__(cls, name: str):
        return getattr(cls.real(), name)

    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, cls.real())


def import_rich_utils() -> None:
    """Import ``typer.rich_utils`` (unless it is already) with stand-ins for the classes of ``_DEFERRED``.

    The stand-in modules sit in ``sys.modules`` only while ``typer.rich_utils`` is imported; a module
    that was already imported is used as it is."""
    if "typer.rich_utils" in sys.modules:
        return
    stand_ins = {}
    for module, names in _DEFERRED.items():
        if module not in sys.modules:
            stand_in = types.ModuleType(module)
            for name in names:
                setattr(stand_in, name, _Deferred(name, (), {"__module__": module, "__qualname__": name}))
            stand_ins[module] = stand_in
    sys.modules.update(stand_ins)
    try:
        importlib.import_module("typer.rich_utils")
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]
