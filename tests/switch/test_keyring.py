"""Key management: wrapping under the master key, versions, rotation, and the master key's sources."""

from __future__ import annotations

import asyncpg
import pytest

from switch import keyring as K
from switch.migrate import migrate

MASTER = bytes(range(32))


def test_wrap_round_trip_and_binding():
    wrapped = K.wrap(MASTER, "pan", 3, b"k" * 16)
    assert K.unwrap(MASTER, "pan", 3, wrapped) == b"k" * 16
    with pytest.raises(K.KeyringError, match="does not open"):
        K.unwrap(bytes(32), "pan", 3, wrapped)  # another master key
    with pytest.raises(K.KeyringError, match="does not open"):
        K.unwrap(MASTER, "pvk", 3, wrapped)  # moved to another purpose
    with pytest.raises(K.KeyringError, match="does not open"):
        K.unwrap(MASTER, "pan", 4, wrapped)  # or another version
    tampered = bytearray(wrapped)
    tampered[14] ^= 1
    with pytest.raises(K.KeyringError):
        K.unwrap(MASTER, "pan", 3, bytes(tampered))


def test_master_key_sources(tmp_path):
    env_key = "ab" * 32
    assert K.load_master_key(tmp_path, environ={K.MASTER_KEY_ENV: env_key}) == bytes.fromhex(env_key)
    key_file = tmp_path / "m.key"
    key_file.write_text("cd" * 32 + "\n")
    assert K.load_master_key(tmp_path, key_file, environ={}) == bytes.fromhex("cd" * 32)
    with pytest.raises(K.KeyringError, match="no master key"):
        K.load_master_key(tmp_path, environ={}, create=False)
    created = K.load_master_key(tmp_path, environ={})
    assert (tmp_path / "keys" / "master.key").stat().st_mode & 0o777 == 0o600
    assert K.load_master_key(tmp_path, environ={}, create=False) == created
    key_file.write_text("not hex")
    with pytest.raises(K.KeyringError, match="64 hex"):
        K.load_master_key(tmp_path, key_file, environ={})


async def test_first_load_creates_version_1_then_rotation_adds_versions(fresh_db):
    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        legacy = b"p" * 32
        first = await K.load_keyring(conn, MASTER, legacy_pvk=legacy)
        assert first.versions() == {"pan": 1, "pan-index": 1, "pvk": 1, "journal": 1}
        assert first.get("pvk", 1) == legacy  # PINs set before key management keep verifying
        again = await K.load_keyring(conn, MASTER)  # idempotent: nothing new is created
        assert again == first

        assert await K.rotate(conn, MASTER, ("pan", "journal")) == {"pan": 2, "journal": 2}
        rotated = await K.read_keyring(conn, MASTER)
        assert rotated.current("pan")[0] == 2 and rotated.get("pan", 1) == first.get("pan", 1)
        assert rotated.current("pvk") == first.current("pvk")
        with pytest.raises(K.KeyringError, match="cannot rotate pan-index"):
            await K.rotate(conn, MASTER, ("pan-index",))
        with pytest.raises(K.KeyringError, match="does not open"):
            await K.read_keyring(conn, bytes(32))  # the wrong master key opens nothing
        raw = await conn.fetch("SELECT wrapped FROM data_keys")
        for r in raw:  # no data key is stored in clear
            for versions in rotated.keys.values():
                assert all(key not in bytes(r["wrapped"]) for key in versions.values())
    finally:
        await conn.close()
