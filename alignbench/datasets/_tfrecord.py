"""TFRecord files and tf.train.Example messages, read and written without TensorFlow (torch-free).

A TFRecord file is a sequence of records, each framed as (tensorflow/core/lib/io/record_writer.cc)::

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

A ClickMe record's payload is a serialised ``tf.train.Example`` (tensorflow/core/example/example.proto
and feature.proto)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }          // map entry: key = 1, value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Only the protobuf wire format is needed to read those: varints (wire type 0), 64-bit (1),
length-delimited (2) and 32-bit (5) fields. Parse errors raise ``RecordError``; callers turn it into a
DatasetError naming the file and byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import crc32c

# TFRecord masks every CRC as ((crc >> 15) | (crc << 17)) + 0xa282ead8, so that a CRC of data that
# itself holds CRCs is not trivially zero (tensorflow/core/lib/hash/crc32c.h, kMaskDelta).
_CRC_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")  # length, masked crc of the 8 length bytes
_FOOTER = struct.Struct("<I")  # masked crc of the payload

Feature = bytes | list[bytes] | list[int] | list[float]


class RecordError(ValueError):
    """A record that cannot be read; ``offset`` is the byte offset of the record's header."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.offset = offset
        self.problem = problem


def masked_crc32c(data: bytes | memoryview) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + _FOOTER.pack(masked_crc32c(payload))


def read_header(handle: BinaryIO, offset: int) -> int | None:
    """Payload length of the record whose header starts at ``offset`` (the handle is positioned
    there); None at a clean end of file."""
    header = handle.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise RecordError(offset, f"the file ends inside a record header ({len(header)} of 12 bytes)")
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        raise RecordError(offset, "the record length fails its CRC (corrupt or not a TFRecord file)")
    return length


def read_payload(handle: BinaryIO, offset: int, length: int, *, verify: bool = True) -> bytes:
    """The payload following a header read by :func:`read_header`, with its CRC checked."""
    payload = handle.read(length)
    footer = handle.read(_FOOTER.size)
    if len(payload) < length or len(footer) < _FOOTER.size:
        raise RecordError(offset, f"the file ends inside a record of {length} bytes (truncated)")
    if verify and masked_crc32c(payload) != _FOOTER.unpack(footer)[0]:
        raise RecordError(offset, "the record data fails its CRC (corrupt)")
    return payload


def record_size(length: int) -> int:
    """Bytes a record with a payload of ``length`` bytes takes in the file."""
    return _HEADER.size + length + _FOOTER.size


def read_record_at(handle: BinaryIO, offset: int) -> bytes:
    handle.seek(offset)
    length = read_header(handle, offset)
    if length is None:
        raise RecordError(offset, "no record at this offset: the file is shorter than it was when indexed")
    return read_payload(handle, offset, length)


def iter_records(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(header offset, payload) of every record, CRCs checked, from the handle's current position."""
    offset = handle.tell()
    while (length := read_header(handle, offset)) is not None:
        yield offset, read_payload(handle, offset, length)
        offset += record_size(length)


def write_records(path, payloads: Iterable[bytes]) -> int:
    """Write a TFRecord file; returns the number of records."""
    count = 0
    with open(path, "wb") as handle:
        for payload in payloads:
            handle.write(frame_record(payload))
            count += 1
    return count


# --- protobuf wire format -------------------------------------------------------------------------


def _read_varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("a varint runs past the end of its message")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise ValueError("a varint is longer than 10 bytes")


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of a message; length-delimited values are views."""
    position = 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _read_varint(data, position)
        elif wire_type == 1:
            value, position = data[position : position + 8], position + 8
        elif wire_type == 2:
            size, position = _read_varint(data, position)
            value, position = data[position : position + size], position + size
        elif wire_type == 5:
            value, position = data[position : position + 4], position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type} (field {number})")
        if position > len(data):
            raise ValueError(f"field {number} runs past the end of its message")
        yield number, wire_type, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_feature(data: memoryview) -> Feature:
    for number, _, kind in _fields(data):
        if not isinstance(kind, memoryview):
            continue
        if number == 1:  # BytesList
            return [bytes(value) for n, w, value in _fields(kind) if n == 1 and w == 2]
        if number == 2:  # FloatList, packed (wire 2) or not (wire 5)
            floats: list[float] = []
            for n, wire_type, value in _fields(kind):
                if n == 1 and wire_type == 2:
                    floats.extend(struct.unpack(f"<{len(value) // 4}f", value))
                elif n == 1 and wire_type == 5:
                    floats.append(struct.unpack("<f", value)[0])
            return floats
        if number == 3:  # Int64List, packed (wire 2) or not (wire 0)
            ints: list[int] = []
            for n, wire_type, value in _fields(kind):
                if n == 1 and wire_type == 2:
                    position = 0
                    while position < len(value):
                        item, position = _read_varint(value, position)
                        ints.append(_signed64(item))
                elif n == 1 and wire_type == 0:
                    ints.append(_signed64(value))
            return ints
    return []


def parse_example(payload: bytes | memoryview) -> dict[str, Feature]:
    """Feature name → list of values of a serialised tf.train.Example."""
    features: dict[str, Feature] = {}
    for number, wire_type, features_message in _fields(memoryview(payload)):
        if number != 1 or wire_type != 2:
            continue
        for entry_number, entry_wire, entry in _fields(features_message):
            if entry_number != 1 or entry_wire != 2:
                continue
            key, value = "", memoryview(b"")
            for n, w, item in _fields(entry):
                if n == 1 and w == 2:
                    key = bytes(item).decode("utf-8")
                elif n == 2 and w == 2:
                    value = item
            features[key] = _parse_feature(value)
    return features


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 → two's complement, as protobuf encodes it
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def encode_example(features: dict[str, bytes | list[bytes] | list[int] | list[float] | int]) -> bytes:
    """Serialise a tf.train.Example: bytes → BytesList, int → Int64List, float → FloatList."""
    entries = b""
    for key, value in features.items():
        values = [value] if isinstance(value, (bytes, int, float)) else list(value)
        if all(isinstance(v, bytes) for v in values):
            kind = _length_delimited(1, b"".join(_length_delimited(1, v) for v in values))
        elif all(isinstance(v, int) for v in values):
            kind = _length_delimited(3, _length_delimited(1, b"".join(_varint(v) for v in values)))
        elif all(isinstance(v, float) for v in values):
            kind = _length_delimited(2, _length_delimited(1, struct.pack(f"<{len(values)}f", *values)))
        else:
            raise TypeError(f"feature {key!r}: values must be all bytes, all ints or all floats")
        entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, kind)
        entries += _length_delimited(1, entry)
    return _length_delimited(1, entries)
