"""Length hiding: Padmé padding (Nikitin et al., "Reducing Metadata Leakage from Encrypted
Files and Communication with PURBs", PETS 2019).

An encrypted object's length is visible to the storage provider; exact lengths confirm known
files (and a compressed length is a fingerprint of the content). Padmé rounds a length ``L``
up so that only its top ``floor(log2 L) - floor(log2 floor(log2 L)) - 1`` low bits are zeroed:
the padded length leaks O(log log L) bits instead of O(log L), at an overhead that is at most
1 / 2^(floor(log2 floor(log2 L)) + 1) of L, i.e. under 12 % and falling as objects grow
(< 6.3 % from 256 bytes, < 3.2 % from 64 KiB, < 1.6 % from 4 GiB).

Unlike padding to powers of two (up to 100 % overhead) it stays cheap for packs of many
megabytes; unlike a fixed bucket it hides the size class of small and large objects alike.

``pad``/``unpad`` use ISO/IEC 7816-4 framing (0x80 then zero bytes), which is unambiguous
and costs one byte; padding happens *before* encryption, so its bytes are authenticated.
"""

from __future__ import annotations

from lifeboat.errors import IntegrityError

PAD_MARK = 0x80
# padding zeros are looked at a window at a time, from the end: a 1 MiB blob has up to
# 32 KiB of them, a crafted object any number
TAIL_WINDOW = 4 << 10
MAX_TAIL_WINDOW = 1 << 20


def padded_length(n: int) -> int:
    """The Padmé length for an object of ``n`` bytes (``n`` itself for 0, 1 and 2)."""
    if n < 0:
        raise ValueError("a length cannot be negative")
    if n < 2:
        return n
    exponent = n.bit_length() - 1  # floor(log2 n)
    size_bits = exponent.bit_length()  # floor(log2 exponent) + 1
    mask = (1 << (exponent - size_bits)) - 1
    return (n + mask) & ~mask


def overhead(n: int) -> float:
    """Padding cost as a fraction of ``n`` (0.05 = 5 % more bytes stored)."""
    return (padded_length(n) - n) / n if n else 0.0


def max_overhead(n: int) -> float:
    """The bound on ``overhead`` for every length from ``n`` on: 2^-(floor(log2 floor(log2 n)) + 1)."""
    exponent = max(n.bit_length() - 1, 1)
    return 1.0 / (1 << exponent.bit_length())


def pad(data: bytes, min_size: int = 0) -> bytes:
    """``data`` ‖ 0x80 ‖ zeros, to the Padmé length of at least ``min_size`` bytes."""
    target = padded_length(max(len(data) + 1, min_size))
    return data + bytes([PAD_MARK]) + bytes(target - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    """The object ``pad`` was given."""
    return unpadded(padded).tobytes()


def unpadded(padded: bytes | memoryview) -> memoryview:
    """``unpad`` as a view of ``padded``: a blob's body is not copied to drop its padding
    (each copy of a restore's gigabytes was taken holding the interpreter lock). The
    zeros are looked for from the end, a window at a time."""
    view = memoryview(padded)
    end, window = len(view), TAIL_WINDOW
    while end:
        start = max(0, end - window)
        kept = len(view[start:end].tobytes().rstrip(b"\x00"))
        if kept:
            end = start + kept
            break
        end, window = start, min(window * 2, MAX_TAIL_WINDOW)
    if not end or view[end - 1] != PAD_MARK:
        raise IntegrityError("padded object is damaged (no padding mark)")
    return view[: end - 1]
