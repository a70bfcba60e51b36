"""Keyed fingerprints of user ids: what log lines and the clear audit hold instead of them.

A userId is often a phone number (`4915112345678@c.us`); an unkeyed hash of it can be
reversed by hashing every number. The fingerprint is an HMAC-SHA256 with a secret of the
installation (BOTSESSION_FINGERPRINT_KEY; the Helm chart generates one and keeps it across
upgrades), cut to 64 bits and written in 16 letters (a-p): stable across processes and
restarts, so support can find every line of one user (`botsession fingerprint <userId>`
computes it), and useless to anyone without the key. Without a configured key each process
draws a random one (a warning says so): fingerprints then hold within one process only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

log = logging.getLogger(__name__)

_key = secrets.token_bytes(32)
configured = False


def configure(key: str | None) -> None:
    """Use the installation's key; None keeps a random per-process one, with a warning."""
    global _key, configured
    if key:
        _key, configured = key.encode(), True
        return
    _key, configured = secrets.token_bytes(32), False
    log.warning(
        "BOTSESSION_FINGERPRINT_KEY is not set: user fingerprints in the logs and the clear "
        "audit are random per process and cannot be correlated across processes"
    )


# hex written with the letters a-p instead of 0-9a-f: no run of digits in a fingerprint, so
# the logs' phone-number masking never touches one
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")


def _digest(text: str) -> str:
    digest = hmac.new(_key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return digest[:16].translate(_LETTERS)


def user_fingerprint(user_id: str) -> str:
    """What log lines carry instead of a userId."""
    return _digest(user_id)


def session_fingerprint(bot_id: str, user_id: str) -> str:
    """What the clear audit keeps of a session it cleared."""
    return _digest(f"{bot_id}\0{user_id}")
