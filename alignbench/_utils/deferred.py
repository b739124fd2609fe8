"""Importing a third-party module without the submodules it imports at module level but only uses on
paths we never take (``import_deferring``).

Two libraries pay at import for what our commands never use: ``typer.rich_utils`` (the help renderer)
imports ``rich.markdown`` and ``rich.traceback`` (markdown-it, pygments: half its import time) for
``rich_markup_mode="markdown"`` and pretty exceptions, both off here; ``plotext`` builds its whole
interactive documentation (``plotext.doc``) at import, about as long as ``import typer, rich``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping, Sequence


class _Deferred(type):
    """The metaclass of a stand-in for ``module.name``: calling it or reading an attribute of it imports
    ``module`` and uses the real object, so every use behaves as the real one (a class or an instance)."""

    def real(cls):
        return getattr(importlib.import_module(cls.__module__), cls.__name__)

    def __call__(cls, *args, **kwargs):
        return cls.real()(*args, **kwargs)

    def __getattr__(cls, name: str):
        return getattr(cls.real(), name)

    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, cls.real())


def import_deferring(module: str, deferred: Mapping[str, Sequence[str]]) -> types.ModuleType:
    """Import ``module`` (unless it is already) with stand-ins for the ``deferred`` submodules: each
    names the attributes ``module`` takes from it, and the submodule is imported when one is first used.

    The stand-in modules sit in ``sys.modules`` only while ``module`` is imported; a submodule already
    imported is used as it is. Only the stand-ins are bound in ``module``: a use of them imports the
    real submodule then (calling ``rich.markdown.Markdown``, reading ``plotext.doc.plot``).
    """
    if module in sys.modules:
        return sys.modules[module]
    stand_ins = {}
    for name, attributes in deferred.items():
        if name not in sys.modules:
            stand_in = types.ModuleType(name)
            for attribute in attributes:
                setattr(stand_in, attribute, _Deferred(attribute, (), {"__module__": name, "__qualname__": attribute}))
            stand_ins[name] = stand_in
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module(module)
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
