"""Fuzzing: whatever bytes arrive, a decoder returns JSON-ready data or raises DecodeError, nothing else.

A few hundred examples per decoder by default; ``--hypothesis-profile=fuzz`` (see conftest.py) runs
20 000. Payloads come both as arbitrary bytes and as a *valid* flags byte followed by arbitrary bytes,
because random flags are mostly rejected at the RFU check and would never reach the field walkers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given
from hypothesis import strategies as st

from gateway import codecs
from gateway.codecs import DecodeError, blood_pressure, bthome, heart_rate, plx, temperature, weight
from gateway.codecs import datetime as date_time
from gateway.codecs.ieee11073 import FLOAT, SFLOAT

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "54:48:E6:8F:80:A5"

# decoder, mask of the flag bits it defines
SIG_DECODERS: dict[str, tuple[Callable[[bytes], dict[str, Any]], int]] = {
    "temperature": (temperature.decode, 0x07),
    "intermediate_temperature": (temperature.decode_intermediate, 0x07),
    "blood_pressure": (blood_pressure.decode, 0x1F),
    "intermediate_cuff_pressure": (blood_pressure.decode_intermediate_cuff_pressure, 0x1F),
    "plx_spot_check": (plx.decode_spot_check, 0x1F),
    "plx_continuous": (plx.decode_continuous, 0x1F),
    "heart_rate": (heart_rate.decode, 0x1F),
    "weight": (weight.decode, 0x0F),
}


def _decodes_or_rejects(decode: Callable[[], dict[str, Any]]) -> None:
    try:
        result = decode()
    except DecodeError as error:
        assert str(error)  # a reason is always given
        return
    json.dumps(result, allow_nan=False)  # JSON-ready: no NaN/inf floats, no unserialisable values


def _payloads(defined_flags: int) -> st.SearchStrategy[bytes]:
    valid_flags = st.integers(0, 0xFF).map(lambda flags: flags & defined_flags)
    return st.binary(max_size=40) | st.builds(
        lambda flags, body: bytes([flags]) + body, valid_flags, st.binary(max_size=30)
    )


@pytest.mark.parametrize("name", SIG_DECODERS)
@given(data=st.data())
def test_sig_decoders_never_raise_anything_else(name: str, data: st.DataObject) -> None:
    decode, defined_flags = SIG_DECODERS[name]
    payload = data.draw(_payloads(defined_flags))
    _decodes_or_rejects(lambda: decode(payload))


BTHOME_INFO = st.sampled_from([0x40, 0x41, 0x44, 0x45])


@given(
    payload=st.binary(max_size=40)
    | st.builds(lambda info, body: bytes([info]) + body, BTHOME_INFO, st.binary(max_size=40))
)
def test_bthome_never_raises_anything_else(payload: bytes) -> None:
    _decodes_or_rejects(lambda: bthome.decode(payload))
    _decodes_or_rejects(lambda: bthome.decode(payload, mac=MAC, key=KEY))


def _sealed(info: int, plaintext: bytes, counter: int) -> bytes:
    """An authentic encrypted frame around arbitrary plaintext: fuzzes the walker behind decryption."""
    counter_bytes = counter.to_bytes(4, "little")
    nonce = bytes.fromhex(MAC.replace(":", "")) + b"\xd2\xfc" + bytes([info]) + counter_bytes
    sealed = AESCCM(KEY, tag_length=4).encrypt(nonce, plaintext, None)
    return bytes([info]) + sealed[:-4] + counter_bytes + sealed[-4:]


@given(
    info=st.sampled_from([0x41, 0x45]),
    plaintext=st.binary(max_size=40),
    counter=st.integers(0, (1 << 32) - 1),
)
def test_bthome_decrypted_objects_never_raise_anything_else(
    info: int, plaintext: bytes, counter: int
) -> None:
    frame = _sealed(info, plaintext, counter)
    _decodes_or_rejects(lambda: bthome.decode(frame, mac=MAC, key=KEY))


UUIDS = [0x2A1C, 0x2A1E, 0x2A35, 0x2A36, 0x2A5E, 0x2A5F, 0x2A37, 0x2A9D, 0xFCD2, 0x180D]


@given(uuid=st.sampled_from(UUIDS), payload=st.binary(max_size=40))
def test_dispatch_never_raises_anything_else(uuid: int, payload: bytes) -> None:
    _decodes_or_rejects(lambda: codecs.decode(uuid, payload, mac=MAC, key=KEY))


@given(data=st.binary(min_size=7, max_size=7))
def test_date_time_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        date_time.decode(data)


@given(word=st.integers(0, 0xFFFF), wide_word=st.integers(0, 0xFFFFFFFF))
def test_every_medfloat_word_decodes(word: int, wide_word: int) -> None:
    json.dumps([SFLOAT.decode(word.to_bytes(2, "little")), FLOAT.decode(wide_word.to_bytes(4, "little"))])
