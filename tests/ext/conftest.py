"""Throwaway keys for the channel tests: generated once per session, never checked in."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

RSA_BITS = 2048


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="session")
def channel_key() -> rsa.RSAPrivateKey:
    """The channel's signing key (WeChat platform, Alipay, UnionPay signing certificate)."""
    return new_rsa_key()


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    """A key nobody configured: what a forger has."""
    return new_rsa_key()
