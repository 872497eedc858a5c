"""Mutations of valid inputs, for fuzzing parsers past their first line.

Random bytes stop at the first check of a strict parser. A valid input with a
few bytes or lines changed reaches every later check, so a parser given one
is held to the rule that matters: it returns what encodes to exactly these
bytes again, or it raises our own error (a FirmlogError), never another.
"""

from __future__ import annotations

from hypothesis import strategies as st

# What the formats are built from: separators, signature-line dashes, digits,
# base64, and bytes that no format here allows (NUL, 0xff, CR).
PIECES = (b"\n", b" ", b"+", b"=", b"/", b"0", b"9", b"A", "— ".encode(), b"\x00", b"\xff", b"\r")

_OPS = ("flip", "insert", "delete", "repeat", "drop line", "repeat line", "swap lines", "cut")


@st.composite
def mutated(draw: st.DrawFn, *valid: bytes, pieces: tuple[bytes, ...] = PIECES) -> bytes:
    """One of ``valid`` with 1 to 4 changes: a bit flipped, a piece inserted,
    bytes deleted or repeated, a line dropped, repeated or swapped with another,
    or the end cut off."""
    data = bytearray(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(_OPS))
        at = draw(st.sampled_from(range(max(len(data), 1))))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(pieces))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 40))]
        elif op == "cut":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.sampled_from(range(len(lines))))
            j = draw(st.sampled_from(range(len(lines))))
            if op == "drop line":
                del lines[i]
            elif op == "repeat line":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def mutated_text(*valid: str, pieces: tuple[bytes, ...] = PIECES) -> st.SearchStrategy[str]:
    """:func:`mutated` for parsers of text: the mutated UTF-8, bad bytes replaced."""
    encoded = [v.encode() for v in valid]
    return mutated(*encoded, pieces=pieces).map(lambda b: b.decode("utf-8", errors="replace"))
