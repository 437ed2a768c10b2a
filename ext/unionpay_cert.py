"""UnionPay's signing certificate check (ACP SDK CertUtil.verifyAndGetVerifyPubKey).

Since gateway version 5.1.0 each notification carries its signing certificate (`signPubKeyCert`);
it is trusted only if it is within its validity period, was issued by UnionPay's middle
certificate, which was issued by UnionPay's root (both configured by the merchant), and the third
'@'-separated part of its CN is 中国银联股份有限公司 ("00040000:SIGN" in UnionPay's test
environment, accepted only when CN validation is turned off, as in the SDK).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ext.errors import SignatureInvalid

UNIONPAY_CN = "中国银联股份有限公司"
TEST_ENVIRONMENT_CN = "00040000:SIGN"


class UnionpayTrust:
    """The merchant's copies of UnionPay's root and middle certificates."""

    def __init__(self, root_pem: str, middle_pem: str, *, validate_cn_name: bool = True) -> None:
        self.root = x509.load_pem_x509_certificate(root_pem.encode())
        self.middle = x509.load_pem_x509_certificate(middle_pem.encode())
        self.validate_cn_name = validate_cn_name

    def signing_key(self, cert_pem: str, now: datetime) -> rsa.RSAPublicKey:
        """The public key of a notification's `signPubKeyCert`, or SignatureInvalid."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
        except ValueError as exc:
            raise SignatureInvalid("signPubKeyCert is not a PEM certificate") from exc
        allowed = (UNIONPAY_CN,) if self.validate_cn_name else (UNIONPAY_CN, TEST_ENVIRONMENT_CN)
        if _cn_owner(cert) not in allowed:
            raise SignatureInvalid("signPubKeyCert is not UnionPay's")
        for issued, issuer in ((cert, self.middle), (self.middle, self.root)):
            if not issued.not_valid_before_utc <= now.astimezone(UTC) <= issued.not_valid_after_utc:
                raise SignatureInvalid("a UnionPay certificate is outside its validity period")
            try:
                issued.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise SignatureInvalid("signPubKeyCert does not chain to UnionPay's root") from exc
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureInvalid("signPubKeyCert is not an RSA certificate")
        return key


def _cn_owner(cert: x509.Certificate) -> str:
    """The SDK's getIdentitiesFromCertficate: CN split on '@', third part."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    parts = str(names[0].value).split("@") if names else []
    return parts[2] if len(parts) > 2 else ""


def utc_now() -> datetime:
    return datetime.now(UTC)
