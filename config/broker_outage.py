"""Keep the Celery worker alive when the Redis broker goes away (issue 24, item 1).

kombu 5.7 / celery 5.7 crash the worker on a broker outage whenever it holds an unacknowledged message - and an
exmaint worker nearly always does: a held window waits for its window end in an ETA message. On connection loss
celery's consumer first calls ``connection.collect()``: closing the default channel fails on the dead socket
(a connection error, ignored) and kombu then drops the transport's client (``transport.client = None``). Celery
next calls ``connection.close()``, which closes that channel again; this time the channel returns its unacked
messages to Redis, builds a connection from ``transport.client`` and raises
``AttributeError: 'NoneType' object has no attribute 'hostname'`` - not a connection error, so the worker stops
with "Unrecoverable error". Raising a connection error there instead lets celery reconnect as it does for every
other broker error; the messages stay in Redis's unacked set and are restored after the visibility timeout (the
broker is unreachable at that moment anyway, so returning them could not have succeeded).
"""
from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


def install() -> None:
    """Wrap the Redis channel's connection parameters so a dropped transport client is a connection error."""
    channel = kombu_redis.Channel
    if getattr(channel._connparams, "_exmaint_outage_guard", False):
        return
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise kombu_redis.redis.exceptions.ConnectionError("the broker connection is closed")
        return original(self, asynchronous=asynchronous)

    _connparams._exmaint_outage_guard = True  # type: ignore[attr-defined]
    channel._connparams = _connparams
