"""The operator credential every operator API (CardAdmin, Clearing) checks first."""

from __future__ import annotations

import hmac

import grpc

from switch.errors import OperatorError
from switch.protocol import MD_AUTHORIZATION


def require_operator(context: grpc.aio.ServicerContext, expected: bytes) -> None:
    """`authorization: Bearer <token>` with the configured token, compared in constant time."""
    md = dict(context.invocation_metadata() or ())
    given = md.get(MD_AUTHORIZATION, "")
    token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
    if not token or not hmac.compare_digest(token.encode(), expected):
        raise OperatorError(grpc.StatusCode.UNAUTHENTICATED, "operator token required (authorization: Bearer ...)")
