# cython: language_level=3
"""SM2 (GB/T 32918) through OpenSSL 3 libcrypto: the compiled core of `switch.sm2`.

Encodings are the project's (see switch/sm2.py): keys in hex, signatures 64 bytes r || s,
ciphertexts C1 || C3 || C2 with C1 the bare 64-byte x || y. OpenSSL speaks DER on both
(ECDSA-Sig-Value for signatures, SM2Ciphertext for encryption), so this module converts at
the boundary with a minimal DER codec of its own.

Arguments are checked under the GIL; the OpenSSL calls (all the EC math) run with the GIL
released, so sign-ons can use threads. Every OpenSSL object is freed on every path, and the
errors OpenSSL queues are popped before returning (a stale queue confuses the next OpenSSL
user on the thread, e.g. `cryptography`).
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memmove, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

import re


cdef extern from "openssl/types.h" nogil:
    ctypedef struct BIGNUM:
        pass
    ctypedef struct BN_CTX:
        pass
    ctypedef struct EC_GROUP:
        pass
    ctypedef struct EC_POINT:
        pass
    ctypedef struct ENGINE:
        pass
    ctypedef struct EVP_MD:
        pass
    ctypedef struct EVP_MD_CTX:
        pass
    ctypedef struct EVP_PKEY:
        pass
    ctypedef struct EVP_PKEY_CTX:
        pass
    ctypedef struct OSSL_LIB_CTX:
        pass
    ctypedef struct OSSL_PARAM:
        pass
    ctypedef struct OSSL_PARAM_BLD:
        pass

cdef extern from "openssl/bn.h" nogil:
    BIGNUM* BN_new()
    BIGNUM* BN_bin2bn(const unsigned char* s, int length, BIGNUM* ret)
    int BN_bn2binpad(const BIGNUM* a, unsigned char* to, int tolen)
    void BN_free(BIGNUM* a)
    void BN_clear_free(BIGNUM* a)

cdef extern from "openssl/ec.h" nogil:
    ctypedef enum point_conversion_form_t:
        POINT_CONVERSION_UNCOMPRESSED
    enum:
        NID_sm2
    EC_GROUP* EC_GROUP_new_by_curve_name(int nid)
    int EC_GROUP_get_curve(const EC_GROUP* group, BIGNUM* p, BIGNUM* a, BIGNUM* b, BN_CTX* ctx)
    const EC_POINT* EC_GROUP_get0_generator(const EC_GROUP* group)
    const BIGNUM* EC_GROUP_get0_order(const EC_GROUP* group)
    EC_POINT* EC_POINT_new(const EC_GROUP* group)
    void EC_POINT_free(EC_POINT* point)
    int EC_POINT_mul(const EC_GROUP* group, EC_POINT* r, const BIGNUM* n, const EC_POINT* q,
                     const BIGNUM* m, BN_CTX* ctx)
    size_t EC_POINT_point2oct(const EC_GROUP* group, const EC_POINT* p, point_conversion_form_t form,
                              unsigned char* buf, size_t length, BN_CTX* ctx)
    int EC_POINT_oct2point(const EC_GROUP* group, EC_POINT* p, const unsigned char* buf, size_t length,
                           BN_CTX* ctx)

cdef extern from "openssl/core_names.h" nogil:
    const char* OSSL_PKEY_PARAM_GROUP_NAME
    const char* OSSL_PKEY_PARAM_PUB_KEY
    const char* OSSL_PKEY_PARAM_PRIV_KEY

cdef extern from "openssl/param_build.h" nogil:
    OSSL_PARAM_BLD* OSSL_PARAM_BLD_new()
    void OSSL_PARAM_BLD_free(OSSL_PARAM_BLD* bld)
    OSSL_PARAM* OSSL_PARAM_BLD_to_param(OSSL_PARAM_BLD* bld)
    int OSSL_PARAM_BLD_push_utf8_string(OSSL_PARAM_BLD* bld, const char* key, const char* buf, size_t bsize)
    int OSSL_PARAM_BLD_push_octet_string(OSSL_PARAM_BLD* bld, const char* key, const void* buf, size_t bsize)
    int OSSL_PARAM_BLD_push_BN(OSSL_PARAM_BLD* bld, const char* key, const BIGNUM* bn)

cdef extern from "openssl/params.h" nogil:
    void OSSL_PARAM_free(OSSL_PARAM* p)

cdef extern from "openssl/err.h" nogil:
    int ERR_set_mark()
    int ERR_pop_to_mark()

cdef extern from "openssl/evp.h" nogil:
    enum:
        EVP_PKEY_KEYPAIR
        EVP_PKEY_PUBLIC_KEY
    EVP_MD* EVP_MD_fetch(OSSL_LIB_CTX* ctx, const char* algorithm, const char* properties)
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* ctx)
    void EVP_MD_CTX_set_pkey_ctx(EVP_MD_CTX* ctx, EVP_PKEY_CTX* pctx)
    EVP_PKEY_CTX* EVP_PKEY_CTX_new_from_name(OSSL_LIB_CTX* libctx, const char* name, const char* propquery)
    EVP_PKEY_CTX* EVP_PKEY_CTX_new_from_pkey(OSSL_LIB_CTX* libctx, EVP_PKEY* pkey, const char* propquery)
    void EVP_PKEY_CTX_free(EVP_PKEY_CTX* ctx)
    int EVP_PKEY_CTX_set1_id(EVP_PKEY_CTX* ctx, const void* id, int length)
    int EVP_PKEY_fromdata_init(EVP_PKEY_CTX* ctx)
    int EVP_PKEY_fromdata(EVP_PKEY_CTX* ctx, EVP_PKEY** ppkey, int selection, OSSL_PARAM* params)
    void EVP_PKEY_free(EVP_PKEY* pkey)
    int EVP_DigestSignInit(EVP_MD_CTX* ctx, EVP_PKEY_CTX** pctx, const EVP_MD* md, ENGINE* e, EVP_PKEY* pkey)
    int EVP_DigestSign(EVP_MD_CTX* ctx, unsigned char* sig, size_t* siglen, const unsigned char* tbs,
                       size_t tbslen)
    int EVP_DigestVerifyInit(EVP_MD_CTX* ctx, EVP_PKEY_CTX** pctx, const EVP_MD* md, ENGINE* e,
                             EVP_PKEY* pkey)
    int EVP_DigestVerify(EVP_MD_CTX* ctx, const unsigned char* sig, size_t siglen, const unsigned char* tbs,
                         size_t tbslen)
    int EVP_PKEY_encrypt_init(EVP_PKEY_CTX* ctx)
    int EVP_PKEY_encrypt(EVP_PKEY_CTX* ctx, unsigned char* out, size_t* outlen, const unsigned char* inp,
                         size_t inlen)
    int EVP_PKEY_decrypt_init(EVP_PKEY_CTX* ctx)
    int EVP_PKEY_decrypt(EVP_PKEY_CTX* ctx, unsigned char* out, size_t* outlen, const unsigned char* inp,
                         size_t inlen)


cdef enum:
    COORD = 32  # bytes per coordinate or scalar
    POINT_OCTETS = 1 + 2 * COORD  # 0x04 || x || y
    C1C3 = 3 * COORD  # raw ciphertext bytes before C2
    DER_HEADER_MAX = 4  # tag, 0x82, two length bytes: every length here stays below 64 KiB
    DER_INT_MAX = 3 + COORD  # tag, length, sign pad, 32 bytes
    DER_SIG_MAX = DER_HEADER_MAX + 2 * DER_INT_MAX
    # SEQUENCE header, two INTEGERs, OCTET STRING C3, OCTET STRING header of C2.
    DER_CIPHERTEXT_OVERHEAD = DER_HEADER_MAX + 2 * DER_INT_MAX + 2 + COORD + DER_HEADER_MAX
    # A fresh k only helps when the key stream came out all zero (probability 2**-8n).
    NONCE_ATTEMPTS_MAX = 8
    TAG_INTEGER = 0x02
    TAG_OCTET_STRING = 0x04
    TAG_SEQUENCE = 0x30

# ENTL is a 2-byte count of bits, so 8191 bytes would fit; OpenSSL 3.0 stops one byte short.
USER_ID_MAX_BYTES = 0xFFFF // 8 - 1
C2_MAX_BYTES = 0xFFFF - DER_CIPHERTEXT_OVERHEAD  # keeps every DER length within two bytes
KEY_CACHE_MAX = 1024

_PRIVATE_HEX_RE = re.compile("[0-9a-fA-F]{64}")
_PUBLIC_HEX_RE = re.compile("04[0-9a-fA-F]{128}")

# Status codes of the nogil helpers.
cdef enum:
    OK = 0
    FAILED = 1          # OpenSSL refused (bad signature, C3 mismatch) or ran out of memory
    C1_OFF_CURVE = 2
    ZERO_KEY_STREAM = 3
    NO_NONCE = 4


# --------------------------------------------------------------------------- module state

cdef EC_GROUP* _GROUP = EC_GROUP_new_by_curve_name(NID_sm2)
cdef EVP_MD* _SM3 = EVP_MD_fetch(NULL, b"SM3", NULL)
if _GROUP == NULL or _SM3 == NULL:
    raise ImportError("this OpenSSL has no SM2 curve or no SM3 digest")


cdef object _bn_int(const BIGNUM* bn):
    cdef unsigned char buf[COORD]
    if BN_bn2binpad(bn, buf, COORD) != COORD:
        raise ImportError("SM2 curve parameter does not fit in 32 bytes")
    return int.from_bytes(buf[:COORD], "big")


def _curve():
    """(p, a, b, gx, gy, n) of OpenSSL's SM2 group."""
    cdef BIGNUM* p = BN_new()
    cdef BIGNUM* a = BN_new()
    cdef BIGNUM* b = BN_new()
    cdef unsigned char g[POINT_OCTETS]
    try:
        if (p == NULL or a == NULL or b == NULL or not EC_GROUP_get_curve(_GROUP, p, a, b, NULL)
                or EC_POINT_point2oct(_GROUP, EC_GROUP_get0_generator(_GROUP), POINT_CONVERSION_UNCOMPRESSED,
                                      g, POINT_OCTETS, NULL) != POINT_OCTETS):
            raise ImportError("cannot read OpenSSL's SM2 curve")
        gx = int.from_bytes(g[1:1 + COORD], "big")
        gy = int.from_bytes(g[1 + COORD:POINT_OCTETS], "big")
        return _bn_int(p), _bn_int(a), _bn_int(b), gx, gy, _bn_int(EC_GROUP_get0_order(_GROUP))
    finally:
        BN_free(p)
        BN_free(a)
        BN_free(b)


CURVE = _curve()
cdef object _N = CURVE[5]


# --------------------------------------------------------------------------- keys

cdef class PrivateKey:
    """A parsed SM2 key pair (an OpenSSL EVP_PKEY); make one with `private_key`."""

    cdef EVP_PKEY* pkey
    cdef readonly str public_hex

    def __init__(self):
        raise TypeError("use private_key(hex)")

    def __dealloc__(self):
        EVP_PKEY_free(self.pkey)


cdef class PublicKey:
    """A parsed SM2 public key (an OpenSSL EVP_PKEY); make one with `public_key`."""

    cdef EVP_PKEY* pkey
    cdef readonly bytes xy  # the 64-byte x || y, for Z

    def __init__(self):
        raise TypeError("use public_key(hex)")

    def __dealloc__(self):
        EVP_PKEY_free(self.pkey)


# Terminals sign on again and again with the same key, and a sign-on uses its public key twice
# (verify, then encrypt): parsing costs an EVP_PKEY import, and for a private key a scalar
# multiplication. Bounded; the oldest entry goes first.
cdef dict _private_cache = {}
cdef dict _public_cache = {}


cdef _remember(dict cache, str text, key):
    if len(cache) >= KEY_CACHE_MAX:
        cache.pop(next(iter(cache)), None)
    cache[text] = key
    return key


def private_key(private_hex):
    """The key pair of a 64 hex private key d in [1, n-2]; ValueError otherwise (never echoing it)."""
    cached = _private_cache.get(private_hex) if isinstance(private_hex, str) else None
    if cached is not None:
        return cached
    if not isinstance(private_hex, str) or _PRIVATE_HEX_RE.fullmatch(private_hex) is None:
        raise ValueError("SM2 private key must be 64 hex characters")
    if not 1 <= int(private_hex, 16) <= _N - 2:  # signing needs 1 + d invertible
        raise ValueError("SM2 private key is outside [1, n-2]")
    cdef bytes d = bytes.fromhex(private_hex)
    cdef const unsigned char* d_ptr = d
    cdef unsigned char pub[POINT_OCTETS]
    cdef EVP_PKEY* pkey
    with nogil:
        pkey = _keypair(d_ptr, pub)
    if pkey == NULL:
        raise MemoryError("OpenSSL could not build the SM2 key pair")
    cdef PrivateKey key = PrivateKey.__new__(PrivateKey)
    key.pkey = pkey
    key.public_hex = pub[:POINT_OCTETS].hex()
    return _remember(_private_cache, private_hex, key)


def public_key(public_hex):
    """The key of a 130 hex "04" || x || y public key on the curve; ValueError otherwise."""
    cached = _public_cache.get(public_hex) if isinstance(public_hex, str) else None
    if cached is not None:
        return cached
    if not isinstance(public_hex, str) or _PUBLIC_HEX_RE.fullmatch(public_hex) is None:
        raise ValueError('SM2 public key must be 130 hex characters "04" || x || y')
    cdef bytes octets = bytes.fromhex(public_hex)
    cdef const unsigned char* pub = octets
    cdef EVP_PKEY* pkey
    with nogil:
        # OpenSSL's import refuses coordinates >= p and points off the curve. The cofactor is 1,
        # so every point on the curve has order n and nP = O needs no separate check.
        pkey = _pkey_from_params(pub, NULL)
    if pkey == NULL:
        raise ValueError("SM2 public key is not a point on the curve")
    cdef PublicKey key = PublicKey.__new__(PublicKey)
    key.pkey = pkey
    key.xy = octets[1:]
    return _remember(_public_cache, public_hex, key)


def _check_provider():
    """Fail at import, not with a misleading "not a point on the curve" later, without SM2 keys."""
    try:
        public_key(f"04{CURVE[3]:064x}{CURVE[4]:064x}")  # the base point G
    except ValueError:
        raise ImportError("OpenSSL cannot import SM2 keys: is its default provider available?") from None


_check_provider()


cdef EVP_PKEY* _keypair(const unsigned char* d32, unsigned char* pub65) noexcept nogil:
    """EVP_PKEY holding d and P = dG (OpenSSL's SM2 signing needs P for Z); NULL on failure."""
    cdef EVP_PKEY* pkey = NULL
    ERR_set_mark()
    cdef BIGNUM* d = BN_bin2bn(d32, COORD, NULL)
    cdef EC_POINT* point = EC_POINT_new(_GROUP)
    if (d != NULL and point != NULL and EC_POINT_mul(_GROUP, point, d, NULL, NULL, NULL) == 1
            and EC_POINT_point2oct(_GROUP, point, POINT_CONVERSION_UNCOMPRESSED, pub65, POINT_OCTETS,
                                   NULL) == POINT_OCTETS):
        pkey = _pkey_from_params(pub65, d)
    EC_POINT_free(point)
    BN_clear_free(d)
    ERR_pop_to_mark()
    return pkey


cdef EVP_PKEY* _pkey_from_params(const unsigned char* pub65, const BIGNUM* d) noexcept nogil:
    """Import an SM2 key (d may be NULL for a public key) through the provider; NULL on failure."""
    cdef OSSL_PARAM* params = NULL
    cdef EVP_PKEY_CTX* ctx = NULL
    cdef EVP_PKEY* pkey = NULL
    ERR_set_mark()
    cdef OSSL_PARAM_BLD* build = OSSL_PARAM_BLD_new()
    if (build != NULL and OSSL_PARAM_BLD_push_utf8_string(build, OSSL_PKEY_PARAM_GROUP_NAME, b"SM2", 0)
            and OSSL_PARAM_BLD_push_octet_string(build, OSSL_PKEY_PARAM_PUB_KEY, pub65, POINT_OCTETS)
            and (d == NULL or OSSL_PARAM_BLD_push_BN(build, OSSL_PKEY_PARAM_PRIV_KEY, d))):
        params = OSSL_PARAM_BLD_to_param(build)
    if params != NULL:
        ctx = EVP_PKEY_CTX_new_from_name(NULL, b"SM2", NULL)
    if ctx != NULL and EVP_PKEY_fromdata_init(ctx) == 1:
        if EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY if d == NULL else EVP_PKEY_KEYPAIR,
                             params) != 1:
            pkey = NULL
    EVP_PKEY_CTX_free(ctx)
    OSSL_PARAM_free(params)
    OSSL_PARAM_BLD_free(build)
    ERR_pop_to_mark()
    return pkey


# --------------------------------------------------------------------------- sign / verify

def sign(PrivateKey key not None, bytes message not None, bytes user_id not None):
    """The 64-byte signature r || s of SM3(Z || message), Z over `user_id`."""
    if len(user_id) > USER_ID_MAX_BYTES:
        raise ValueError(f"SM2 user id must be at most {USER_ID_MAX_BYTES} bytes")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * COORD)
    cdef unsigned char* out_ptr = <unsigned char*>PyBytes_AS_STRING(out)
    cdef const unsigned char* msg = message
    cdef const unsigned char* uid = user_id
    cdef size_t msg_len = len(message)
    cdef int uid_len = len(user_id)
    cdef int status
    with nogil:
        status = _sign(key.pkey, uid, uid_len, msg, msg_len, out_ptr)
    if status != OK:
        raise RuntimeError("OpenSSL failed to make an SM2 signature")
    return out


def verify(PublicKey key not None, bytes message not None, bytes signature not None, bytes user_id not None):
    """True when `signature` (64 bytes r || s) is valid; False for anything else."""
    if len(signature) != 2 * COORD or len(user_id) > USER_ID_MAX_BYTES:
        return False
    cdef const unsigned char* msg = message
    cdef const unsigned char* sig = signature
    cdef const unsigned char* uid = user_id
    cdef size_t msg_len = len(message)
    cdef int uid_len = len(user_id)
    cdef int status
    with nogil:
        status = _verify(key.pkey, uid, uid_len, msg, msg_len, sig)
    return status == OK


cdef int _sign(EVP_PKEY* pkey, const unsigned char* uid, int uid_len, const unsigned char* msg, size_t msg_len,
               unsigned char* out64) noexcept nogil:
    cdef unsigned char der[DER_SIG_MAX]
    cdef size_t der_len = DER_SIG_MAX
    cdef int status = FAILED
    ERR_set_mark()
    cdef EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)
    cdef EVP_MD_CTX* mctx = EVP_MD_CTX_new()
    if _digest_ctx(pctx, mctx, uid, uid_len):
        # OpenSSL draws k itself (its DRBG) and redraws on r = 0, r + k = n or s = 0.
        if (EVP_DigestSignInit(mctx, NULL, _SM3, NULL, pkey) == 1
                and EVP_DigestSign(mctx, der, &der_len, msg, msg_len) == 1
                and _der_signature_to_raw(der, der_len, out64)):
            status = OK
    EVP_MD_CTX_free(mctx)  # does not free pctx (EVP_MD_CTX_set_pkey_ctx keeps it ours)
    EVP_PKEY_CTX_free(pctx)
    ERR_pop_to_mark()
    return status


cdef int _verify(EVP_PKEY* pkey, const unsigned char* uid, int uid_len, const unsigned char* msg,
                 size_t msg_len, const unsigned char* sig64) noexcept nogil:
    cdef unsigned char der[DER_SIG_MAX]
    cdef size_t der_len = _der_signature(sig64, der)
    cdef int status = FAILED
    ERR_set_mark()
    cdef EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)
    cdef EVP_MD_CTX* mctx = EVP_MD_CTX_new()
    # OpenSSL checks r, s in [1, n-1] and t = r + s mod n != 0 (GB/T 32918.2 7.1 B1, B2, B5).
    if (_digest_ctx(pctx, mctx, uid, uid_len)
            and EVP_DigestVerifyInit(mctx, NULL, _SM3, NULL, pkey) == 1
            and EVP_DigestVerify(mctx, der, der_len, msg, msg_len) == 1):
        status = OK
    EVP_MD_CTX_free(mctx)
    EVP_PKEY_CTX_free(pctx)
    ERR_pop_to_mark()
    return status


cdef bint _digest_ctx(EVP_PKEY_CTX* pctx, EVP_MD_CTX* mctx, const unsigned char* uid, int uid_len) noexcept nogil:
    """Attach pctx, carrying the distinguishing id, to mctx (OpenSSL 3 sets no default id)."""
    if pctx == NULL or mctx == NULL or EVP_PKEY_CTX_set1_id(pctx, uid, uid_len) <= 0:
        return False
    EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
    return True


# --------------------------------------------------------------------------- encrypt / decrypt

def encrypt(PublicKey key not None, bytes plaintext not None):
    """C1 || C3 || C2 (C1 the bare x || y) of a 1 to C2_MAX_BYTES byte plaintext."""
    cdef size_t n = len(plaintext)
    if not 1 <= n <= C2_MAX_BYTES:
        raise ValueError(f"SM2 plaintext must be 1 to {C2_MAX_BYTES} bytes")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, C1C3 + n)
    cdef unsigned char* out_ptr = <unsigned char*>PyBytes_AS_STRING(out)
    cdef const unsigned char* msg = plaintext
    cdef int status
    with nogil:
        status = _encrypt(key.pkey, msg, n, out_ptr)
    if status == NO_NONCE:
        raise RuntimeError("SM2 encryption found no usable nonce: is the random source broken?")
    if status != OK:
        raise RuntimeError("OpenSSL failed to SM2-encrypt")
    return out


def decrypt(PrivateKey key not None, bytes ciphertext not None):
    """The plaintext of C1 || C3 || C2; ValueError if the ciphertext is bad or for another key."""
    cdef size_t length = len(ciphertext)
    if not C1C3 < length <= C1C3 + C2_MAX_BYTES:
        raise ValueError(f"SM2 ciphertext must be {C1C3 + 1} to {C1C3 + C2_MAX_BYTES} bytes, got {length}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, length - C1C3)
    cdef unsigned char* out_ptr = <unsigned char*>PyBytes_AS_STRING(out)
    cdef const unsigned char* ct = ciphertext
    cdef int status
    with nogil:
        status = _decrypt(key.pkey, ct, length, out_ptr)
    if status == C1_OFF_CURVE:
        # Checked first: an invalid-curve C1 would otherwise probe the private key.
        raise ValueError("SM2 ciphertext C1 is not a point on the curve")
    if status == ZERO_KEY_STREAM:
        raise ValueError("SM2 ciphertext gives an all-zero key stream")
    if status != OK:
        raise ValueError("SM2 ciphertext failed its C3 check (wrong key or corrupted)")
    return out


cdef int _encrypt(EVP_PKEY* pkey, const unsigned char* msg, size_t n, unsigned char* out) noexcept nogil:
    cdef size_t der_len
    cdef int status = FAILED
    cdef int attempt
    ERR_set_mark()
    cdef EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)
    cdef unsigned char* der = <unsigned char*>malloc(n + DER_CIPHERTEXT_OVERHEAD)
    # The asymmetric cipher defaults to SM3 for C3 and the KDF (GB/T 32918.4).
    if pctx != NULL and der != NULL and EVP_PKEY_encrypt_init(pctx) == 1:
        for attempt in range(NONCE_ATTEMPTS_MAX):
            der_len = n + DER_CIPHERTEXT_OVERHEAD
            if (EVP_PKEY_encrypt(pctx, der, &der_len, msg, n) != 1
                    or not _der_ciphertext_to_raw(der, der_len, n, out)):
                status = FAILED
                break
            # GB/T 32918.4 6.1 A5: an all-zero key stream t needs a fresh k. Recent 3.0 releases
            # redraw k themselves; this guards the ones that do not (C2 = M xor t is M then).
            if memcmp(out + C1C3, msg, n) != 0:
                status = OK
                break
            status = NO_NONCE
    free(der)
    EVP_PKEY_CTX_free(pctx)
    ERR_pop_to_mark()
    return status


cdef int _decrypt(EVP_PKEY* pkey, const unsigned char* ct, size_t length, unsigned char* out) noexcept nogil:
    cdef size_t n = length - C1C3
    cdef unsigned char* der = NULL
    cdef size_t der_len
    cdef size_t out_len = n
    cdef EVP_PKEY_CTX* pctx = NULL
    cdef int status = FAILED
    ERR_set_mark()
    if not _on_curve(ct):
        status = C1_OFF_CURVE
    else:
        der = <unsigned char*>malloc(n + DER_CIPHERTEXT_OVERHEAD)
        pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)
    if der != NULL and pctx != NULL:
        der_len = _der_ciphertext(ct, n, der)
        # OpenSSL compares C3 (in constant time) before it hands back the plaintext; recent 3.0
        # releases also refuse an all-zero key stream (B4), without saying which check failed.
        if (EVP_PKEY_decrypt_init(pctx) == 1 and EVP_PKEY_decrypt(pctx, out, &out_len, der, der_len) == 1
                and out_len == n):
            status = ZERO_KEY_STREAM if memcmp(out, ct + C1C3, n) == 0 else OK
    EVP_PKEY_CTX_free(pctx)
    free(der)
    ERR_pop_to_mark()
    return status


cdef bint _on_curve(const unsigned char* xy) noexcept nogil:
    """Is the bare x || y a point on the curve (coordinates below p)?"""
    cdef unsigned char octets[POINT_OCTETS]
    cdef bint ok
    cdef EC_POINT* point = EC_POINT_new(_GROUP)  # the caller holds an error mark
    octets[0] = 0x04
    memcpy(octets + 1, xy, 2 * COORD)
    ok = point != NULL and EC_POINT_oct2point(_GROUP, point, octets, POINT_OCTETS, NULL) == 1
    EC_POINT_free(point)
    return ok


# --------------------------------------------------------------------------- DER
# Just what OpenSSL exchanges here: a SEQUENCE of non-negative INTEGERs of at most 32 bytes
# (r, s; C1's x, y) and OCTET STRINGs (C3, C2), every length below 64 KiB.

cdef struct DerReader:
    const unsigned char* pos
    const unsigned char* end


cdef bint _der_next(DerReader* reader, unsigned char tag, DerReader* content) noexcept nogil:
    """Step over one element with this tag; its content goes to `content`."""
    cdef const unsigned char* pos = reader.pos
    cdef size_t length, digits, i
    if reader.end - pos < 2 or pos[0] != tag:
        return False
    length = pos[1]
    pos += 2
    if length & 0x80:
        digits = length & 0x7F
        if digits == 0 or digits > 2 or <size_t>(reader.end - pos) < digits:
            return False
        length = 0
        for i in range(digits):
            length = (length << 8) | pos[i]
        pos += digits
    if <size_t>(reader.end - pos) < length:
        return False
    content.pos = pos
    content.end = pos + length
    reader.pos = pos + length
    return True


cdef bint _der_read_uint(DerReader* reader, unsigned char* out32) noexcept nogil:
    """A non-negative INTEGER below 2**256 into 32 big-endian bytes."""
    cdef DerReader value
    cdef size_t length
    if not _der_next(reader, TAG_INTEGER, &value) or value.pos == value.end or value.pos[0] & 0x80:
        return False
    while value.end - value.pos > 1 and value.pos[0] == 0:
        value.pos += 1
    length = value.end - value.pos
    if length > COORD:
        return False
    memset(out32, 0, COORD - length)
    memcpy(out32 + COORD - length, value.pos, length)
    return True


cdef bint _der_read_octets(DerReader* reader, unsigned char* out, size_t length) noexcept nogil:
    """An OCTET STRING of exactly `length` bytes into out."""
    cdef DerReader value
    if not _der_next(reader, TAG_OCTET_STRING, &value) or <size_t>(value.end - value.pos) != length:
        return False
    memcpy(out, value.pos, length)
    return True


cdef bint _der_signature_to_raw(const unsigned char* der, size_t der_len, unsigned char* out64) noexcept nogil:
    cdef DerReader reader
    cdef DerReader body
    reader.pos = der
    reader.end = der + der_len
    return (_der_next(&reader, TAG_SEQUENCE, &body) and reader.pos == reader.end
            and _der_read_uint(&body, out64) and _der_read_uint(&body, out64 + COORD)
            and body.pos == body.end)


cdef bint _der_ciphertext_to_raw(const unsigned char* der, size_t der_len, size_t n,
                                 unsigned char* out) noexcept nogil:
    """SM2Ciphertext {x, y, C3, C2} with an n-byte C2 into x || y || C3 || C2."""
    cdef DerReader reader
    cdef DerReader body
    reader.pos = der
    reader.end = der + der_len
    return (_der_next(&reader, TAG_SEQUENCE, &body) and reader.pos == reader.end
            and _der_read_uint(&body, out) and _der_read_uint(&body, out + COORD)
            and _der_read_octets(&body, out + 2 * COORD, COORD)
            and _der_read_octets(&body, out + C1C3, n)
            and body.pos == body.end)


cdef size_t _der_put_header(unsigned char* out, unsigned char tag, size_t length) noexcept nogil:
    """Tag and definite length (callers keep length below 64 KiB)."""
    out[0] = tag
    if length < 0x80:
        out[1] = <unsigned char>length
        return 2
    if length < 0x100:
        out[1] = 0x81
        out[2] = <unsigned char>length
        return 3
    out[1] = 0x82
    out[2] = <unsigned char>(length >> 8)
    out[3] = <unsigned char>(length & 0xFF)
    return 4


cdef size_t _der_put_uint(unsigned char* out, const unsigned char* be32) noexcept nogil:
    """32 big-endian bytes as a minimal non-negative INTEGER (OpenSSL refuses padded ones)."""
    cdef size_t skip = 0
    cdef size_t length, pos
    cdef bint pad
    while skip < COORD - 1 and be32[skip] == 0:
        skip += 1
    length = COORD - skip
    pad = be32[skip] & 0x80  # a set top bit would read as negative
    pos = _der_put_header(out, TAG_INTEGER, length + (1 if pad else 0))
    if pad:
        out[pos] = 0
        pos += 1
    memcpy(out + pos, be32 + skip, length)
    return pos + length


cdef size_t _der_put_octets(unsigned char* out, const unsigned char* data, size_t length) noexcept nogil:
    cdef size_t pos = _der_put_header(out, TAG_OCTET_STRING, length)
    memcpy(out + pos, data, length)
    return pos + length


cdef size_t _der_seal(unsigned char* out, size_t body_len) noexcept nogil:
    """Wrap the body written at out + DER_HEADER_MAX in a SEQUENCE starting at out."""
    cdef unsigned char header[DER_HEADER_MAX]
    cdef size_t header_len = _der_put_header(header, TAG_SEQUENCE, body_len)
    memmove(out + header_len, out + DER_HEADER_MAX, body_len)
    memcpy(out, header, header_len)
    return header_len + body_len


cdef size_t _der_signature(const unsigned char* sig64, unsigned char* out) noexcept nogil:
    cdef unsigned char* body = out + DER_HEADER_MAX
    cdef size_t pos = _der_put_uint(body, sig64)
    pos += _der_put_uint(body + pos, sig64 + COORD)
    return _der_seal(out, pos)


cdef size_t _der_ciphertext(const unsigned char* ct, size_t n, unsigned char* out) noexcept nogil:
    """x || y || C3 || C2 (n-byte C2) as SM2Ciphertext {x, y, C3, C2}."""
    cdef unsigned char* body = out + DER_HEADER_MAX
    cdef size_t pos = _der_put_uint(body, ct)
    pos += _der_put_uint(body + pos, ct + COORD)
    pos += _der_put_octets(body + pos, ct + 2 * COORD, COORD)
    pos += _der_put_octets(body + pos, ct + C1C3, n)
    return _der_seal(out, pos)
