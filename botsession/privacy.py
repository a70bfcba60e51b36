"""What the client's log lines and errors carry instead of a userId: the same keyed
fingerprint as the operator's and the API's (sessions.domain.privacy), so one user's lines
can be found across the bot, the API and the operator with the installation's
`BOTSESSION_FINGERPRINT_KEY`. Without a key, a random one per process: fingerprints then
hold within this process only. Kept apart from the server's code so that a bot process
imports nothing of the server."""

from __future__ import annotations

import hmac
import os
import secrets

KEY_VARIABLE = "BOTSESSION_FINGERPRINT_KEY"

# hex written with a-p instead of 0-9a-f, as the server writes it: no run of digits, so a
# fingerprint never looks like (or is masked as) a phone number
_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_random_key = secrets.token_bytes(32)


def fingerprint_key(key: str | None = None) -> bytes:
    """The key given, else $BOTSESSION_FINGERPRINT_KEY, else this process's random one."""
    chosen = key or os.environ.get(KEY_VARIABLE)
    return chosen.encode() if chosen else _random_key


def user_fingerprint(user_id: str, key: bytes | None = None) -> str:
    """16 letters a-p: an HMAC-SHA256 of the userId cut to 64 bits."""
    mac = hmac.new(key or fingerprint_key(), user_id.encode("utf-8", "surrogatepass"), "sha256")
    return mac.hexdigest()[:16].translate(_LETTERS)


def redact(text: str, user_id: str, key: bytes | None = None) -> str:
    """`text` with every occurrence of the userId replaced by its fingerprint."""
    if not user_id or user_id not in text:
        return text
    return text.replace(user_id, f"<user {user_fingerprint(user_id, key)}>")
