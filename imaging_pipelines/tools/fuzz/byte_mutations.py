"""Format-blind damage to a file's bytes: bit flips, overwrites, hostile integers, truncation, chunk edits, splices.

Every mutator takes the bytes and a :class:`random.Random` and returns ``(new bytes, description)``; the same
generator state gives the same result. Positions are biased towards the first 2 KiB, where headers live.
"""

from __future__ import annotations

import random
from collections.abc import Callable

INTERESTING_INTS = (0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023, 1024, 4096,
                    32767, 32768, 65535, 65536, 100000, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1,
                    -1, -2, -128, -32768, -(2**31))
INTERESTING_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-38, 1e38, 3.4e38, 1e308, float("nan"), float("inf"),
                      float("-inf"), 100000.0)

Mutator = Callable[[bytes, random.Random], tuple[bytes, str]]


def pack_int(value: int, size: int, little: bool) -> bytes:
    """``value`` as a ``size``-byte integer (two's complement, wrapped), little or big endian."""
    return (value % (1 << (8 * size))).to_bytes(size, "little" if little else "big")


def _offset(data: bytes, rng: random.Random, header_bias: float = 0.5) -> int:
    """A random position, half of the time inside the first 2 KiB (where headers live)."""
    if not data:
        return 0
    if rng.random() < header_bias:
        return rng.randrange(min(len(data), 2048))
    return rng.randrange(len(data))


def flip_bits(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    if not buf:
        return data, "flip: empty"
    n = rng.choice((1, 1, 2, 4, 8, 16))
    for _ in range(n):
        buf[_offset(buf, rng)] ^= 1 << rng.randrange(8)
    return bytes(buf), f"flip {n} bit(s)"


def overwrite_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    if not buf:
        return data, "overwrite: empty"
    at = _offset(buf, rng)
    n = min(rng.choice((1, 2, 4, 8)), len(buf) - at)
    fill = rng.choice((0x00, 0xFF, 0x7F, 0x80, None))
    for i in range(at, at + n):
        buf[i] = rng.randrange(256) if fill is None else fill
    return bytes(buf), f"overwrite {n} byte(s) at {at}"


def write_int(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    size = rng.choice((2, 4, 8))
    if len(data) < size:
        return data, "write int: too short"
    at = min(_offset(data, rng), len(data) - size)
    value = rng.choice(INTERESTING_INTS)
    little = rng.random() < 0.8
    new = data[:at] + pack_int(value, size, little) + data[at + size:]
    return new, f"write {size}-byte {'LE' if little else 'BE'} {value} at {at}"


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    marks = [0, 1, 4, 8, 128, 132, 348, 352, 540, 544, len(data) // 2, len(data) - 1, len(data) - 2]
    at = rng.choice(marks) if rng.random() < 0.5 else rng.randrange(len(data) + 1)
    at = max(0, min(at, len(data)))
    return data[:at], f"truncate to {at} of {len(data)} bytes"


def _chunk(data: bytes, rng: random.Random) -> tuple[int, int]:
    start = rng.randrange(len(data)) if data else 0
    return start, min(len(data), start + rng.choice((1, 4, 16, 64, 512, 4096)))


def delete_chunk(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    a, b = _chunk(data, rng)
    return data[:a] + data[b:], f"delete bytes {a}:{b}"


def duplicate_chunk(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    a, b = _chunk(data, rng)
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[a:b] + data[at:], f"copy bytes {a}:{b} to {at}"


def zero_chunk(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    a, b = _chunk(data, rng)
    return data[:a] + bytes(b - a) + data[b:], f"zero bytes {a}:{b}"


def append_junk(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    n = rng.choice((1, 7, 64, 1000))
    return data + rng.randbytes(n), f"append {n} random bytes"


BYTE_MUTATORS: tuple[Mutator, ...] = (flip_bits, flip_bits, overwrite_bytes, write_int, write_int, truncate,
                                      delete_chunk, duplicate_chunk, zero_chunk, append_junk)


def splice(data: bytes, donor: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Overwrite or insert a piece of another file (``donor``) at a random position."""
    if not donor:
        return data, "splice: empty donor"
    a, b = _chunk(donor, rng)
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        return data[:at] + donor[a:b] + data[at + (b - a):], f"splice-overwrite {b - a} donor bytes at {at}"
    return data[:at] + donor[a:b] + data[at:], f"splice-insert {b - a} donor bytes at {at}"
