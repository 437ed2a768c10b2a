"""The one place internal errors become gRPC statuses. Never a traceback or SQL text to a client."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

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
                # Added to what is set already (the request id of switch/observe.py).
                context.set_trailing_metadata((*(context.trailing_metadata() or ()), (MD_HOST_TIME, str(clock_ms()))))
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


def parsing(request_type: Any, handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[T]],
            ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[T]]:
    """For a method registered with a pass-through deserializer: parse inside the error map.

    gRPC's own deserializer would answer a message that does not parse with UNKNOWN and the
    exception's class and text; here it is INVALID_ARGUMENT naming the message type.
    """
    @functools.wraps(handler)
    async def parsed(raw: bytes, context: grpc.aio.ServicerContext) -> T:
        return await handler(parse_request(request_type, raw), context)

    return parsed


def parsing_stream(request_type: Any, handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[T]],
                   ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[T]]:
    """`parsing` for a client stream: each message is parsed as the handler reads it."""
    @functools.wraps(handler)
    async def parsed(raws: Any, context: grpc.aio.ServicerContext) -> T:
        async def messages() -> Any:
            async for raw in raws:  # statement lines are not journal records: not walked for NUL (cost)
                yield parse_request(request_type, raw, check_text=False)

        return await handler(messages(), context)

    return parsed


def parse_request(request_type: Any, raw: bytes, *, check_text: bool = True) -> Any:
    try:
        request = request_type.FromString(raw)
    except DecodeError as exc:
        raise RequestInvalid(f"{request_type.__name__} does not parse") from exc
    if check_text:
        refuse_nul(request)
    return request


def refuse_nul(message: Any) -> None:
    """PostgreSQL text cannot hold U+0000: refuse it at the boundary (INVALID_ARGUMENT).

    Let through, it would fail the whole group commit it lands in: every request of that batch
    answered 91 and the switch rebuilding its memory, as often as the message is resent.
    """
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_STRING:
            if any("\x00" in text for text in (value if field.is_repeated else (value,))):
                raise RequestInvalid(f"{field.name} must not contain a NUL character")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                if any("\x00" in str(k) or ("\x00" in v if isinstance(v, str) else False) for k, v in value.items()):
                    raise RequestInvalid(f"{field.name} must not contain a NUL character")
                continue
            for child in value if field.is_repeated else (value,):
                refuse_nul(child)
