"""``suite jobs dead``: the messages in the consumers' dead-letter queues, and their redrive.

Listing receives every message of the DLQ with a short visibility timeout (so each receive
returns new ones), then makes them visible again at once: nothing is lost or delayed. A message
says which job it was (``job_id`` in the body) and why it is dead: the consumer's poison reason
(a body that did not validate), else its retries ran out (``maxReceiveCount`` receives).

Redrive goes where the job's state is. A job (named by its id, or by a DLQ message that names
it) is put back by the scheduler's ``scheduler redrive-dead`` in a one-off task of its service
(:mod:`suite_tools.oneoff`: the database is only reachable from inside the VPC): it reconciles
the DLQ first (so a job whose message still waits there is ``dead``), then resets the chosen
dead jobs to ``queued`` with their attempts, and the outbox sends them a fresh message. Moving
the old message back instead would hand the worker a job whose attempts are spent. A message
that names no job (a poison body) has no state but itself: it is sent back to its source queue
(body and attributes, without the poison reason) and deleted from the DLQ; a send that fails
leaves it in the DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from servicekit import aws
from servicekit.consumer import POISON_REASON_ATTRIBUTE
from suite_contract.spec import QueueTrigger
from suite_tools.deployed import Deployed, call, instant
from suite_tools.errors import CommandError
from suite_tools.jobrun import scheduler_service
from suite_tools.oneoff import TaskRun, run_once

__all__ = ["DeadLetter", "Redriven", "dead_letters", "redrive"]

# Long enough to page through a DLQ of thousands; released at once when done.
LISTING_VISIBILITY = 60
MAX_ATTRIBUTES = ["All"]


@dataclass
class DeadLetter:
    queue: str
    message_id: str
    job_id: str | None
    reason: str
    sent: str | None
    receives: int
    body: str
    attributes: dict[str, Any]
    receipt: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "messageId": self.message_id,
            "jobId": self.job_id,
            "reason": self.reason,
            "sent": self.sent,
            "receives": self.receives,
        }


def _job_id(body: str) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return str(parsed["job_id"]) if isinstance(parsed, dict) and "job_id" in parsed else None


def _queues(deployed: Deployed) -> list[str]:
    queues = [
        spec.trigger.queue
        for spec in deployed.specs.values()
        if isinstance(spec.trigger, QueueTrigger)
    ]
    if not queues:
        raise CommandError('no service consumes a queue ([trigger] kind = "sqs")')
    return list(dict.fromkeys(queues))


def _url(name: str) -> str:
    return str(call("sqs", name, aws.client("sqs").get_queue_url, QueueName=name)["QueueUrl"])


def dead_letters(deployed: Deployed) -> dict[str, list[DeadLetter]]:
    """Every message of each consumed queue's DLQ, by queue (``{app}-{env}-{queue}``).

    The messages stay invisible until :func:`release` or :func:`redrive` is called.
    """
    sqs = aws.client("sqs")
    found: dict[str, list[DeadLetter]] = {}
    for queue in _queues(deployed):
        dlq = deployed.names.dead_letter_queue(queue)
        url = _url(dlq)
        letters: dict[str, DeadLetter] = {}
        while True:
            received = call(
                "sqs",
                dlq,
                sqs.receive_message,
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=LISTING_VISIBILITY,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=MAX_ATTRIBUTES,
                MessageAttributeNames=MAX_ATTRIBUTES,
            ).get("Messages", [])
            fresh = [item for item in received if item["MessageId"] not in letters]
            if not fresh:
                break
            for item in fresh:
                system = item.get("Attributes", {})
                attributes = dict(item.get("MessageAttributes", {}))
                poison = attributes.get(POISON_REASON_ATTRIBUTE, {}).get("StringValue")
                receives = int(system.get("ApproximateReceiveCount", 0))
                letters[item["MessageId"]] = DeadLetter(
                    queue=deployed.names.queue(queue),
                    message_id=item["MessageId"],
                    job_id=_job_id(item["Body"]),
                    reason=f"poison: {poison}" if poison else "retries exhausted",
                    sent=instant(int(system["SentTimestamp"]))
                    if "SentTimestamp" in system
                    else None,
                    receives=receives,
                    body=item["Body"],
                    attributes=attributes,
                    receipt=item["ReceiptHandle"],
                )
        found[dlq] = list(letters.values())
    return found


def release(deployed: Deployed, letters: dict[str, list[DeadLetter]]) -> None:
    """Make listed messages visible again at once."""
    sqs = aws.client("sqs")
    for dlq, items in letters.items():
        url = _url(dlq)
        for start in range(0, len(items), 10):
            call(
                "sqs",
                dlq,
                sqs.change_message_visibility_batch,
                QueueUrl=url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": item.receipt, "VisibilityTimeout": 0}
                    for index, item in enumerate(items[start : start + 10])
                ],
            )


@dataclass
class Redriven:
    """What :func:`redrive` did: messages moved back, jobs handed to ``redrive-dead``."""

    moved: list[DeadLetter] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    task: TaskRun | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "moved": [item.as_dict() for item in self.moved],
            "jobs": self.jobs,
            "task": self.task.as_dict() if self.task else None,
        }


def _is_job_id(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def redrive(
    deployed: Deployed,
    letters: dict[str, list[DeadLetter]],
    chosen: Sequence[str],
    *,
    write: Callable[[str], None] = lambda _line: None,
) -> Redriven:
    """Put back what ``chosen`` names (job ids, or message ids of the DLQs); the other messages
    are released. Ids that are neither are refused before anything moves."""
    by_message = {item.message_id: item for items in letters.values() for item in items}
    done = Redriven()
    orphans: set[str] = set()
    unknown: list[str] = []
    for key in dict.fromkeys(chosen):
        letter = by_message.get(key)
        if letter is not None and letter.job_id is None:
            orphans.add(letter.message_id)
        elif letter is not None and letter.job_id is not None:
            done.jobs.append(letter.job_id)
        elif _is_job_id(key):
            done.jobs.append(key)
        else:
            unknown.append(key)
    if unknown:
        release(deployed, letters)
        raise CommandError(f"neither a job id nor in a dead-letter queue: {', '.join(unknown)}")
    sqs = aws.client("sqs")
    rest: dict[str, list[DeadLetter]] = {}
    for dlq, items in letters.items():
        dlq_url = _url(dlq)
        for item in items:
            if item.message_id not in orphans:
                rest.setdefault(dlq, []).append(item)
                continue
            attributes = {
                name: {
                    key: value[key]
                    for key in ("DataType", "StringValue", "BinaryValue")
                    if key in value
                }
                for name, value in item.attributes.items()
                if name != POISON_REASON_ATTRIBUTE
            }
            options: dict[str, Any] = {"QueueUrl": _url(item.queue), "MessageBody": item.body}
            if attributes:
                options["MessageAttributes"] = attributes
            call("sqs", item.queue, sqs.send_message, **options)
            call("sqs", dlq, sqs.delete_message, QueueUrl=dlq_url, ReceiptHandle=item.receipt)
            done.moved.append(item)
    # Released before the task starts: its reconciliation reads them.
    release(deployed, rest)
    if done.jobs:
        service = scheduler_service(deployed)
        program = deployed.specs[service].command[0]
        command = [program, "redrive-dead", *(f"--id={job}" for job in done.jobs)]
        done.task = run_once(deployed, service, command, write=write)
    return done
