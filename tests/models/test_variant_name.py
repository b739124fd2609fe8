"""The one display name of a model variant (``alignbench.models.specs.variant_name``)."""

from __future__ import annotations

import pytest

from alignbench.models.specs import variant_name


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "resnet50"),
        ({"dcls": True}, "resnet50 + DCLS"),
        ({"ca_stream": True}, "resnet50 + CA-Stream"),
        ({"dcls": True, "ca_stream": True}, "resnet50 + DCLS + CA-Stream"),
        ({"tag": "tuned"}, "resnet50 · tuned"),
        ({"dcls": True, "ca_stream": True, "tag": "tuned"}, "resnet50 + DCLS + CA-Stream · tuned"),
        ({"dcls": True, "tag": ""}, "resnet50 + DCLS"),  # an empty tag is no tag
        ({"tag": None}, "resnet50"),
    ],
)
def test_variant_name(options: dict, expected: str) -> None:
    assert variant_name("resnet50", **options) == expected
