"""import_deferring: a module imported with stand-ins for submodules it only uses on paths we never
take; a use of a stand-in imports the real submodule and behaves as the real object."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from alignbench._utils.deferred import import_deferring


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway package ``deferpkg``: ``main`` takes a class and an instance from ``heavy``."""
    root = tmp_path / "deferpkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "heavy.py").write_text(
        textwrap.dedent(
            """
            class Thing:
                kind = "real"

                def __init__(self, value):
                    self.value = value

                @classmethod
                def make(cls, value):
                    return cls(value * 2)

            class Docs:
                def __call__(self):
                    return "menu"

                def page(self):
                    return "page"

            docs = Docs()
            """
        )
    )
    (root / "main.py").write_text("from deferpkg.heavy import Thing, docs\n\ndef annotated(x) -> Thing | None:\n    return Thing(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "deferpkg"
    for name in [m for m in sys.modules if m == "deferpkg" or m.startswith("deferpkg.")]:
        del sys.modules[name]


def test_the_deferred_submodule_is_imported_on_first_use(package: str) -> None:
    main = import_deferring("deferpkg.main", {"deferpkg.heavy": ("Thing", "docs")})
    assert "deferpkg.heavy" not in sys.modules  # the stand-in is gone, the real one not imported
    thing = main.annotated(3)  # a call imports it and builds the real class
    assert "deferpkg.heavy" in sys.modules
    heavy = sys.modules["deferpkg.heavy"]
    assert type(thing) is heavy.Thing and thing.value == 3
    assert isinstance(thing, main.Thing)
    assert main.Thing.kind == "real" and main.Thing.make(2).value == 4  # attributes and classmethods
    assert main.docs() == "menu" and main.docs.page() == "page"  # an instance: called, attributes read


def test_a_module_already_imported_is_used_as_it_is(package: str) -> None:
    import deferpkg.heavy

    main = import_deferring("deferpkg.main", {"deferpkg.heavy": ("Thing", "docs")})
    assert main.Thing is deferpkg.heavy.Thing
    assert import_deferring("deferpkg.main", {}) is main
