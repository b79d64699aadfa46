"""The RabbitMQ topology, declared once as data: exchanges, queues, bindings, dead-lettering.

Message flow (DESIGN section 4), exchange -> routing key -> queue:

    eat.ingest     submit                -> eat.ingest.submissions     (ingest)
    eat.tasks      task.accepted         -> eat.aggregator.tasks       (aggregator)
    eat.executors  status.* heartbeat.*  -> eat.aggregator.executors   (aggregator)
    eat.dispatch   executor.<id>         -> eat.executor.<id>          (one queue per executor)
    eat.results    result.*              -> eat.evaluator.results, eat.aggregator.results
    eat.quality    quality.*             -> eat.aggregator.quality     (aggregator)
    eat.events     event.*               -> eat.client.events          (clients without reply_to)
    eat.learning   experience            -> eat.trainer.experience     (trainer)
    eat.learning   policy.updated        -> eat.policy.updates         (policy server)
    eat.hybrid     personal.request      -> eat.offload.requests       (offload coordinator)
    eat.hybrid     edge.<server>         -> eat.edge.<server>          (one queue per edge server)
    eat.hybrid     device.<user>         -> eat.device.<user>          (one queue per user's device)
    eat.hybrid     report.* heartbeat.*  -> eat.offload.reports        (offload coordinator)
    eat.dlx        #                     -> eat.dead_letters

Every message carries its protobuf type name in the AMQP `type` property, so one queue may carry
several message types. Queues are durable, messages persistent; a message a consumer cannot decode or
validate is republished to eat.dlx with the reason in its `x-eat-reason` header (see `bus`), and any
message rejected without requeue dead-letters there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEAD_LETTER_EXCHANGE = "eat.dlx"
DEAD_LETTER_QUEUE = "eat.dead_letters"
REASON_HEADER = "x-eat-reason"
SOURCE_HEADER = "x-eat-source-queue"


@dataclass(frozen=True)
class Exchange:
    name: str
    kind: str = "topic"


@dataclass(frozen=True)
class Queue:
    name: str
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key pattern)
    dead_letter: bool = True  # rejected messages go to eat.dlx
    arguments: dict[str, object] = field(default_factory=dict, hash=False)

    def declare_arguments(self) -> dict[str, object]:
        args = dict(self.arguments)
        if self.dead_letter:
            args["x-dead-letter-exchange"] = DEAD_LETTER_EXCHANGE
        return args


# Exchanges ------------------------------------------------------------------------------------------
INGEST = Exchange("eat.ingest", "direct")
TASKS = Exchange("eat.tasks")
EXECUTORS = Exchange("eat.executors")
DISPATCH = Exchange("eat.dispatch", "direct")
RESULTS = Exchange("eat.results")
QUALITY = Exchange("eat.quality")
EVENTS = Exchange("eat.events")
LEARNING = Exchange("eat.learning")
HYBRID = Exchange("eat.hybrid")  # personal requests split between edge servers and users' devices
DLX = Exchange(DEAD_LETTER_EXCHANGE, "fanout")
EXCHANGES: tuple[Exchange, ...] = (
    INGEST,
    TASKS,
    EXECUTORS,
    DISPATCH,
    RESULTS,
    QUALITY,
    EVENTS,
    LEARNING,
    HYBRID,
    DLX,
)

# Routing keys ---------------------------------------------------------------------------------------
SUBMIT_KEY = "submit"
ACCEPTED_KEY = "task.accepted"
EXPERIENCE_KEY = "experience"
POLICY_UPDATED_KEY = "policy.updated"
# On eat.events, bound by no durable queue: the aggregator's periodic state, read by `eat status`.
SNAPSHOT_KEY = "cluster.snapshot"
PERSONAL_REQUEST_KEY = "personal.request"
EDGE_REPORT_KEY = "report.edge"
DEVICE_REPORT_KEY = "report.device"


def status_key(executor_id: str) -> str:
    return f"status.{executor_id}"


def heartbeat_key(executor_id: str) -> str:
    return f"heartbeat.{executor_id}"


def dispatch_key(executor_id: str) -> str:
    return f"executor.{executor_id}"


def result_key(task_id: str) -> str:
    return f"result.{task_id}"


def quality_key(task_id: str) -> str:
    return f"quality.{task_id}"


def edge_key(server_id: str) -> str:
    return f"edge.{server_id}"


def device_key(user_id: str) -> str:
    return f"device.{user_id}"


def device_heartbeat_key(user_id: str) -> str:
    return f"heartbeat.{user_id}"


def event_key(kind: str) -> str:
    """kind: accepted, rejected, completed or failed."""
    return f"event.{kind}"


# Queues ---------------------------------------------------------------------------------------------
INGEST_QUEUE = Queue("eat.ingest.submissions", ((INGEST.name, SUBMIT_KEY),))
AGGREGATOR_TASKS = Queue("eat.aggregator.tasks", ((TASKS.name, ACCEPTED_KEY),))
AGGREGATOR_EXECUTORS = Queue(
    "eat.aggregator.executors", ((EXECUTORS.name, "status.*"), (EXECUTORS.name, "heartbeat.*"))
)
AGGREGATOR_RESULTS = Queue("eat.aggregator.results", ((RESULTS.name, "result.#"),))
AGGREGATOR_QUALITY = Queue("eat.aggregator.quality", ((QUALITY.name, "quality.#"),))
EVALUATOR_RESULTS = Queue("eat.evaluator.results", ((RESULTS.name, "result.#"),))
CLIENT_EVENTS = Queue("eat.client.events", ((EVENTS.name, "event.*"),))
TRAINER_EXPERIENCE = Queue("eat.trainer.experience", ((LEARNING.name, EXPERIENCE_KEY),))
POLICY_UPDATES = Queue("eat.policy.updates", ((LEARNING.name, POLICY_UPDATED_KEY),))
OFFLOAD_REQUESTS = Queue("eat.offload.requests", ((HYBRID.name, PERSONAL_REQUEST_KEY),))
OFFLOAD_REPORTS = Queue("eat.offload.reports", ((HYBRID.name, "report.*"), (HYBRID.name, "heartbeat.*")))
DEAD_LETTERS = Queue(DEAD_LETTER_QUEUE, ((DLX.name, "#"),), dead_letter=False)
QUEUES: tuple[Queue, ...] = (
    INGEST_QUEUE,
    AGGREGATOR_TASKS,
    AGGREGATOR_EXECUTORS,
    AGGREGATOR_RESULTS,
    AGGREGATOR_QUALITY,
    EVALUATOR_RESULTS,
    CLIENT_EVENTS,
    TRAINER_EXPERIENCE,
    POLICY_UPDATES,
    OFFLOAD_REQUESTS,
    OFFLOAD_REPORTS,
    DEAD_LETTERS,
)


def executor_queue(executor_id: str) -> Queue:
    """The dispatch queue of one executor (declared by the executor itself)."""
    return Queue(f"eat.executor.{executor_id}", ((DISPATCH.name, dispatch_key(executor_id)),))


def edge_queue(server_id: str) -> Queue:
    """The batch queue of one edge server (declared by the edge worker and by the coordinator, so
    batches wait for a worker that is starting)."""
    return Queue(f"eat.edge.{server_id}", ((HYBRID.name, edge_key(server_id)),))


def device_queue(user_id: str) -> Queue:
    """The handoff queue of one user's device (declared by whoever sends to it first, so latents wait
    for a device that is starting)."""
    return Queue(f"eat.device.{user_id}", ((HYBRID.name, device_key(user_id)),))


def client_queue(name: str) -> Queue:
    """A client's own reply queue (events reach it through the default exchange by its name)."""
    return Queue(name, dead_letter=False)
