"""TensorBoard event files, written in pure Python (scalars only): what callbacks.TensorBoard writes.

A file `events.out.tfevents.<time>.<host>` is a sequence of TFRecords, each

    uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)     (little endian)

whose data is an `Event` protocol buffer: wall_time (field 1, double), step (2, varint), file_version (3,
string: the first record, "brain.Event:2") or summary (5: repeated Value {tag (1, string), simple_value (2,
float)}). masked_crc32c(b) = rotate_right(crc32c(b), 15) + 0xa282ead8 (mod 2³²); crc32c is CRC-32 with
Castagnoli's polynomial (reflected 0x82f63b78). `read_scalars` reads such a file back (tests use it).
"""
import os
import socket
import struct
import time

_CASTAGNOLI = 0x82F63B78
_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ _CASTAGNOLI if _crc & 1 else _crc >> 1
    _TABLE.append(_crc)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value):
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, wire_type):
    return _varint(number << 3 | wire_type)


def _length_delimited(number, payload):
    return _field(number, 2) + _varint(len(payload)) + payload


def scalar_event(tag, value, step, wall_time):
    summary_value = _length_delimited(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(value))
    summary = _length_delimited(1, summary_value)
    return _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(int(step)) + \
        _length_delimited(5, summary)


def record(data):
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class EventFileWriter:
    """Appends scalar events to a new event file in `log_dir` (made if missing)."""

    def __init__(self, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        now = time.time()
        self.path = os.path.join(log_dir, f"events.out.tfevents.{int(now)}.{socket.gethostname()}")
        self.file = open(self.path, "ab")
        self.file.write(record(_field(1, 1) + struct.pack("<d", now) + _length_delimited(3, b"brain.Event:2")))

    def add_scalar(self, tag, value, step):
        self.file.write(record(scalar_event(tag, value, step, time.time())))

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()


def read_scalars(path):
    """[(tag, step, value)] of an event file, each record's checksums verified."""
    with open(path, "rb") as f:
        data = f.read()
    scalars, at = [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[at + 8:at + 12])[0] != masked_crc32c(header):
            raise ValueError(f"{path}: bad length checksum at byte {at}")
        body = data[at + 12:at + 12 + length]
        if struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] != masked_crc32c(body):
            raise ValueError(f"{path}: bad data checksum at byte {at}")
        at += 16 + length
        event = _parse(body)
        if 5 in event:
            value = _parse(_parse(event[5])[1])
            scalars.append((value[1].decode(), event.get(2, 0), struct.unpack("<f", value[2])[0]))
    return scalars


def _parse(message):
    """{field number: value} of a flat protocol-buffer message (the last value of a repeated field)."""
    fields, at = {}, 0
    while at < len(message):
        key, at = _read_varint(message, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], at = _read_varint(message, at)
        elif wire_type == 1:
            fields[number], at = message[at:at + 8], at + 8
        elif wire_type == 5:
            fields[number], at = message[at:at + 4], at + 4
        elif wire_type == 2:
            size, at = _read_varint(message, at)
            fields[number], at = message[at:at + size], at + size
        else:
            raise ValueError(f"unsupported protocol-buffer wire type {wire_type}")
    return fields


def _read_varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
