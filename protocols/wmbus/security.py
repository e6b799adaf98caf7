"""OMS / EN 13757-7 security primitives: AES-128 CTR (ELL), CBC with IV (mode 5), CBC with IV 0 and
derived keys (mode 7), and AES-CMAC for key derivation and the AFL MAC.

Pure functions over bytes. Nothing here formats a key into a message: callers name the meter.
The ``encrypt_*`` functions exist for the simulator and tests (a telegram we build must be the same
bytes a meter would send).
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

__all__ = [
    "aes_cmac",
    "cbc_decrypt",
    "cbc_encrypt",
    "ctr_crypt",
    "derive_mode7_keys",
    "ell_iv",
    "mode5_iv",
]

_ZERO_IV: Final = bytes(16)


def aes_cmac(key: bytes, message: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def ctr_crypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CTR is its own inverse. The ELL counter block's last byte counts blocks from 0, as CTR does."""
    context = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return context.update(data) + context.finalize()


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """Decrypt whole 16-byte blocks (callers pass a multiple of 16)."""
    context = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return context.update(data) + context.finalize()


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    context = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return context.update(data) + context.finalize()


def ell_iv(address: bytes, cc: int, session_number: bytes) -> bytes:
    """ELL AES-CTR initial counter: M(2) A(6) CC SN(4) FN(2)=0 BC=0 (EN 13757-4 ELL encryption)."""
    return address + bytes((cc,)) + session_number + b"\x00\x00\x00"


def mode5_iv(address: bytes, access_number: int) -> bytes:
    """Mode 5 IV: manufacturer and address of the meter (8 bytes) then the access number 8 times."""
    return address + bytes((access_number,)) * 8


def derive_mode7_keys(key: bytes, counter: bytes, meter_id: bytes) -> tuple[bytes, bytes]:
    """OMS KDF-A: Kenc = CMAC(K, 00h | counter | id | 07h * 7), Kmac the same with 01h (meter to other)."""
    tail = counter + meter_id + b"\x07" * 7
    return aes_cmac(key, b"\x00" + tail), aes_cmac(key, b"\x01" + tail)


def mode7_iv() -> bytes:
    return _ZERO_IV
