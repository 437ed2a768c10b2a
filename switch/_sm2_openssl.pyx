# cython: language_level=3
"""SM2 (GB/T 32918) through OpenSSL 3 libcrypto: the compiled core of `switch.sm2`.

Encodings are the project's (see switch/sm2.py): keys in hex, signatures 64 bytes r || s,
ciphertexts C1 || C3 || C2 with C1 the bare 64-byte x || y.

The sign-on path - verify and encrypt to a public key - runs on OpenSSL's low-level EC API
(GB/T 32918.2 section 7, 32918.4 section 6 written out here): one shared EC_GROUP whose base
point multiples were precomputed once at import, each public key parsed once into an EC_POINT,
SM3 through EVP. sign and decrypt, which need a private key, go through OpenSSL's EVP SM2
implementation; OpenSSL speaks DER there (ECDSA-Sig-Value, SM2Ciphertext), so this module
converts at that boundary with a minimal DER codec of its own.

Arguments are checked under the GIL; the OpenSSL calls (all the EC math) run with the GIL
released, so sign-ons can use threads. Every OpenSSL object is freed on every path, secrets
(the nonce k, the shared point, the key stream) are wiped, and the errors OpenSSL queues are
popped before returning (a stale queue confuses the next OpenSSL user on the thread, e.g.
`cryptography`).
"""

# EC_GROUP_precompute_mult is deprecated in OpenSSL 3 (still exported and working); say so
# before the first OpenSSL header is included.
cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED 1
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

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void* ptr, size_t length)

cdef extern from "openssl/bn.h" nogil:
    enum:
        BN_FLG_CONSTTIME
    BIGNUM* BN_new()
    BIGNUM* BN_bin2bn(const unsigned char* s, int length, BIGNUM* ret)
    int BN_bn2binpad(const BIGNUM* a, unsigned char* to, int tolen)
    void BN_free(BIGNUM* a)
    void BN_clear(BIGNUM* a)
    void BN_clear_free(BIGNUM* a)
    void BN_set_flags(BIGNUM* b, int n)
    int BN_is_zero(const BIGNUM* a)
    int BN_cmp(const BIGNUM* a, const BIGNUM* b)
    int BN_mod_add(BIGNUM* r, const BIGNUM* a, const BIGNUM* b, const BIGNUM* m, BN_CTX* ctx)
    int BN_priv_rand_range(BIGNUM* rnd, const BIGNUM* range)
    BN_CTX* BN_CTX_new()
    void BN_CTX_free(BN_CTX* c)
    void BN_CTX_start(BN_CTX* ctx)
    BIGNUM* BN_CTX_get(BN_CTX* ctx)
    void BN_CTX_end(BN_CTX* ctx)

cdef extern from "openssl/ec.h" nogil:
    ctypedef enum point_conversion_form_t:
        POINT_CONVERSION_UNCOMPRESSED
    enum:
        NID_sm2
    EC_GROUP* EC_GROUP_new_by_curve_name(int nid)
    int EC_GROUP_get_curve(const EC_GROUP* group, BIGNUM* p, BIGNUM* a, BIGNUM* b, BN_CTX* ctx)
    const EC_POINT* EC_GROUP_get0_generator(const EC_GROUP* group)
    const BIGNUM* EC_GROUP_get0_order(const EC_GROUP* group)
    int EC_GROUP_precompute_mult(EC_GROUP* group, BN_CTX* ctx)
    int EC_GROUP_have_precompute_mult(const EC_GROUP* group)
    EC_POINT* EC_POINT_new(const EC_GROUP* group)
    void EC_POINT_free(EC_POINT* point)
    void EC_POINT_clear_free(EC_POINT* point)
    int EC_POINT_is_at_infinity(const EC_GROUP* group, const EC_POINT* p)
    int EC_POINT_mul(const EC_GROUP* group, EC_POINT* r, const BIGNUM* n, const EC_POINT* q,
                     const BIGNUM* m, BN_CTX* ctx)
    int EC_POINT_get_affine_coordinates(const EC_GROUP* group, const EC_POINT* p, BIGNUM* x, BIGNUM* y,
                                        BN_CTX* ctx)
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
    EVP_MD* EVP_MD_fetch(OSSL_LIB_CTX* ctx, const char* algorithm, const char* properties)
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* ctx)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX* out, const EVP_MD_CTX* inp)
    void EVP_MD_CTX_set_pkey_ctx(EVP_MD_CTX* ctx, EVP_PKEY_CTX* pctx)
    int EVP_DigestInit_ex(EVP_MD_CTX* ctx, const EVP_MD* type, ENGINE* impl)
    int EVP_DigestUpdate(EVP_MD_CTX* ctx, const void* d, size_t cnt)
    int EVP_DigestFinal_ex(EVP_MD_CTX* ctx, unsigned char* md, unsigned int* s)
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
    int EVP_PKEY_decrypt_init(EVP_PKEY_CTX* ctx)
    int EVP_PKEY_decrypt(EVP_PKEY_CTX* ctx, unsigned char* out, size_t* outlen, const unsigned char* inp,
                         size_t inlen)


cdef enum:
    COORD = 32  # bytes per coordinate or scalar
    POINT_OCTETS = 1 + 2 * COORD  # 0x04 || x || y
    C1C3 = 3 * COORD  # raw ciphertext bytes before C2
    SM3_BYTES = 32
    CURVE_FIELDS = 4 * COORD  # a || b || xG || yG, as Z hashes them
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

# ENTL is a 2-byte count of bits, so 8191 bytes would fit; OpenSSL 3.0 stops one byte short (its
# signing refuses the last one, and verify keeps the same bound).
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

# One group for every operation here. It is only read after this point (OpenSSL's EC_POINT_mul
# and friends take it const), so threads share it without a lock.
cdef EC_GROUP* _GROUP = EC_GROUP_new_by_curve_name(NID_sm2)
cdef EVP_MD* _SM3 = EVP_MD_fetch(NULL, b"SM3", NULL)
if _GROUP == NULL or _SM3 == NULL:
    raise ImportError("this OpenSSL has no SM2 curve or no SM3 digest")
cdef const BIGNUM* _ORDER = EC_GROUP_get0_order(_GROUP)
cdef const EC_POINT* _G = EC_GROUP_get0_generator(_GROUP)
# Multiples of G, computed once (about 0.5 ms): OpenSSL's wNAF multiplication uses them for the
# s*G half of s*G + t*P in verify, where both scalars are public.
if EC_GROUP_precompute_mult(_GROUP, NULL) != 1 or not EC_GROUP_have_precompute_mult(_GROUP):
    raise ImportError("OpenSSL could not precompute multiples of the SM2 base point")
cdef unsigned char _CURVE_FIELDS[CURVE_FIELDS]


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
                or EC_POINT_point2oct(_GROUP, _G, POINT_CONVERSION_UNCOMPRESSED, g, POINT_OCTETS, NULL)
                != POINT_OCTETS):
            raise ImportError("cannot read OpenSSL's SM2 curve")
        gx = int.from_bytes(g[1:1 + COORD], "big")
        gy = int.from_bytes(g[1 + COORD:POINT_OCTETS], "big")
        return _bn_int(p), _bn_int(a), _bn_int(b), gx, gy, _bn_int(_ORDER)
    finally:
        BN_free(p)
        BN_free(a)
        BN_free(b)


CURVE = _curve()
cdef object _N = CURVE[5]
cdef bytes _curve_fields = b"".join(v.to_bytes(COORD, "big") for v in CURVE[1:5])
memcpy(_CURVE_FIELDS, <const unsigned char*>_curve_fields, CURVE_FIELDS)


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
    """A parsed SM2 public key (an EC_POINT on the shared group); make one with `public_key`."""

    cdef EC_POINT* point
    cdef readonly bytes xy  # the 64-byte x || y, for Z

    def __init__(self):
        raise TypeError("use public_key(hex)")

    def __dealloc__(self):
        EC_POINT_free(self.point)


# Terminals sign on again and again with the same key, and a sign-on uses its public key twice
# (verify, then encrypt): parsing costs a square-root-free on-curve check for a public key and a
# scalar multiplication plus an EVP_PKEY import for a private key. Bounded; the oldest entry goes
# first.
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
    cdef EC_POINT* point
    with nogil:
        point = _parse_point(pub)
    if point == NULL:
        raise ValueError("SM2 public key is not a point on the curve")
    cdef PublicKey key = PublicKey.__new__(PublicKey)
    key.point = point
    key.xy = octets[1:]
    return _remember(_public_cache, public_hex, key)


cdef EC_POINT* _parse_point(const unsigned char* pub65) noexcept nogil:
    """The affine point 0x04 || x || y, or NULL unless it is a finite point of the curve.

    OpenSSL refuses coordinates >= p and points off the curve (GB/T 32918.1 6.2.1 steps a-c); the
    uncompressed form cannot spell the point at infinity, checked anyway. The cofactor is 1, so
    every such point has order n and nP = O needs no separate check (step d).
    """
    ERR_set_mark()
    cdef EC_POINT* point = EC_POINT_new(_GROUP)
    if point != NULL and (EC_POINT_oct2point(_GROUP, point, pub65, POINT_OCTETS, NULL) != 1
                          or EC_POINT_is_at_infinity(_GROUP, point)):
        EC_POINT_free(point)
        point = NULL
    ERR_pop_to_mark()
    return point


def _check_provider():
    """Fail at import, not with a misleading error later, when OpenSSL cannot import SM2 keys."""
    try:
        private_key(f"{1:064x}")  # d = 1: P = G, through the provider's key import
    except MemoryError:
        raise ImportError("OpenSSL cannot import SM2 keys: is its default provider available?") from None


_check_provider()


cdef EVP_PKEY* _keypair(const unsigned char* d32, unsigned char* pub65) noexcept nogil:
    """EVP_PKEY holding d and P = dG (OpenSSL's SM2 signing needs P for Z); NULL on failure."""
    cdef EVP_PKEY* pkey = NULL
    ERR_set_mark()
    cdef BIGNUM* d = BN_bin2bn(d32, COORD, NULL)
    cdef EC_POINT* point = EC_POINT_new(_GROUP)
    # A lone scalar with no other point: OpenSSL takes its constant-time ladder, not the table.
    if (d != NULL and point != NULL and EC_POINT_mul(_GROUP, point, d, NULL, NULL, NULL) == 1
            and EC_POINT_point2oct(_GROUP, point, POINT_CONVERSION_UNCOMPRESSED, pub65, POINT_OCTETS,
                                   NULL) == POINT_OCTETS):
        pkey = _pkey_from_params(pub65, d)
    EC_POINT_free(point)
    BN_clear_free(d)
    ERR_pop_to_mark()
    return pkey


cdef EVP_PKEY* _pkey_from_params(const unsigned char* pub65, const BIGNUM* d) noexcept nogil:
    """Import an SM2 key pair through the provider; NULL on failure."""
    cdef OSSL_PARAM* params = NULL
    cdef EVP_PKEY_CTX* ctx = NULL
    cdef EVP_PKEY* pkey = NULL
    ERR_set_mark()
    cdef OSSL_PARAM_BLD* build = OSSL_PARAM_BLD_new()
    if (build != NULL and OSSL_PARAM_BLD_push_utf8_string(build, OSSL_PKEY_PARAM_GROUP_NAME, b"SM2", 0)
            and OSSL_PARAM_BLD_push_octet_string(build, OSSL_PKEY_PARAM_PUB_KEY, pub65, POINT_OCTETS)
            and OSSL_PARAM_BLD_push_BN(build, OSSL_PKEY_PARAM_PRIV_KEY, d)):
        params = OSSL_PARAM_BLD_to_param(build)
    if params != NULL:
        ctx = EVP_PKEY_CTX_new_from_name(NULL, b"SM2", NULL)
    if ctx != NULL and EVP_PKEY_fromdata_init(ctx) == 1:
        if EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1:
            pkey = NULL
    EVP_PKEY_CTX_free(ctx)
    OSSL_PARAM_free(params)
    OSSL_PARAM_BLD_free(build)
    ERR_pop_to_mark()
    return pkey


# --------------------------------------------------------------------------- SM3 and the EC helpers

cdef bint _z(EVP_MD_CTX* md, const unsigned char* uid, size_t uid_len, const unsigned char* xy,
             unsigned char* out32) noexcept nogil:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), GB/T 32918.2 section 5.5."""
    cdef unsigned char entl[2]
    entl[0] = <unsigned char>((8 * uid_len) >> 8)
    entl[1] = <unsigned char>((8 * uid_len) & 0xFF)
    return (EVP_DigestInit_ex(md, _SM3, NULL) == 1 and EVP_DigestUpdate(md, entl, 2) == 1
            and EVP_DigestUpdate(md, uid, uid_len) == 1
            and EVP_DigestUpdate(md, _CURVE_FIELDS, CURVE_FIELDS) == 1
            and EVP_DigestUpdate(md, xy, 2 * COORD) == 1 and EVP_DigestFinal_ex(md, out32, NULL) == 1)


cdef bint _sm3_3(EVP_MD_CTX* md, const unsigned char* a, size_t a_len, const unsigned char* b, size_t b_len,
                 const unsigned char* c, size_t c_len, unsigned char* out32) noexcept nogil:
    """SM3(a || b || c); out32 may be one of the inputs."""
    return (EVP_DigestInit_ex(md, _SM3, NULL) == 1 and (a_len == 0 or EVP_DigestUpdate(md, a, a_len) == 1)
            and (b_len == 0 or EVP_DigestUpdate(md, b, b_len) == 1)
            and (c_len == 0 or EVP_DigestUpdate(md, c, c_len) == 1)
            and EVP_DigestFinal_ex(md, out32, NULL) == 1)


cdef bint _kdf(EVP_MD_CTX* md, EVP_MD_CTX* block, const unsigned char* x2y2, unsigned char* out,
               size_t n) noexcept nogil:
    """The first n bytes of SM3(x2 || y2 || ct) for ct = 1, 2, ... (GB/T 32918.4 5.4.3), into out.

    x2 || y2 is exactly one SM3 block: it is absorbed once and the state copied for each counter.
    """
    cdef unsigned char counter[4]
    cdef unsigned char digest[SM3_BYTES]
    cdef size_t done = 0
    cdef size_t take
    cdef unsigned int ct = 1
    if EVP_DigestInit_ex(md, _SM3, NULL) != 1 or EVP_DigestUpdate(md, x2y2, 2 * COORD) != 1:
        return False
    while done < n:
        counter[0] = <unsigned char>(ct >> 24)
        counter[1] = <unsigned char>(ct >> 16)
        counter[2] = <unsigned char>(ct >> 8)
        counter[3] = <unsigned char>ct
        if (EVP_MD_CTX_copy_ex(block, md) != 1 or EVP_DigestUpdate(block, counter, 4) != 1
                or EVP_DigestFinal_ex(block, digest, NULL) != 1):
            OPENSSL_cleanse(digest, SM3_BYTES)
            return False
        take = n - done if n - done < SM3_BYTES else SM3_BYTES
        memcpy(out + done, digest, take)
        done += take
        ct += 1
    OPENSSL_cleanse(digest, SM3_BYTES)
    return True


cdef bint _affine(const EC_POINT* point, BIGNUM* x, BIGNUM* y, unsigned char* out64, BN_CTX* ctx) noexcept nogil:
    """x || y of a finite point, 32 bytes each; False for the point at infinity."""
    return (EC_POINT_get_affine_coordinates(_GROUP, point, x, y, ctx) == 1
            and BN_bn2binpad(x, out64, COORD) == COORD and BN_bn2binpad(y, out64 + COORD, COORD) == COORD)


cdef bint _random_scalar(BIGNUM* k) noexcept nogil:
    """k uniform in [1, n-1] from OpenSSL's private DRBG (GB/T 32918.4 6.1 A1)."""
    cdef int tries
    for tries in range(NONCE_ATTEMPTS_MAX):  # 0 comes up with probability 2**-256
        if BN_priv_rand_range(k, _ORDER) != 1:
            return False
        if not BN_is_zero(k):
            return True
    return False


cdef bint _in_scalar_range(const BIGNUM* v) noexcept nogil:
    """1 <= v <= n-1."""
    return not BN_is_zero(v) and BN_cmp(v, _ORDER) < 0


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
    cdef const unsigned char* xy = key.xy
    cdef const unsigned char* msg = message
    cdef const unsigned char* sig = signature
    cdef const unsigned char* uid = user_id
    cdef size_t msg_len = len(message)
    cdef size_t uid_len = len(user_id)
    cdef int status
    with nogil:
        status = _verify(key.point, xy, uid, uid_len, msg, msg_len, sig)
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


cdef bint _digest_ctx(EVP_PKEY_CTX* pctx, EVP_MD_CTX* mctx, const unsigned char* uid, int uid_len) noexcept nogil:
    """Attach pctx, carrying the distinguishing id, to mctx (OpenSSL 3 sets no default id)."""
    if pctx == NULL or mctx == NULL or EVP_PKEY_CTX_set1_id(pctx, uid, uid_len) <= 0:
        return False
    EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
    return True


cdef int _verify(const EC_POINT* pub, const unsigned char* xy, const unsigned char* uid, size_t uid_len,
                 const unsigned char* msg, size_t msg_len, const unsigned char* sig64) noexcept nogil:
    """GB/T 32918.2 section 7.1 (B1-B7); everything here is public, so nothing needs constant time."""
    cdef unsigned char digest[SM3_BYTES]
    cdef BIGNUM* r
    cdef BIGNUM* s
    cdef BIGNUM* t
    cdef BIGNUM* e
    cdef BIGNUM* x1
    cdef BIGNUM* y1 = NULL
    cdef int status = FAILED
    ERR_set_mark()
    cdef BN_CTX* ctx = BN_CTX_new()
    cdef EVP_MD_CTX* md = EVP_MD_CTX_new()
    cdef EC_POINT* point = EC_POINT_new(_GROUP)
    if ctx != NULL:
        BN_CTX_start(ctx)
        r = BN_CTX_get(ctx)
        s = BN_CTX_get(ctx)
        t = BN_CTX_get(ctx)
        e = BN_CTX_get(ctx)
        x1 = BN_CTX_get(ctx)
        y1 = BN_CTX_get(ctx)  # NULL if any of them failed
    if (y1 != NULL and md != NULL and point != NULL
            and BN_bin2bn(sig64, COORD, r) != NULL and BN_bin2bn(sig64 + COORD, COORD, s) != NULL
            and _in_scalar_range(r) and _in_scalar_range(s)  # B1, B2
            and _z(md, uid, uid_len, xy, digest)  # B3: Z || M ...
            and _sm3_3(md, digest, SM3_BYTES, msg, msg_len, NULL, 0, digest)  # B4: e = SM3(Z || M)
            and BN_bin2bn(digest, SM3_BYTES, e) != NULL
            and BN_mod_add(t, r, s, _ORDER, ctx) == 1 and not BN_is_zero(t)  # B5: t = r + s mod n, t != 0
            # B6: (x1, y1) = s*G + t*P in one interleaved multiplication, s*G from the table.
            and EC_POINT_mul(_GROUP, point, s, pub, t, ctx) == 1
            and EC_POINT_get_affine_coordinates(_GROUP, point, x1, y1, ctx) == 1  # fails at infinity
            and BN_mod_add(x1, e, x1, _ORDER, ctx) == 1 and BN_cmp(x1, r) == 0):  # B7: (e + x1) mod n == r
        status = OK
    if ctx != NULL:
        BN_CTX_end(ctx)
    BN_CTX_free(ctx)
    EC_POINT_free(point)
    EVP_MD_CTX_free(md)
    ERR_pop_to_mark()
    return status


# --------------------------------------------------------------------------- encrypt / decrypt

def encrypt(PublicKey key not None, bytes plaintext not None):
    """C1 || C3 || C2 (C1 the bare x || y) of a 1 to C2_MAX_BYTES byte plaintext."""
    return _encrypt_checked(key, plaintext, None)


def _encrypt_with_k(PublicKey key not None, bytes plaintext not None, k):
    """`encrypt` with the nonce k fixed, for the standard's examples (tests only: k must be secret)."""
    if not isinstance(k, int) or not 1 <= k < _N:
        raise ValueError("k must be an integer in [1, n-1]")
    return _encrypt_checked(key, plaintext, k.to_bytes(COORD, "big"))


cdef bytes _encrypt_checked(PublicKey key, bytes plaintext, bytes k):
    cdef size_t n = len(plaintext)
    if not 1 <= n <= C2_MAX_BYTES:
        raise ValueError(f"SM2 plaintext must be 1 to {C2_MAX_BYTES} bytes")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, C1C3 + n)
    cdef unsigned char* out_ptr = <unsigned char*>PyBytes_AS_STRING(out)
    cdef const unsigned char* msg = plaintext
    cdef const unsigned char* k_ptr = NULL
    if k is not None:
        k_ptr = k
    cdef int status
    with nogil:
        status = _encrypt(key.point, msg, n, k_ptr, out_ptr)
    if status == NO_NONCE:
        raise RuntimeError("SM2 encryption found no usable nonce: is the random source broken?")
    if status == ZERO_KEY_STREAM:
        raise ValueError("SM2 encryption with this k gives an all-zero key stream")
    if status != OK:
        raise RuntimeError("OpenSSL failed to SM2-encrypt")
    return out


cdef int _encrypt(const EC_POINT* pub, const unsigned char* msg, size_t n, const unsigned char* k32,
                  unsigned char* out) noexcept nogil:
    """GB/T 32918.4 section 6.1 (A1-A8) into out = C1 || C3 || C2; k32 fixes k (NULL: random).

    S = h*P (A3) is P itself: h = 1, and P was checked to be a finite point when it was parsed.
    """
    cdef unsigned char x2y2[2 * COORD]
    cdef unsigned char any_bit
    cdef size_t i
    cdef int attempt
    cdef BIGNUM* k
    cdef BIGNUM* x
    cdef BIGNUM* y = NULL
    cdef int status = FAILED
    ERR_set_mark()
    cdef BN_CTX* ctx = BN_CTX_new()  # freed with BN_clear_free on its values: k and x2, y2 pass through it
    cdef EVP_MD_CTX* md = EVP_MD_CTX_new()
    cdef EVP_MD_CTX* block = EVP_MD_CTX_new()
    cdef EC_POINT* c1 = EC_POINT_new(_GROUP)
    cdef EC_POINT* shared = EC_POINT_new(_GROUP)
    if ctx != NULL:
        BN_CTX_start(ctx)
        k = BN_CTX_get(ctx)
        x = BN_CTX_get(ctx)
        y = BN_CTX_get(ctx)  # NULL if any of them failed
    if y != NULL and md != NULL and block != NULL and c1 != NULL and shared != NULL:
        BN_set_flags(k, BN_FLG_CONSTTIME)
        for attempt in range(NONCE_ATTEMPTS_MAX if k32 == NULL else 1):
            status = FAILED
            if not ((_random_scalar(k) if k32 == NULL else BN_bin2bn(k32, COORD, k) != NULL)  # A1
                    # A2: C1 = k*G on OpenSSL's constant-time ladder. The precomputed multiples of G
                    # would be 200 us faster, but only through the wNAF path, whose timing depends
                    # on the secret k (docs/security.md §5): we keep the ladder.
                    and EC_POINT_mul(_GROUP, c1, k, NULL, NULL, ctx) == 1
                    and _affine(c1, x, y, out, ctx)
                    # A4: (x2, y2) = k*P on the constant-time ladder (a lone variable point).
                    and EC_POINT_mul(_GROUP, shared, NULL, pub, k, ctx) == 1
                    and _affine(shared, x, y, x2y2, ctx)
                    and _kdf(md, block, x2y2, out + C1C3, n)):  # A5: t = KDF(x2 || y2, klen)
                break
            any_bit = 0
            for i in range(n):
                any_bit |= out[C1C3 + i]
            if any_bit == 0:  # A5: an all-zero t needs a fresh k
                status = ZERO_KEY_STREAM if k32 != NULL else NO_NONCE
                continue
            for i in range(n):  # A6: C2 = M xor t
                out[C1C3 + i] ^= msg[i]
            if _sm3_3(md, x2y2, COORD, msg, n, x2y2 + COORD, COORD, out + 2 * COORD):  # A7: C3
                status = OK
            break
        BN_clear(k)
        BN_clear(x)
        BN_clear(y)
    if ctx != NULL:
        BN_CTX_end(ctx)
    BN_CTX_free(ctx)
    EC_POINT_clear_free(shared)
    EC_POINT_free(c1)
    EVP_MD_CTX_free(block)
    EVP_MD_CTX_free(md)
    OPENSSL_cleanse(x2y2, 2 * COORD)
    ERR_pop_to_mark()
    return status


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
# Just what OpenSSL's EVP sign and decrypt exchange: a SEQUENCE of non-negative INTEGERs of at
# most 32 bytes (r, s out of sign; C1's x, y into decrypt) and OCTET STRINGs (C3, C2 into decrypt),
# every length below 64 KiB.

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


cdef bint _der_signature_to_raw(const unsigned char* der, size_t der_len, unsigned char* out64) noexcept nogil:
    cdef DerReader reader
    cdef DerReader body
    reader.pos = der
    reader.end = der + der_len
    return (_der_next(&reader, TAG_SEQUENCE, &body) and reader.pos == reader.end
            and _der_read_uint(&body, out64) and _der_read_uint(&body, out64 + COORD)
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


cdef size_t _der_ciphertext(const unsigned char* ct, size_t n, unsigned char* out) noexcept nogil:
    """x || y || C3 || C2 (n-byte C2) as SM2Ciphertext {x, y, C3, C2}."""
    cdef unsigned char* body = out + DER_HEADER_MAX
    cdef size_t pos = _der_put_uint(body, ct)
    pos += _der_put_uint(body + pos, ct + COORD)
    pos += _der_put_octets(body + pos, ct + 2 * COORD, COORD)
    pos += _der_put_octets(body + pos, ct + C1C3, n)
    return _der_seal(out, pos)
