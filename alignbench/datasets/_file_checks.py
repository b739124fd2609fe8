"""Cheap checks of the files a run will read, made before the run exists (torch-free).

A bad file found inside the scoring loop used to leave a run behind with a few rows that could never
be resumed (fixing the file changes the dataset's fingerprint). So every file is opened first and
its size read — from its header, not by decoding it:

- images: ``PIL.Image.open`` parses the header only (size, mode); a truncated JPEG or PNG is caught
  by its missing end marker (JPEG's EOI ``FF D9``; PNG's ``IEND`` chunk), and only a file whose end
  does not look right is decoded in full to tell a trailer after the end marker (valid) from a cut
  file (invalid);
- ``.npy`` arrays: ``numpy.lib.format`` reads the header (shape, dtype), and the file's size must
  hold the whole array.

ClickMe records are checked when a shard is indexed (every record's CRCs and features): the index
is made when the dataset is opened, before any run.
"""

from __future__ import annotations

import os
from pathlib import Path

_JPEG_END = b"\xff\xd9"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_TAIL_BYTES = 64
GRAYSCALE_MODES = ("1", "L", "I", "F", "I;16", "I;16B", "I;16L", "LA")


def heatmap_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (height, width) of a heatmap array of ``shape``: 2-D, or 3-D with one channel first or
    last (``[1, H, W]``, ``[H, W, 1]``); None for any other shape. A 1×1 array stays 1×1."""
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    elif len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None


def size_text(height: int, width: int) -> str:
    return f"{width}×{height}"


def _decodes(path: Path) -> str | None:
    """None when PIL decodes the whole image, else why not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, SyntaxError) as error:
        return str(error) or type(error).__name__
    return None


def image_header(path: Path) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """(problem, (height, width), PIL mode) of an image file, from its header and its last bytes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            with Image.open(handle) as image:
                size, mode, kind = image.size, image.mode, image.format
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAIL_BYTES))
            tail = handle.read().rstrip(b"\x00")  # some writers pad a JPEG with zero bytes
    except UnidentifiedImageError:
        return "not an image file PIL can read", None, None
    except (OSError, ValueError, SyntaxError) as error:  # a header cut short, a bad chunk
        return f"unreadable image ({error})", None, None
    if (kind == "JPEG" and not tail.endswith(_JPEG_END)) or (kind == "PNG" and not tail.endswith(_PNG_END)):
        why = _decodes(path)
        if why is not None:
            return f"truncated or corrupt {kind} ({why})", None, None
    return None, (size[1], size[0]), mode


def npy_header(path: Path) -> tuple[str | None, tuple[int, ...] | None, str | None]:
    """(problem, shape, dtype) of a ``.npy`` file, from its header and its size."""
    import numpy as np
    from numpy.lib import format as npy

    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            version = npy.read_magic(handle)
            if version not in readers:
                return f".npy format version {version[0]}.{version[1]}, which alignbench does not read", None, None
            shape, _, dtype = readers[version](handle)
            data_offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
    except (OSError, ValueError) as error:
        return f"not a .npy array file ({str(error).split(';')[0]})", None, None
    if dtype.hasobject:
        return "holds Python objects, not numbers", None, None
    expected = data_offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        return f"truncated ({size} bytes, the array needs {expected})", None, None
    if not np.issubdtype(dtype, np.number) and dtype != np.bool_:
        return f"holds {dtype} values, not numbers", None, None
    return None, tuple(int(n) for n in shape), str(dtype)
