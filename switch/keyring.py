"""Key management: a master key wraps versioned data keys kept in PostgreSQL.

The master key (32 bytes) comes from `FUELSWITCH_MASTER_KEY` (64 hex characters), from a file given
with `--master-key-file`, or, when neither is set, from `<data dir>/keys/master.key`, created on first
start (fine for a demo; in production keep it off the database host). It never touches the database.

Data keys, one row per (purpose, version) in `data_keys`, are stored wrapped: SM4-GCM under a key
derived from the master key, with the purpose and version as associated data, so a wrapped key
cannot be moved to another purpose or version unnoticed. Purposes:

- `pan`: SM4 key that encrypts card numbers at rest (rotatable);
- `pan-index`: HMAC-SM3 key of the card-number look-up index (fixed: rotating it means re-indexing);
- `pvk`: PIN-verification key (rotatable; each card remembers the version its PVV was made with);
- `journal`: HMAC-SM3 key of the journal's hash chain (rotatable; each row names its version).

Rotation inserts a new version; the newest version is used for new writes, every older one stays
readable. A running switch picks a rotation up on its next key refresh, so there is no downtime.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

log = logging.getLogger("fuelswitch.keys")

MASTER_KEY_LEN_BYTES = 32
MASTER_KEY_ENV = "FUELSWITCH_MASTER_KEY"
KEY_LEN_BYTES = {"pan": 16, "pan-index": 32, "pvk": 32, "journal": 32}
ROTATABLE = ("pan", "pvk", "journal")
GCM_NONCE_LEN_BYTES = 12
GCM_TAG_LEN_BYTES = 16


class KeyringError(Exception):
    """A key is missing, malformed or does not open: the switch must not start with it."""


@dataclass(frozen=True)
class Keyring:
    """Unwrapped data keys by purpose and version; immutable, replaced whole on rotation."""

    keys: Mapping[str, Mapping[int, bytes]]

    def current(self, purpose: str) -> tuple[int, bytes]:
        versions = self.keys.get(purpose)
        if not versions:
            raise KeyringError(f"no {purpose} key")
        version = max(versions)
        return version, versions[version]

    def get(self, purpose: str, version: int) -> bytes:
        try:
            return self.keys[purpose][version]
        except KeyError:
            raise KeyringError(f"{purpose} key version {version} is unknown") from None

    def versions(self) -> dict[str, int]:
        """The current version of every purpose."""
        return {purpose: max(versions) for purpose, versions in self.keys.items()}


# -- the master key --------------------------------------------------------------------------------

def load_master_key(data_dir: Path, key_file: Path | None = None,
                    environ: Mapping[str, str] | None = None, *, create: bool = True) -> bytes:
    """The master key from the environment, an explicit file, or `<data dir>/keys/master.key`
    (created there if `create` and there is none)."""
    environ = os.environ if environ is None else environ
    text = environ.get(MASTER_KEY_ENV)
    if text:
        return _parse_master(text, MASTER_KEY_ENV)
    if key_file is not None:
        if not key_file.exists():
            raise KeyringError(f"master key file {key_file} does not exist")
        return _parse_master(key_file.read_text().strip(), str(key_file))
    path = data_dir / "keys" / "master.key"
    if path.exists():
        return _parse_master(path.read_text().strip(), str(path))
    if not create:
        raise KeyringError(f"no master key: set {MASTER_KEY_ENV}, give --master-key-file, or run where {path} is")
    key = secrets.token_bytes(MASTER_KEY_LEN_BYTES)
    _write_private(path, key.hex() + "\n")
    log.warning("created a new master key in %s; back it up, and in production provide it with %s "
                "or --master-key-file from outside the data directory", path, MASTER_KEY_ENV)
    return key


def read_legacy_pvk(data_dir: Path) -> bytes | None:
    """The PIN-verification key file of a data directory from before key management, if any."""
    path = data_dir / "keys" / "pvk"
    if not path.exists():
        return None
    key = path.read_bytes()
    if len(key) != KEY_LEN_BYTES["pvk"]:
        raise KeyringError(f"{path} must hold {KEY_LEN_BYTES['pvk']} bytes")
    return key


def _parse_master(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise KeyringError(f"{where}: the master key must be {2 * MASTER_KEY_LEN_BYTES} hex characters") from None
    if len(key) != MASTER_KEY_LEN_BYTES:
        raise KeyringError(f"{where}: the master key must be {2 * MASTER_KEY_LEN_BYTES} hex characters")
    return key


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# -- wrapping --------------------------------------------------------------------------------------

def _kek(master: bytes) -> bytes:
    # The master key is never used directly: SM4 takes 16 bytes, and a derived key keeps uses apart.
    return hmac.digest(master, b"fuelswitch key-encryption key", "sm3")[:16]


def wrap(master: bytes, purpose: str, version: int, key: bytes) -> bytes:
    """nonce(12) || SM4-GCM ciphertext || tag(16), with purpose:version as associated data."""
    nonce = secrets.token_bytes(GCM_NONCE_LEN_BYTES)
    encryptor = Cipher(algorithms.SM4(_kek(master)), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(f"{purpose}:{version}".encode())
    return nonce + encryptor.update(key) + encryptor.finalize() + encryptor.tag


def unwrap(master: bytes, purpose: str, version: int, wrapped: bytes) -> bytes:
    if len(wrapped) < GCM_NONCE_LEN_BYTES + GCM_TAG_LEN_BYTES:
        raise KeyringError(f"{purpose} key version {version}: wrapped key is truncated")
    nonce, body = wrapped[:GCM_NONCE_LEN_BYTES], wrapped[GCM_NONCE_LEN_BYTES:]
    ciphertext, tag = body[:-GCM_TAG_LEN_BYTES], body[-GCM_TAG_LEN_BYTES:]
    decryptor = Cipher(algorithms.SM4(_kek(master)), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(f"{purpose}:{version}".encode())
    try:
        return decryptor.update(ciphertext) + decryptor.finalize()
    except InvalidTag:
        raise KeyringError(f"the master key does not open {purpose} key version {version} "
                        "(wrong master key, or the row was altered)") from None


# -- the data_keys table ---------------------------------------------------------------------------

async def load_keyring(conn: asyncpg.Connection, master: bytes, *, legacy_pvk: bytes | None = None) -> Keyring:
    """Unwrap every data key, creating version 1 of any purpose that has none yet.

    `legacy_pvk` is the PIN-verification key of a data directory from before key management
    (`<data dir>/keys/pvk`): it becomes pvk version 1 so that existing PINs keep verifying.
    """
    async with conn.transaction():
        # One creator at a time; the loser of a race finds the keys made by the winner.
        await conn.execute("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE")
        present = {r["purpose"] for r in await conn.fetch("SELECT DISTINCT purpose FROM data_keys")}
        for purpose, length in KEY_LEN_BYTES.items():
            if purpose not in present:
                key = legacy_pvk if purpose == "pvk" and legacy_pvk else secrets.token_bytes(length)
                await _insert(conn, master, purpose, 1, key)
    return await read_keyring(conn, master)


async def read_keyring(conn: asyncpg.Connection, master: bytes) -> Keyring:
    keys: dict[str, dict[int, bytes]] = {}
    for r in await conn.fetch("SELECT purpose, version, wrapped FROM data_keys ORDER BY purpose, version"):
        key = unwrap(master, r["purpose"], r["version"], bytes(r["wrapped"]))
        if len(key) != KEY_LEN_BYTES.get(r["purpose"], len(key)):
            raise KeyringError(f"{r['purpose']} key version {r['version']} has the wrong length")
        keys.setdefault(r["purpose"], {})[r["version"]] = key
    return Keyring(keys)


async def key_versions(conn: asyncpg.Connection) -> dict[str, int]:
    """The newest version of each purpose, cheaply (to notice a rotation made elsewhere)."""
    rows = await conn.fetch("SELECT purpose, max(version) AS version FROM data_keys GROUP BY purpose")
    return {r["purpose"]: r["version"] for r in rows}


async def rotate(conn: asyncpg.Connection, master: bytes, purposes: tuple[str, ...] = ROTATABLE) -> dict[str, int]:
    """Add a new version of each purpose; returns purpose -> new version. Old versions stay."""
    unknown = [p for p in purposes if p not in ROTATABLE]
    if unknown:
        raise KeyringError(f"cannot rotate {', '.join(unknown)}: rotatable purposes are {', '.join(ROTATABLE)}")
    new: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute("LOCK TABLE data_keys IN SHARE ROW EXCLUSIVE MODE")
        current = await key_versions(conn)
        for purpose in purposes:
            version = current.get(purpose, 0) + 1
            await _insert(conn, master, purpose, version, secrets.token_bytes(KEY_LEN_BYTES[purpose]))
            new[purpose] = version
    log.info("rotated data keys: %s", ", ".join(f"{p} v{v}" for p, v in new.items()))
    return new


async def _insert(conn: asyncpg.Connection, master: bytes, purpose: str, version: int, key: bytes) -> None:
    await conn.execute(
        "INSERT INTO data_keys (purpose, version, wrapped, created_ms) VALUES ($1, $2, $3, $4)",
        purpose, version, wrap(master, purpose, version, key), time.time_ns() // 1_000_000,
    )
