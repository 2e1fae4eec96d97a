"""Request bytes become messages inside the call: sizes bounded, undecodable bytes typed.

gRPC decodes a request before the servicer runs, and a decoding failure (bytes
that are not the method's message, a string field that is not UTF-8) escapes
every servicer's error mapping: the caller gets UNKNOWN with the parser's text.
This interceptor registers every method with identity deserialization and
decodes in the call instead, so such a request is INVALID_ARGUMENT ("request:
is not a valid <message>") through `_status`, like any other bad request.

It also bounds each method's request before parsing. The ports take messages
of up to MAX_MESSAGE_BYTES (a content hash referral of 500,000 hashes is 19 MB),
but parsing multiplies a message's size: 14 MB of empty entries in a repeated
field became over a gigabyte of objects. Only the methods that carry notices
take requests that large; registrations keep their own bound
(REGISTRATION_BYTES); every other method is refused above SMALL_REQUEST_BYTES
with RESOURCE_EXHAUSTED, unparsed. A large request is parsed only once its
caller is admitted (`Admit`: a valid token with the role for the method, or a
member node's certificate), so a stranger cannot make the node parse 24 MiB;
the handler checks the caller again, as for any call. A request that carries a
list of messages (a batch of envelopes) also has the entries of that list counted
on the wire and bounded before it is parsed (BOUNDED_ENTRIES), since each parsed
entry costs far more than its bytes.
Refusals here are audited through `refused` (exchange.refusals bounds them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from exchange import _wire
from exchange.errors import ResourceLimitError, ValidationError
from exchange.rpc._status import status_from_errors
from exchange.rpc.peers import BATCH_ENVELOPES, MAX_MESSAGE_BYTES

__all__ = [
    "BOUNDED_ENTRIES",
    "LARGE_REQUESTS",
    "REGISTRATION_BYTES",
    "SMALL_REQUEST_BYTES",
    "DecodeRequests",
]

# 64 perceptual hashes of 1 KiB in one Query are the largest of the small requests.
SMALL_REQUEST_BYTES = 256 * 1024
# 10,000 identifiers of up to 1 KiB (perceptual hashes) with their framing: the bound the
# registrations had before notices grew; 24 MiB of empty entries would parse to 800 MiB.
REGISTRATION_BYTES = 16 * 1024 * 1024
# The methods that take more than SMALL_REQUEST_BYTES, and how much. Respond may
# carry any substantive notice, a content hash referral included.
LARGE_REQUESTS: Mapping[str, int] = {
    "/exchange.v1.Federation/Deliver": MAX_MESSAGE_BYTES,
    # Each message of the stream is one envelope, bounded as Deliver's.
    "/exchange.v1.Federation/DeliverStream": MAX_MESSAGE_BYTES,
    # Each message is a batch of envelopes, of as many bytes as one large one.
    "/exchange.v1.Federation/DeliverBatches": MAX_MESSAGE_BYTES,
    "/exchange.v1.Authority/SubmitNotice": MAX_MESSAGE_BYTES,
    "/exchange.v1.Authority/Respond": MAX_MESSAGE_BYTES,
    "/exchange.v1.Authority/RegisterIdentifiers": REGISTRATION_BYTES,
}

# The repeated field of a method's request whose entries are counted before it is
# parsed, and how many it may hold.
BOUNDED_ENTRIES: Mapping[str, tuple[str, int]] = {
    "/exchange.v1.Federation/DeliverBatches": ("envelopes", BATCH_ENVELOPES),
}

Context = grpc.aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]
Admit = Callable[[Context, str], Awaitable[None]]
Refused = Callable[[Context, str, str], Awaitable[None]]
if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]


def _decode(
    deserializer: Deserializer | None, data: bytes, limit: int, bound: _Bound | None
) -> Any:
    if len(data) > limit:
        raise ResourceLimitError(
            f"request: {len(data)} bytes is over this method's limit of {limit}"
        )
    if deserializer is None:
        return data
    if bound is not None:
        try:
            entries = _wire.entries(data, bound.number, bound.most)
        except _wire.MalformedError:
            raise _not_valid(deserializer) from None
        if entries > bound.most:
            raise ResourceLimitError(
                f"request: more than {bound.most} {bound.field} in one message"
            )
    try:
        return deserializer(data)
    except Exception:  # the parser's error says nothing the caller needs
        raise _not_valid(deserializer) from None


def _not_valid(deserializer: Deserializer) -> ValidationError:
    """The refusal of bytes that are not the method's request message."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    if descriptor is None:
        return ValidationError("request", "is not a valid message")
    return ValidationError("request", f"is not a valid {descriptor.full_name} message")


@dataclasses.dataclass(frozen=True)
class _Bound:
    """A repeated field of a method's request, bounded before the request is parsed."""

    field: str
    number: int
    most: int

    @staticmethod
    def of(method: str, deserializer: Deserializer | None) -> _Bound | None:
        """The bound of `method`'s request, if it has one; found once per method, and
        an error if the field cannot be found (the bound is never skipped)."""
        if method not in BOUNDED_ENTRIES:
            return None
        field, most = BOUNDED_ENTRIES[method]
        descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
        if descriptor is None or field not in descriptor.fields_by_name:
            raise RuntimeError(f"{method}: no request field {field} to bound")
        return _Bound(field, descriptor.fields_by_name[field].number, most)


class DecodeRequests(grpc.aio.ServerInterceptor):
    """Decode requests in the call, turning undecodable bytes into INVALID_ARGUMENT.

    Args:
        admit: raises the call's refusal (an ExchangeError) unless its caller may
            call the method (its name, e.g. "SubmitNotice"); awaited before a
            request over SMALL_REQUEST_BYTES is parsed.
        refused: records a request refused here, with the method's name and the
            reason ("too large" or "invalid request").
    """

    def __init__(self, log: Any, admit: Admit, refused: Refused) -> None:
        self._log = log
        self._admit = admit
        self._refused = refused
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # UNIMPLEMENTED; not cached, the caller chooses the name
            # One wrapped handler per method that the server has.
            limit = LARGE_REQUESTS.get(method, SMALL_REQUEST_BYTES)
            wrapped = self._handlers[method] = self._wrap(handler, method, limit)
        return wrapped

    def _wrap(self, handler: Any, method: str, limit: int) -> Handler:
        # Any: the stubs describe the synchronous server's handlers, these are grpc.aio's.
        deserializer = handler.request_deserializer
        serializer = handler.response_serializer
        log, admit, refused = self._log, self._admit, self._refused
        name = method.rsplit("/", 1)[-1]
        bound = _Bound.of(method, deserializer)

        async def checked(data: bytes, context: Context) -> Any:
            """The request, or the refusal (recorded) as an ExchangeError."""
            if SMALL_REQUEST_BYTES < len(data) <= limit:
                await admit(context, name)
            try:
                return _decode(deserializer, data, limit, bound)
            except ResourceLimitError:
                await refused(context, name, "too large")
                raise
            except ValidationError:
                await refused(context, name, "invalid request")
                raise

        async def decoded(data: bytes, context: Context) -> Any:
            async with status_from_errors(context, log):
                return await checked(data, context)

        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            async def call_unary_unary(data: bytes, context: Context) -> Any:
                return await unary_unary(await decoded(data, context), context)

            return grpc.unary_unary_rpc_method_handler(
                call_unary_unary, response_serializer=serializer
            )
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream
            if inspect.isasyncgenfunction(unary_stream):

                async def stream_unary_stream(data: bytes, context: Context) -> AsyncIterator[Any]:
                    async for response in unary_stream(await decoded(data, context), context):
                        yield response

                return grpc.unary_stream_rpc_method_handler(
                    stream_unary_stream, response_serializer=serializer
                )

            # A handler that writes with context.write (health's Watch) stays a coroutine.
            async def write_unary_stream(data: bytes, context: Context) -> None:
                await unary_stream(await decoded(data, context), context)

            return grpc.unary_stream_rpc_method_handler(
                write_unary_stream, response_serializer=serializer
            )
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            stream_stream = handler.stream_stream

            async def call_stream_stream(
                requests: AsyncIterator[bytes], context: Context
            ) -> AsyncIterator[Any]:
                # The handler may read its requests in a task of its own: a refusal is
                # raised to it, and the call aborted here, in the call's own task (an
                # abort from another task, while this one writes, could leave the call
                # open until its deadline).
                async def each() -> AsyncIterator[Any]:
                    async for data in requests:
                        yield await checked(data, context)

                # Closed as soon as the call ends, so that the handler's cleanup (its
                # reader task) runs then, not when the generator is collected.
                responses = stream_stream(each(), context)
                async with status_from_errors(context, log), contextlib.aclosing(responses):
                    async for response in responses:
                        yield response

            return grpc.stream_stream_rpc_method_handler(
                call_stream_stream, response_serializer=serializer
            )
        unchanged: Handler = handler
        return unchanged  # no stream-unary method is served; no other stream-stream kind
