"""Python bytes literals (``b'...'``), as OPEA's gateways write each streamed text piece: read
without evaluating anything."""

from __future__ import annotations

_SIMPLE_ESCAPES = {
    ord("\\"): 0x5C,
    ord("'"): 0x27,
    ord('"'): 0x22,
    ord("n"): 0x0A,
    ord("t"): 0x09,
    ord("r"): 0x0D,
    ord("a"): 0x07,
    ord("b"): 0x08,
    ord("f"): 0x0C,
    ord("v"): 0x0B,
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_OCTAL = frozenset(b"01234567")


def parse_bytes_literal(literal: bytes | str) -> bytes:
    """The bytes a Python bytes literal (``b'...'`` / ``b"..."``, as ``repr(bytes)`` writes it)
    stands for. Nothing is evaluated: only the escapes ``\\\\ \\' \\" \\n \\t \\r \\a \\b \\f \\v
    \\xNN`` and octal ``\\NNN`` are read. A malformed literal raises ``ValueError``.

    Lenient where OPEA itself is sloppy: raw non-ASCII bytes and an unescaped quote inside are
    kept as they are (OPEA's orchestrator writes ``"data: b'" + text + "'"`` for guardrail
    answers), and an unknown escape keeps its backslash, as Python does.
    """
    raw = literal.encode("utf-8") if isinstance(literal, str) else bytes(literal)
    raw = raw.strip()
    if len(raw) < 3 or raw[0] not in b"bB" or raw[1] not in b"'\"" or raw[-1] != raw[1]:
        raise ValueError("not a bytes literal")
    body = raw[2:-1]
    out = bytearray()
    i = 0
    n = len(body)
    while True:
        j = body.find(b"\\", i)
        if j < 0:
            out += body[i:]
            return bytes(out)
        out += body[i:j]
        if j + 1 >= n:
            raise ValueError("bytes literal ends inside an escape (unterminated)")
        e = body[j + 1]
        if e == ord("x"):
            digits = body[j + 2 : j + 4]
            if len(digits) != 2 or not all(d in _HEX for d in digits):
                raise ValueError("invalid \\x escape in bytes literal")
            out.append(int(digits, 16))
            i = j + 4
        elif e in _OCTAL:
            k = j + 1
            while k < n and k < j + 4 and body[k] in _OCTAL:
                k += 1
            value = int(body[j + 1 : k], 8)
            if value > 0xFF:
                raise ValueError("octal escape out of range in bytes literal")
            out.append(value)
            i = k
        elif e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i = j + 2
        else:
            out += body[j : j + 2]
            i = j + 2
