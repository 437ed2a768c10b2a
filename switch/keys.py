"""Keys the switch keeps under its data directory.

Until key management with a master key and rotation arrives, the PIN-verification key (PVK) is
32 random bytes created on first start in `<data dir>/keys/pvk` (mode 0600). Losing it makes every
stored PIN check value useless, so it is part of every backup.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PVK_LEN_BYTES = 32


def load_or_create_pvk(data_dir: Path) -> bytes:
    path = data_dir / "keys" / "pvk"
    if path.exists():
        key = path.read_bytes()
        if len(key) != PVK_LEN_BYTES:
            raise ValueError(f"{path} must hold {PVK_LEN_BYTES} bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(PVK_LEN_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key
