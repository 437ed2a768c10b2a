"""The one place internal errors become gRPC statuses. Never a traceback or SQL text to a client."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from switch.journal import JournalUnavailable
from switch.protocol import MD_HOST_TIME, Unauthenticated

log = logging.getLogger("fuelswitch.errors")

T = TypeVar("T")


class RequestInvalid(Exception):
    """The request is malformed (INVALID_ARGUMENT); the message says what is wrong."""


class Overloaded(Exception):
    """Refused before any decision to protect the host (RESOURCE_EXHAUSTED); retry later, same STAN."""


class OperatorError(Exception):
    """An operator API refusal with an explicit gRPC status (NOT_FOUND, ALREADY_EXISTS, ...)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def guard(
    handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[T]],
    clock_ms: Callable[[], int],
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[T]]:
    @functools.wraps(handler)
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await handler(request, context)
        except Unauthenticated as exc:
            if exc.token == "clock-skew":
                context.set_trailing_metadata(((MD_HOST_TIME, str(clock_ms())),))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except RequestInvalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OperatorError as exc:
            await context.abort(exc.code, str(exc))
        except Overloaded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except JournalUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unexpected error in %s", getattr(handler, "__name__", "handler"))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: context.abort raises")

    return guarded
