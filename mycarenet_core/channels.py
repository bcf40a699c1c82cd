"""Outgoing gRPC channels of the mesh: TLS when configured, keepalive, and a retry policy declared in the
service config for idempotent methods only (never for notify).

Keepalive is one policy for both ends (:func:`client_keepalive_options`, :func:`server_keepalive_options`,
which every :class:`~mycarenet_core.server.MeshServer` uses): a client pings an idle connection every
``keepalive`` period (30 s; ``MCN_KEEPALIVE_SECONDS`` for every process of a cluster, shorter in tests),
also while a watch stream is open and silent and when no call is open, without limit; a server accepts
pings as often as every half period, with or without calls. A server whose policy is stricter than its
clients' pings counts each ping as a strike and, after two, closes the connection with GOAWAY
``too_many_pings`` (gRPC's default server policy is one ping per 5 minutes: the watch streams reconnected
every few minutes before they agreed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

KEEPALIVE_VARIABLE = "MCN_KEEPALIVE_SECONDS"
DEFAULT_KEEPALIVE_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000


def keepalive_ms() -> int:
    """The keepalive period of this process, in milliseconds (``MCN_KEEPALIVE_SECONDS``, default 30 s)."""
    raw = os.environ.get(KEEPALIVE_VARIABLE, "")
    if not raw:
        return DEFAULT_KEEPALIVE_MS
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{KEEPALIVE_VARIABLE}={raw!r}: a number of seconds") from None
    if not 0.01 <= seconds <= 7200:
        raise ValueError(f"{KEEPALIVE_VARIABLE}={raw!r}: between 0.01 and 7200 seconds")
    return int(seconds * 1000)


def client_keepalive_options(period_ms: int | None = None) -> list[tuple[str, int]]:
    """What a channel pings: every ``period_ms`` (default :func:`keepalive_ms`) on an idle connection,
    with or without open calls, without a limit on pings between data frames (a silent watch stream)."""
    period = period_ms if period_ms is not None else keepalive_ms()
    return [
        ("grpc.keepalive_time_ms", period),
        ("grpc.keepalive_timeout_ms", min(KEEPALIVE_TIMEOUT_MS, max(period, 20))),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_keepalive_options(period_ms: int | None = None) -> list[tuple[str, int]]:
    """What a server accepts: pings every half of the clients' ``period_ms`` (margin for timers), with or
    without calls; a client pinging faster than that still gets its strikes (gRPC's abuse protection)."""
    period = period_ms if period_ms is not None else keepalive_ms()
    return [
        ("grpc.http2.min_ping_interval_without_data_ms", period // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def merged(
    defaults: Sequence[tuple[str, Any]], overrides: Sequence[tuple[str, Any]]
) -> list[tuple[str, Any]]:
    """Channel arguments with ``overrides`` replacing the defaults of the same name (never both given)."""
    table = dict(defaults)
    table.update(overrides)
    return list(table.items())


def retry_service_config(idempotent: Sequence[tuple[str, str]], *, max_attempts: int = 3) -> str:
    """A gRPC service config that retries the given (service, method) pairs on UNAVAILABLE.

    ``method`` may be ``""`` for every method of the service.
    """
    names = [{"service": s, **({"method": m} if m else {})} for s, m in idempotent]
    config: dict[str, Any] = {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
        if names
        else []
    }
    return json.dumps(config)


def client_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """Mutual-TLS credentials from PEM files."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )


def server_credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate signed by the mesh CA."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=ca.read_bytes(), require_client_auth=True
    )


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    service_config: str | None = None,
    interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
    identity: str | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` (host:port).

    ``identity`` is the certificate kind this caller stands for (``hub``, ``oa-300``, ``admin`` ...). Under
    TLS the certificate in ``credentials`` says it and ``identity`` is ignored; on a plaintext channel
    (development only) it is declared in the ``x-mcn-peer`` metadata (see :mod:`mycarenet_core.trust`).
    """
    opts = merged([*client_keepalive_options(), ("grpc.enable_retries", 1)], options)
    if service_config:
        opts.append(("grpc.service_config", service_config))
    if credentials is None:
        if identity is not None:
            from mycarenet_core.trust import declare_peer

            interceptors = [*declare_peer(identity), *interceptors]
        return grpc.aio.insecure_channel(target, options=opts, interceptors=list(interceptors) or None)
    return grpc.aio.secure_channel(target, credentials, options=opts, interceptors=list(interceptors) or None)
