"""The message bus on pika: publisher confirms, manual acks, dead-lettering with a reason, timers and
reconnect with backoff. One `Bus` per process, driven by `run()` on one thread (pika is not
thread-safe; other threads hand work over with `call_threadsafe`).

Ack semantics: a handler that returns normally has its message acked. A handler that raises `Reject`
(malformed or invalid input) has its message republished to the dead-letter exchange with the reason
in the `x-eat-reason` header, then acked. Any other exception is a bug or a failed dependency: the
message is dead-lettered with the exception as its reason (never silently dropped). A lost broker
connection leaves the message unacked, so the broker redelivers it after the reconnect: handlers must
be idempotent (at-least-once delivery).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pika
import pika.exceptions
import structlog
from google.protobuf.message import DecodeError, Message

from services.common import metrics
from services.common.topology import (
    DEAD_LETTER_EXCHANGE,
    EXCHANGES,
    QUEUES,
    REASON_HEADER,
    SOURCE_HEADER,
    Queue,
)

log = structlog.get_logger("bus")
M = TypeVar("M", bound=Message)
# Errors after which the connection (or channel) is unusable: reconnect and carry on.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    ConnectionError,
)
CONTENT_TYPE = "application/x-protobuf"


class Reject(Exception):
    """Raised by a handler: the message is malformed or invalid; dead-letter it with this reason."""


class NotRouted(Exception):
    """A mandatory publish reached no queue (e.g. the addressed executor's queue does not exist)."""


@dataclass(frozen=True)
class Delivery:
    """One received message, decoupled from pika's frames."""

    queue: str
    type_name: str
    body: bytes
    headers: dict[str, Any]
    redelivered: bool
    routing_key: str
    reply_to: str = ""
    correlation_id: str = ""

    def parse(self, message_type: type[M]) -> M:
        """Decode the body as `message_type`; a wrong type or undecodable bytes raise `Reject`."""
        expected = message_type.DESCRIPTOR.full_name
        if self.type_name and self.type_name != expected:
            raise Reject(f"expected a {expected} message, got type {self.type_name!r}")
        message = message_type()
        try:
            message.ParseFromString(self.body)
        except DecodeError as err:
            raise Reject(f"cannot decode {expected}: {err}") from err
        return message


Handler = Callable[[Delivery], None]


@dataclass(order=True)
class _Timer:
    due: float
    order: int
    fn: Callable[[], None] = field(compare=False)
    every_s: float | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(frozen=True)
class _Consumer:
    queue: Queue
    handler: Handler


class Bus:
    """A broker connection with declared topology, consumers, timers and confirmed publishing."""

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 64,
        reconnect_max_s: float = 5.0,
        queues: Iterable[Queue] = QUEUES,
    ) -> None:
        self.url = url
        self.prefetch = prefetch
        self.reconnect_max_s = reconnect_max_s
        self._queues: dict[str, Queue] = {q.name: q for q in queues}
        self._consumers: list[_Consumer] = []
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._handoff: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._generation = 0  # bumps on every (re)connection: acks of older deliveries are void
        self.connections = 0

    # ----- set-up ----------------------------------------------------------------------------------
    def declare(self, *queues: Queue) -> None:
        """Queues beyond the shared topology (an executor's own, a client's reply queue)."""
        for q in queues:
            self._queues[q.name] = q
            if self._channel is not None:
                self._declare_queue(q)

    def consume(self, queue: Queue, handler: Handler) -> None:
        """Call `handler` for each message of `queue` (declared too); kept across reconnects."""
        self.declare(queue)
        consumer = _Consumer(queue, handler)
        self._consumers.append(consumer)
        if self._channel is not None:
            self._start_consumer(consumer)

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> _Timer:
        """Run `fn` on the bus thread after `delay_s`; survives reconnects. Returns a cancellable handle."""
        timer = _Timer(time.monotonic() + delay_s, next(self._order), fn)
        heapq.heappush(self._timers, timer)
        return timer

    def every(self, interval_s: float, fn: Callable[[], None], *, first_s: float | None = None) -> _Timer:
        """Run `fn` every `interval_s` on the bus thread (first after `first_s`, default one interval)."""
        start = interval_s if first_s is None else first_s
        timer = _Timer(time.monotonic() + start, next(self._order), fn, every_s=interval_s)
        heapq.heappush(self._timers, timer)
        return timer

    def call_threadsafe(self, fn: Callable[[], None]) -> None:
        """Hand `fn` to the bus thread from any thread."""
        self._handoff.put(fn)
        connection = self._connection
        if connection is not None:
            # Closed meanwhile: the loop picks the call up after reconnecting.
            with contextlib.suppress(Exception):
                connection.add_callback_threadsafe(lambda: None)  # wake the loop

    # ----- connection ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect (retrying with backoff until it works or `stop()`), declare, start consumers."""
        delay = 0.1
        while not self._stop.is_set():
            try:
                self._open()
                return
            except CONNECTION_ERRORS as err:
                metrics.CONNECTED.set(0)
                log.warning("broker unreachable; retrying", error=repr(err), retry_in_s=round(delay, 2))
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)

    def _open(self) -> None:
        self._close_quietly()
        params = pika.URLParameters(self.url)
        params.heartbeat = 30
        params.blocked_connection_timeout = 30
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=self.prefetch)
        for exchange in EXCHANGES:
            channel.exchange_declare(exchange.name, exchange_type=exchange.kind, durable=True)
        self._connection, self._channel = connection, channel
        self._generation += 1
        for q in self._queues.values():
            self._declare_queue(q)
        for consumer in self._consumers:
            self._start_consumer(consumer)
        if self.connections:
            metrics.RECONNECTS.inc()
            log.info("reconnected to the broker", connections=self.connections + 1)
        self.connections += 1
        metrics.CONNECTED.set(1)

    def _declare_queue(self, q: Queue) -> None:
        self._channel.queue_declare(q.name, durable=True, arguments=q.declare_arguments())
        for exchange, key in q.bindings:
            self._channel.queue_bind(q.name, exchange, routing_key=key)

    def _start_consumer(self, consumer: _Consumer) -> None:
        generation = self._generation

        def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
            self._deliver(consumer, channel, method, props, body, generation)

        self._channel.basic_consume(consumer.queue.name, on_message, auto_ack=False)

    def _close_quietly(self) -> None:
        if self._connection is not None:
            try:
                if self._connection.is_open:
                    self._connection.close()
            except Exception:  # already broken: nothing to close
                pass
        self._connection, self._channel = None, None

    def close(self) -> None:
        """Close the connection: unacked deliveries go back to their queues."""
        self._close_quietly()
        metrics.CONNECTED.set(0)

    # ----- consuming -------------------------------------------------------------------------------
    def _deliver(
        self, consumer: _Consumer, channel: Any, method: Any, props: Any, body: bytes, generation: int
    ) -> None:
        delivery = Delivery(
            queue=consumer.queue.name,
            type_name=props.type or "",
            body=body,
            headers=dict(props.headers or {}),
            redelivered=bool(method.redelivered),
            routing_key=method.routing_key,
            reply_to=props.reply_to or "",
            correlation_id=props.correlation_id or "",
        )
        started = time.perf_counter()
        try:
            consumer.handler(delivery)
        except Reject as err:
            self.dead_letter(delivery, str(err))
        except CONNECTION_ERRORS:
            raise  # unacked: redelivered after the reconnect
        except Exception as err:
            log.exception("handler failed; dead-lettering the message", queue=delivery.queue)
            self.dead_letter(delivery, f"handler error: {err!r}")
        if generation == self._generation:
            channel.basic_ack(method.delivery_tag)
        metrics.MESSAGES_CONSUMED.labels(delivery.queue, delivery.type_name).inc()
        metrics.HANDLER_SECONDS.labels(delivery.queue).observe(time.perf_counter() - started)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Republish the original bytes to the dead-letter exchange with the reason in its headers."""
        headers = {**delivery.headers, REASON_HEADER: reason[:1000], SOURCE_HEADER: delivery.queue}
        self._publish_raw(
            DEAD_LETTER_EXCHANGE,
            delivery.routing_key,
            delivery.body,
            type_name=delivery.type_name,
            headers=headers,
            correlation_id=delivery.correlation_id,
        )
        metrics.DEAD_LETTERED.labels(delivery.queue).inc()
        log.warning("dead-lettered a message", queue=delivery.queue, reason=reason)

    # ----- publishing ------------------------------------------------------------------------------
    def publish(
        self,
        exchange: str,
        routing_key: str,
        message: Message,
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str = "",
        reply_to: str = "",
        mandatory: bool = False,
    ) -> None:
        """Publish persistently and wait for the broker's confirm. `mandatory`: raise `NotRouted`
        when no queue takes it. Connection errors propagate (the run loop reconnects)."""
        self._publish_raw(
            exchange,
            routing_key,
            message.SerializeToString(),
            type_name=message.DESCRIPTOR.full_name,
            headers=headers,
            correlation_id=correlation_id,
            reply_to=reply_to,
            mandatory=mandatory,
        )

    def _publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        type_name: str,
        headers: dict[str, Any] | None = None,
        correlation_id: str = "",
        reply_to: str = "",
        mandatory: bool = False,
    ) -> None:
        if self._channel is None:
            raise pika.exceptions.AMQPConnectionError("not connected")
        props = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            delivery_mode=pika.DeliveryMode.Persistent,
            type=type_name,
            headers=headers or None,
            correlation_id=correlation_id or None,
            reply_to=reply_to or None,
            timestamp=int(time.time()),
        )
        try:
            self._channel.basic_publish(exchange, routing_key, body, props, mandatory=mandatory)
        except pika.exceptions.UnroutableError as err:
            raise NotRouted(f"no queue took {type_name} on {exchange!r} with key {routing_key!r}") from err
        metrics.MESSAGES_PUBLISHED.labels(exchange).inc()

    # ----- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve consumers and timers until `stop()`, reconnecting after any broker loss."""
        if self._connection is None:
            self.connect()
        while not self._stop.is_set():
            try:
                self._run_once()
            except CONNECTION_ERRORS as err:
                if self._stop.is_set():
                    break
                metrics.CONNECTED.set(0)
                log.warning("lost the broker connection; reconnecting", error=repr(err))
                self._close_quietly()
                self.connect()
        self.close()

    def _run_once(self) -> None:
        self._drain_handoff()
        self._fire_due_timers()
        wait = 0.2
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0].due - time.monotonic()))
        assert self._connection is not None
        self._connection.process_data_events(time_limit=wait)

    def _drain_handoff(self) -> None:
        while True:
            try:
                fn = self._handoff.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except CONNECTION_ERRORS:
                self._handoff.put(fn)  # run again once reconnected
                raise

    def _fire_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].due <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            try:
                timer.fn()
            except CONNECTION_ERRORS:
                timer.due = time.monotonic()  # retry right after the reconnect
                heapq.heappush(self._timers, timer)
                raise
            except Exception:
                log.exception("timer callback failed")
            if timer.every_s is not None and not timer.cancelled:
                timer.due = max(timer.due + timer.every_s, now)
                heapq.heappush(self._timers, timer)

    def stop(self) -> None:
        """Ask `run()` to return (from any thread or a signal handler)."""
        self._stop.set()
        self.call_threadsafe(lambda: None)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def drain(self, queue_name: str, timeout_s: float = 0.0) -> Iterable[Delivery]:
        """Fetch and ack every message now in `queue_name` (tools and tests: dead letters, events)."""
        if self._channel is None:
            self.connect()
        deadline = time.monotonic() + timeout_s
        while True:
            method, props, body = self._channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.02)
                continue
            yield Delivery(
                queue=queue_name,
                type_name=props.type or "",
                body=body,
                headers=dict(props.headers or {}),
                redelivered=bool(method.redelivered),
                routing_key=method.routing_key,
                reply_to=props.reply_to or "",
                correlation_id=props.correlation_id or "",
            )
