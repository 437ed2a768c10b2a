"""Loading the RSA public keys channels hand out, in the shapes their consoles show them."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PEM_LINE_CHARS = 64


def load_rsa_public_key(text: str) -> rsa.RSAPublicKey:
    """A PEM public key, or the bare base64 SubjectPublicKeyInfo Alipay's console displays."""
    text = text.strip()
    if not text.startswith("-----BEGIN"):
        body = "".join(text.split())
        lines = [body[i : i + PEM_LINE_CHARS] for i in range(0, len(body), PEM_LINE_CHARS)]
        text = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
    key = serialization.load_pem_public_key(text.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("expected an RSA public key")
    return key
