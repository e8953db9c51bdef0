"""SQS in tests: a queue with its dead-letter queue, batched sends, the messages' counts."""

from __future__ import annotations

import json
from typing import Any

from servicekit import aws

__all__ = ["create_queue", "queue_counts", "send_messages"]

_BATCH = 10  # SendMessageBatch's limit


def create_queue(
    name: str, *, visibility: int = 30, max_receive: int | None = 3
) -> tuple[str, str]:
    """The URLs of queue ``name`` and of ``{name}-dlq``, where SQS moves a message after
    ``max_receive`` receives (None: no redrive policy, the DLQ is left unused)."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    attributes: dict[Any, str] = {"VisibilityTimeout": str(visibility)}
    if max_receive is not None:
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        policy = {
            "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
            "maxReceiveCount": max_receive,
        }
        attributes["RedrivePolicy"] = json.dumps(policy)
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"], dlq_url


def send_messages(queue_url: str, *bodies: str) -> None:
    """Send ``bodies`` in batches of ten."""
    sqs = aws.client("sqs")
    for start in range(0, len(bodies), _BATCH):
        chunk = bodies[start : start + _BATCH]
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(index), "MessageBody": body} for index, body in enumerate(chunk)],
        )


def queue_counts(queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )
