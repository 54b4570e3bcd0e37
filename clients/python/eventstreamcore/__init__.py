"""EventStreamCore client: the acknowledged protocol of docs/protocol.md in pure Python.

    from eventstreamcore import Client
    with Client("127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072") as c:
        ack = c.publish("orders", b"order 1")
        for ev in c.tail("orders", 0, stop_at_end=True):
            print(ev.offset, ev.payload)
"""

from .client import Client, Consumer, Tail
from .connection import Connection, parse_address
from .errors import (
    ConnectionLost,
    EscError,
    Forbidden,
    Internal,
    InvalidCommit,
    Malformed,
    NotLeader,
    OutOfRange,
    Overloaded,
    ProtocolError,
    RequestTimeout,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnknownTopic,
    Unsupported,
)
from .protocol import Ack, ConsumerPosition, Event, Fetched, Priority, ServerInfo, StoredEvent, TopicInfo

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Client",
    "Connection",
    "Consumer",
    "ConsumerPosition",
    "ConnectionLost",
    "EscError",
    "Event",
    "Fetched",
    "Forbidden",
    "Internal",
    "InvalidCommit",
    "Malformed",
    "NotLeader",
    "OutOfRange",
    "Overloaded",
    "Priority",
    "ProtocolError",
    "RequestTimeout",
    "ServerError",
    "ServerInfo",
    "StoredEvent",
    "Tail",
    "TooLarge",
    "TopicInfo",
    "Unauthorized",
    "Unavailable",
    "UnknownTopic",
    "Unsupported",
    "parse_address",
]
