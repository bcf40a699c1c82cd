"""Outgoing gRPC channels of the mesh: TLS when configured, keepalive, and a retry policy declared in the
service config for idempotent methods only (never for notify)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc


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
    opts: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1),
        *options,
    ]
    if service_config:
        opts.append(("grpc.service_config", service_config))
    if credentials is None:
        if identity is not None:
            from mycarenet_core.trust import declare_peer

            interceptors = [*declare_peer(identity), *interceptors]
        return grpc.aio.insecure_channel(target, options=opts, interceptors=list(interceptors) or None)
    return grpc.aio.secure_channel(target, credentials, options=opts, interceptors=list(interceptors) or None)
