"""The one error every decoder raises for malformed input.

A decoder runs inside the radio loop, so it must never let an IndexError or struct.error escape:
every malformed payload becomes a ``DecodeError`` whose message is a short sentence an installer
can act on ("truncated: temperature needs 4 bytes, 2 left", "reserved flag bits set: 0x80").
"""

from __future__ import annotations


class DecodeError(ValueError):
    """A payload that does not follow its byte format; ``str(error)`` is the human reason."""
