"""Avro's zig-zag varint of a signed 64-bit integer, shared by the fused encoder (`fast_encode`,
per field of every row) and the decoder's Avro container framing (`decode`)."""

from __future__ import annotations


def unsigned_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


SMALL = tuple(unsigned_varint(n) for n in range(1 << 14))  # zig-zagged values below 16384: one table lookup


def append_zigzag(buf: bytearray, n: int) -> None:
    """Append the zig-zag varint of a signed 64-bit integer to `buf`."""
    n = (n << 1) ^ (n >> 63)
    if n < 16384:
        buf += SMALL[n]
        return
    while n > 0x7F:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def zigzag(n: int) -> bytes:
    """The zig-zag varint of a signed 64-bit integer."""
    buf = bytearray()
    append_zigzag(buf, n)
    return bytes(buf)
