"""Typed exceptions: every server error carries its protocol code (docs/protocol.md, "Error body")."""

import re
from typing import Dict, Optional, Type

#: Protocol error codes by name.
MALFORMED = 1
TOO_LARGE = 2
UNKNOWN_TOPIC = 3
OVERLOADED = 4
NOT_LEADER = 5
UNAUTHORIZED = 6
INTERNAL = 7
UNSUPPORTED = 8
UNAVAILABLE = 9
FORBIDDEN = 10
OUT_OF_RANGE = 11
INVALID_COMMIT = 12

CODE_NAMES: Dict[int, str] = {
    MALFORMED: "malformed",
    TOO_LARGE: "too_large",
    UNKNOWN_TOPIC: "unknown_topic",
    OVERLOADED: "overloaded",
    NOT_LEADER: "not_leader",
    UNAUTHORIZED: "unauthorized",
    INTERNAL: "internal",
    UNSUPPORTED: "unsupported",
    UNAVAILABLE: "unavailable",
    FORBIDDEN: "forbidden",
    OUT_OF_RANGE: "out_of_range",
    INVALID_COMMIT: "invalid_commit",
}


class EscError(Exception):
    """Base class of every error this package raises."""


class ProtocolError(EscError):
    """The server sent bytes this client cannot read (bad magic, checksum, body or request id).

    The connection is out of step afterwards and is closed."""


class ConnectionLost(EscError):
    """The connection failed or the server closed it. For a publish the outcome is unknown:
    retry with the same idempotency keys (the client does so itself)."""


class RequestTimeout(ConnectionLost):
    """No reply within the timeout. The outcome of a publish is unknown, as for a lost connection."""


class ServerError(EscError):
    """An ERROR frame (or a rejected event in an ACK) from the server.

    Attributes: ``code`` (int), ``name`` (e.g. ``"not_leader"``), ``retry_after_ms``,
    ``leader`` (the leader's client address for ``not_leader``, empty if unknown) and
    ``message`` (for people)."""

    code = 0

    def __init__(self, code: int, message: str, retry_after_ms: int = 0, leader: str = "") -> None:
        self.code = code
        self.name = CODE_NAMES.get(code, "code_%d" % code)
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.leader = leader
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        # Some servers put the code name in front of the message already: say it once.
        if not text.startswith(self.name):
            text = "%s: %s" % (self.name, text)
        if self.leader:
            text += " (leader at %s)" % self.leader
        return text

    @property
    def retryable(self) -> bool:
        """True if the same request may succeed later (with the same idempotency keys)."""
        return self.code in (OVERLOADED, NOT_LEADER, INTERNAL, UNAVAILABLE)


class Malformed(ServerError):
    """Code 1: the frame or event is not well formed."""


class TooLarge(ServerError):
    """Code 2: the frame is above the server's limit; the server closed the connection."""


class UnknownTopic(ServerError):
    """Code 3: topics are restricted and this one is not allowed."""


class Overloaded(ServerError):
    """Code 4: the server is at a limit; retry after ``retry_after_ms``."""


class NotLeader(ServerError):
    """Code 5: this member does not order events; ``leader`` says where to go."""


class Unauthorized(ServerError):
    """Code 6: HELLO with the server's token first, or the token is wrong."""


class Internal(ServerError):
    """Code 7: the server failed; the outcome is unknown, retry with the same keys."""


class Unsupported(ServerError):
    """Code 8: unknown kind or version, or an admin request to a node not in a cluster."""


class Unavailable(ServerError):
    """Code 9: the cluster could not commit; the outcome is unknown, retry with the same keys."""


class Forbidden(ServerError):
    """Code 10: logged in (or anonymous), but the credential lacks the role the request needs."""


_FIRST_AVAILABLE = re.compile(r"first available is (\d+)\s*$")


class OutOfRange(ServerError):
    """Code 11: a FETCH or READ below the topic's first retained offset (retention removed those
    events), or a PUBLISH into a full topic whose ``discard`` policy is ``"new"``. Not retryable
    as it stands.

    For a read, ``first_available`` is the first offset the topic still holds (read from there);
    it is None for a refused publish."""

    @property
    def first_available(self) -> Optional[int]:
        m = _FIRST_AVAILABLE.search(self.message)
        return int(m.group(1)) if m else None


class InvalidCommit(ServerError):
    """Code 12: a COMMIT refused: bad consumer name or topic, an offset past the topic's end, or
    a new consumer when the cluster keeps the most it can. Not retryable as it stands."""


_BY_CODE: Dict[int, Type[ServerError]] = {
    MALFORMED: Malformed,
    TOO_LARGE: TooLarge,
    UNKNOWN_TOPIC: UnknownTopic,
    OVERLOADED: Overloaded,
    NOT_LEADER: NotLeader,
    UNAUTHORIZED: Unauthorized,
    INTERNAL: Internal,
    UNSUPPORTED: Unsupported,
    UNAVAILABLE: Unavailable,
    FORBIDDEN: Forbidden,
    OUT_OF_RANGE: OutOfRange,
    INVALID_COMMIT: InvalidCommit,
}


def server_error(code: int, message: str, retry_after_ms: int = 0, leader: str = "") -> ServerError:
    """The ServerError subclass for ``code`` (plain ServerError for a code this client does not know)."""
    cls: Optional[Type[ServerError]] = _BY_CODE.get(code)
    return (cls or ServerError)(code, message, retry_after_ms, leader)
