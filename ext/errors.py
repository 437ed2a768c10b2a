"""The one exception hierarchy of the channel adapters.

The HTTP callback server maps these to answers (see docs/channels.md):
`NotificationIgnored` is authentic and deliberately dropped, so the channel is told "received"
(`ack(True)`); every other `ChannelError` from `parse_notification` is answered `ack(False)` so that
the channel retries. Statement errors stop a reconciliation run before anything is compared.
"""

from __future__ import annotations


class ChannelError(Exception):
    """Base of every adapter error; the message never contains key material."""


class SignatureInvalid(ChannelError):
    """The channel's authenticity check failed: signature, key serial, certificate, AEAD tag, clock."""


class NotificationInvalid(ChannelError):
    """Authentic (or not even parseable) but unusable: missing fields, bad amounts, wrong merchant."""


class NotificationIgnored(ChannelError):
    """Authentic and well formed, but not a money event (unpaid, closed, failed refund, ...)."""

    def __init__(self, message: str, *, native_status: str) -> None:
        super().__init__(message)
        self.native_status = native_status


class StatementInvalid(ChannelError):
    """A statement file does not follow its channel's format; `line_no` is 1-based (0: whole file)."""

    def __init__(self, message: str, *, line_no: int = 0) -> None:
        super().__init__(f"line {line_no}: {message}" if line_no else message)
        self.line_no = line_no


class SummaryMismatch(StatementInvalid):
    """The statement's own totals disagree with its lines: the file is truncated or altered."""


class AmountInvalid(ChannelError, ValueError):
    """A money string is not an exact, in-range amount in the expected unit."""


class TimeInvalid(ChannelError, ValueError):
    """A channel time or date that is not a real instant in the expected layout."""


class UnknownChannel(ChannelError, LookupError):
    """No adapter is registered under that channel name."""
