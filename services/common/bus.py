"""The message bus on pika: asynchronous publisher confirms, acks after confirms, dead-lettering with a
reason, timers and reconnect with backoff. One `Bus` per process, driven by `run()` on one thread (pika
is not thread-safe; other threads hand work over with `call_threadsafe`).

Ack semantics: a handler that returns normally has its message acked once every message it published
is confirmed by the broker (consume-transform-produce without a blocking round trip per publish). A
handler that raises `Reject` (malformed or invalid input) has its message republished to the
dead-letter exchange with the reason in the `x-eat-reason` header, and acked once that is confirmed.
Any other exception is a bug or a failed dependency: the message is dead-lettered with the exception as
its reason (never silently dropped).

Publishing never blocks inside the loop: each message waits in an outbox until the broker confirms it.
A nacked message is sent again; after a lost connection every unconfirmed message is sent again on the
new one, so nothing a service decided to publish is lost (at-least-once: receivers drop duplicates).
Deliveries not yet acked when a connection drops are redelivered by the broker.

`after_confirms(fn)` runs `fn` once everything published so far is confirmed (a service that journals
what it is about to send marks it sent there). `publish(..., expiration_s=...)` gives one message a
time to live: the broker drops (dead-letters) it if no consumer took it by then.

Outside `run()` (tools and tests), `publish` waits for its own confirm and raises `NotRouted` for a
mandatory message no queue took; inside the loop, `on_unroutable` is called instead.
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
PUBLISH_ID_HEADER = "x-eat-publish-id"  # matches a returned (unroutable) message to its publish
SYNC_CONFIRM_TIMEOUT_S = 30.0


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


@dataclass
class _Outgoing:
    """A message in the outbox until the broker confirms it."""

    publish_id: int
    exchange: str
    routing_key: str
    body: bytes
    props: pika.BasicProperties
    mandatory: bool
    on_unroutable: Callable[[], None] | None
    parent: tuple[int, int] | None  # (connection generation, delivery tag) acked after the confirm
    returned: bool = False
    # What `after_confirms` compares: the publish id, or for a message sent in place of a returned one
    # (on_unroutable), that message's, so a watcher waits for the replacement too.
    watch_id: int = 0


@dataclass(frozen=True)
class Hold:
    """A delivery kept unacked past its handler (see `Bus.hold`)."""

    delivery: tuple[int, int]
    token: int


@dataclass
class _Inflight:
    """A delivery whose handler ran; acked when its published messages are all confirmed."""

    children: set[int] = field(default_factory=set)
    handled: bool = False


class Bus:
    """A broker connection with declared topology, consumers, timers and an outbox."""

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 256,
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
        self._generation = 0  # bumps on every (re)connection: deliveries of older ones are void
        self.connections = 0
        self._publish_ids = itertools.count(1)
        self._unconfirmed: dict[int, _Outgoing] = {}  # by channel sequence number
        self._unsent: list[_Outgoing] = []  # published while disconnected
        self._by_id: dict[int, _Outgoing] = {}
        self._next_seq = 1
        self._confirms: list[tuple[bool, int, bool]] = []  # (ack?, seq, multiple) from pika's I/O
        self._inflight: dict[tuple[int, int], _Inflight] = {}
        self._current: tuple[int, int] | None = None  # the delivery whose handler is running
        self._settled: list[int] = []  # delivery tags ready to ack (current connection)
        self._loop_thread: int | None = None
        self._wake_pending = False
        self._batching = False  # publish_many: do not wait for each confirm
        self._watchers: list[tuple[int, Callable[[], None]]] = []  # (publish id mark, fn): after_confirms
        self._returning: int | None = None  # watch id of the returned message whose callback runs

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

    def after_confirms(self, fn: Callable[[], None]) -> None:
        """On the bus thread: run `fn` once every message published so far is confirmed by the broker
        (at once when none is outstanding). Survives reconnects: resent messages keep their place."""
        self._watchers.append((next(self._publish_ids), fn))
        self._run_watchers()

    def _run_watchers(self) -> None:
        if not self._watchers:
            return
        pending = [o.watch_id for o in self._unconfirmed.values()] + [o.watch_id for o in self._unsent]
        oldest = min(pending, default=None)
        ready = [w for w in self._watchers if oldest is None or w[0] < oldest]
        if not ready:
            return
        self._watchers = [w for w in self._watchers if not (oldest is None or w[0] < oldest)]
        for _, fn in ready:
            try:
                fn()
            except CONNECTION_ERRORS:
                raise
            except Exception:
                log.exception("after_confirms callback failed")

    # ----- connection ------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect (retrying with backoff until it works or `stop()`), declare, start consumers, and
        send again whatever the outbox holds."""
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
        self._enable_confirms(connection, channel)
        channel.add_on_return_callback(self._on_returned)
        channel.basic_qos(prefetch_count=self.prefetch)
        for exchange in EXCHANGES:
            channel.exchange_declare(exchange.name, exchange_type=exchange.kind, durable=True)
        self._connection, self._channel = connection, channel
        self._generation += 1
        self._inflight.clear()  # deliveries of the old connection come back by redelivery
        self._settled.clear()
        for q in self._queues.values():
            self._declare_queue(q)
        for consumer in self._consumers:
            self._start_consumer(consumer)
        if self.connections:
            metrics.RECONNECTS.inc()
            log.info("reconnected to the broker", connections=self.connections + 1)
        self.connections += 1
        metrics.CONNECTED.set(1)
        self._resend_outbox()

    def _enable_confirms(self, connection: pika.BlockingConnection, channel: Any) -> None:
        """Confirm mode on the channel with our own ack/nack callback, so publishing does not wait
        for each confirm (pika's blocking channel would). The callback only records; the loop settles
        confirms after pika's I/O returns, never inside it."""
        self._next_seq = 1
        self._confirms.clear()
        selected = threading.Event()

        def on_confirm(frame: Any) -> None:
            method = frame.method
            ack = isinstance(method, pika.spec.Basic.Ack)
            self._confirms.append((ack, method.delivery_tag, bool(method.multiple)))
            if not self._wake_pending:
                # process_data_events returns only for its own events: queue one so the loop wakes
                # and settles this confirm now instead of at its next timeout.
                self._wake_pending = True
                connection.add_callback_threadsafe(self._woken)

        channel._impl.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _: selected.set())
        deadline = time.monotonic() + 10.0
        while not selected.is_set():
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPConnectionError("confirm mode was not acknowledged")
            connection.process_data_events(time_limit=0.01)

    def _woken(self) -> None:
        self._wake_pending = False

    def _declare_queue(self, q: Queue) -> None:
        self._channel.queue_declare(q.name, durable=True, arguments=q.declare_arguments())
        for exchange, key in q.bindings:
            self._channel.queue_bind(q.name, exchange, routing_key=key)

    def _start_consumer(self, consumer: _Consumer) -> None:
        generation = self._generation

        def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
            self._deliver(consumer, method, props, body, generation)

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
    def _deliver(self, consumer: _Consumer, method: Any, props: Any, body: bytes, generation: int) -> None:
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
        key = (generation, method.delivery_tag)
        inflight = self._inflight.setdefault(key, _Inflight())
        started = time.perf_counter()
        self._current = key
        try:
            consumer.handler(delivery)
        except Reject as err:
            self.dead_letter(delivery, str(err))
        except CONNECTION_ERRORS:
            raise  # unacked: redelivered after the reconnect
        except Exception as err:
            log.exception("handler failed; dead-lettering the message", queue=delivery.queue)
            self.dead_letter(delivery, f"handler error: {err!r}")
        finally:
            self._current = None
        inflight.handled = True
        self._ack_if_settled(key)
        metrics.MESSAGES_CONSUMED.labels(delivery.queue, delivery.type_name).inc()
        metrics.HANDLER_SECONDS.labels(delivery.queue).observe(time.perf_counter() - started)

    def _ack_if_settled(self, key: tuple[int, int]) -> None:
        inflight = self._inflight.get(key)
        if inflight is None or not inflight.handled or inflight.children:
            return
        del self._inflight[key]
        if key[0] == self._generation:
            self._settled.append(key[1])

    def _flush_acks(self) -> None:
        """Ack settled deliveries, many per frame: one `multiple` ack covers every tag below the oldest
        delivery still in flight (acks are a large share of a busy consumer's frames)."""
        if not self._settled or self._channel is None:
            return
        waiting = [tag for generation, tag in self._inflight if generation == self._generation]
        oldest = min(waiting, default=None)
        below = [t for t in self._settled if oldest is None or t < oldest]
        channel = self._channel._impl  # buffered like publishes (see `_send`)
        if below:
            channel.basic_ack(max(below), multiple=True)
        for tag in self._settled:
            if oldest is not None and tag > oldest:
                channel.basic_ack(tag)
        self._settled.clear()

    def hold(self) -> Hold:
        """Inside a handler: keep this delivery unacked after the handler returns, until `release`.
        For consumers that batch (the evaluator): publish the batch's outputs with `on_behalf=hold`,
        then release, and the delivery is acked once those outputs are confirmed."""
        if self._current is None:
            raise RuntimeError("hold() is only meaningful inside a message handler")
        token = next(self._publish_ids)
        self._inflight[self._current].children.add(token)
        return Hold(self._current, token)

    def release(self, hold: Hold) -> None:
        """End a hold (a no-op for a delivery of an earlier connection: it will be redelivered)."""
        inflight = self._inflight.get(hold.delivery)
        if inflight is not None:
            inflight.children.discard(hold.token)
            self._ack_if_settled(hold.delivery)

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
        on_unroutable: Callable[[], None] | None = None,
        persistent: bool = True,
        on_behalf: Hold | None = None,
        expiration_s: float | None = None,
    ) -> None:
        """Publish through the outbox.

        `mandatory`: a message no queue takes is reported to `on_unroutable` (in the loop) or raises
        `NotRouted` (outside it). `persistent=False` for state that is sent again anyway (statuses,
        heartbeats): the broker keeps it in memory only, which costs it far less, and a broker restart
        loses it. `on_behalf`: the held delivery this message answers (its ack then waits for this
        confirm; by default the delivery whose handler is running). `expiration_s`: the message's time
        to live in its queue (at least 1 ms); past it the broker drops it, dead-lettering it where the
        queue says so."""
        self._publish_raw(
            exchange,
            routing_key,
            message.SerializeToString(),
            type_name=message.DESCRIPTOR.full_name,
            headers=headers,
            correlation_id=correlation_id,
            reply_to=reply_to,
            mandatory=mandatory,
            on_unroutable=on_unroutable,
            persistent=persistent,
            parent=None if on_behalf is None else on_behalf.delivery,
            expiration_s=expiration_s,
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
        on_unroutable: Callable[[], None] | None = None,
        persistent: bool = True,
        parent: tuple[int, int] | None = None,
        expiration_s: float | None = None,
    ) -> None:
        publish_id = next(self._publish_ids)
        if mandatory:
            headers = {**(headers or {}), PUBLISH_ID_HEADER: publish_id}
        props = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            delivery_mode=pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient,
            type=type_name,
            headers=headers or None,
            correlation_id=correlation_id or None,
            reply_to=reply_to or None,
            timestamp=int(time.time()),
            expiration=None if expiration_s is None else str(max(1, round(expiration_s * 1000))),
        )
        out = _Outgoing(
            publish_id, exchange, routing_key, body, props, mandatory, on_unroutable, self._current
        )
        out.watch_id = publish_id if self._returning is None else self._returning
        self._by_id[publish_id] = out
        if self._channel is None:
            if not self._in_loop():
                self.connect()
            else:
                self._unsent.append(out)
                return
        self._send(out)
        if not self._in_loop() and not self._batching:
            self._wait_confirmed([out])

    def _send(self, out: _Outgoing) -> None:
        seq = self._next_seq
        self._next_seq += 1
        self._unconfirmed[seq] = out
        if out.parent is not None and out.parent in self._inflight:
            self._inflight[out.parent].children.add(out.publish_id)
        # The channel implementation's publish only buffers the frames; the loop's next
        # process_data_events writes everything buffered at once (the blocking channel's publish
        # polls and writes the socket for every message). Closing the connection sends what is
        # buffered first, in order.
        self._channel._impl.basic_publish(
            out.exchange, out.routing_key, out.body, out.props, mandatory=out.mandatory
        )

    def _resend_outbox(self) -> None:
        """After a reconnect: every unconfirmed or unsent message goes out again, in order."""
        pending = [self._unconfirmed[s] for s in sorted(self._unconfirmed)] + self._unsent
        self._unconfirmed, self._unsent = {}, []
        for out in pending:
            out.parent = None  # its delivery belonged to the old connection and will be redelivered
            self._send(out)
        if pending:
            log.info("resent unconfirmed messages", count=len(pending))

    def _on_returned(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        publish_id = (props.headers or {}).get(PUBLISH_ID_HEADER)
        out = self._by_id.get(publish_id) if isinstance(publish_id, int) else None
        if out is None:
            return
        out.returned = True
        if out.on_unroutable is not None and self._in_loop():
            self._returning = out.watch_id
            try:
                out.on_unroutable()
            finally:
                self._returning = None
        elif self._in_loop():
            log.warning("unroutable message dropped", exchange=out.exchange, routing_key=out.routing_key)

    def _settle_confirms(self) -> None:
        """Apply the confirms pika's I/O recorded: forget confirmed messages, resend nacked ones, ack
        deliveries whose outputs are all confirmed."""
        while self._confirms:
            ack, tag, multiple = self._confirms.pop(0)
            seqs = [s for s in self._unconfirmed if s <= tag] if multiple else [tag]
            for seq in seqs:
                out = self._unconfirmed.pop(seq, None)
                if out is None:
                    continue
                if not ack:
                    log.warning("broker nacked a message; sending it again", exchange=out.exchange)
                    self._send(out)
                    continue
                self._by_id.pop(out.publish_id, None)
                metrics.MESSAGES_PUBLISHED.labels(out.exchange).inc()
                if out.parent is not None and out.parent in self._inflight:
                    self._inflight[out.parent].children.discard(out.publish_id)
                    self._ack_if_settled(out.parent)
        self._run_watchers()

    def _wait_confirmed(self, outs: list[_Outgoing]) -> None:
        deadline = time.monotonic() + SYNC_CONFIRM_TIMEOUT_S
        while any(out.publish_id in self._by_id for out in outs):
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPConnectionError("no publisher confirm in time")
            assert self._connection is not None
            self._connection.process_data_events(time_limit=0.05)
            self._settle_confirms()
        for out in outs:
            if out.returned:
                where = f"{out.exchange!r} with key {out.routing_key!r}"
                raise NotRouted(f"no queue took {out.props.type} on {where}")

    def publish_many(self, messages: Iterable[tuple[str, str, Message]]) -> None:
        """Outside the loop (load generators, tools): send every (exchange, routing key, message),
        then wait once for all their confirms."""
        self._batching = True
        try:
            before = next(self._publish_ids)
            for exchange, routing_key, message in messages:
                self.publish(exchange, routing_key, message)
        finally:
            self._batching = False
        self._wait_confirmed([o for i, o in list(self._by_id.items()) if i > before])

    def _in_loop(self) -> bool:
        return self._loop_thread == threading.get_ident()

    @property
    def unconfirmed(self) -> int:
        """Messages published and not yet confirmed by the broker."""
        return len(self._unconfirmed) + len(self._unsent)

    # ----- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve consumers and timers until `stop()`, reconnecting after any broker loss."""
        self._loop_thread = threading.get_ident()
        try:
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
            self._finish_outbox()
        finally:
            self._loop_thread = None
            self.close()

    def _finish_outbox(self, timeout_s: float = 5.0) -> None:
        """At shutdown: wait (briefly) for the confirms of what was published, acking what they settle."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(*CONNECTION_ERRORS):
            while self._unconfirmed and self._connection is not None and time.monotonic() < deadline:
                self._connection.process_data_events(time_limit=0.02)
                self._settle_confirms()
            self._flush_acks()
        if self.unconfirmed:
            log.warning("stopping with unconfirmed messages", count=self.unconfirmed)

    def _run_once(self) -> None:
        self._drain_handoff()
        self._fire_due_timers()
        self._settle_confirms()
        wait = 0.2
        if self._timers:
            wait = min(wait, max(0.0, self._timers[0].due - time.monotonic()))
        if self._confirms or not self._handoff.empty():
            wait = 0.0
        assert self._connection is not None
        self._connection.process_data_events(time_limit=wait)
        self._settle_confirms()
        self._flush_acks()

    def _drain_handoff(self) -> None:
        while True:
            try:
                fn = self._handoff.get_nowait()
            except queue.Empty:
                return
            fn()

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
