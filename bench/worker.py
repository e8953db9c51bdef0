"""SQS consumer throughput through moto: naive loop, ceiling, and the consumer runtime.

All in one run on one queue, rounds alternating, medians reported:

- naive: one thread; receive 10, handle each, DeleteMessage per message;
- ceiling: RECEIVERS threads that receive 10 and DeleteMessageBatch them, no handler: what the
  emulator allows at the consumer's receive concurrency;
- consumer (a) no-op handler, (b) a handler that waits 20 ms on I/O.

moto's ReceiveMessage slows in proportion to the backlog, so two producer threads keep it under
BACKLOG (sent minus finished, 30 by default: BENCH_BACKLOG) during every measurement, and the
backlog held is printed. At 50 every variant but the naive ones is bound by moto at about the
same rate; at 30 moto leaves more room and the consumer's own cost shows. moto runs in its own
process (its own GIL), as a real SQS endpoint would be remote. ``--rounds`` and ``--seconds``
(or BENCH_ROUNDS and BENCH_SECONDS) shorten a run.

``--sweep 1,2,4,8,16,32`` then runs the consumer with the 20 ms handler at each of those handler
concurrencies (same queue, same held backlog): throughput against concurrency. ``--json PATH``
also writes every figure for ``bench/report.py``.

Targets: (b) >= 5x naive (20 ms) and >= 0.8 ceiling; (a) >= 0.8 ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from servicekit import aws
from servicekit.consumer import Consumer, Delivery
from servicekit.metrics import Metrics
from servicekit.testing.moto import fake_aws_environment, free_port
from servicekit.testing.polling import answers_ok, wait_until

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
WARMUP = 1.0
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "30"))
RECEIVERS = 2
CONCURRENCY = 32
IO_WAIT = 0.020
PRODUCERS = 2


class Job(BaseModel):
    n: int


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self.lock:
            self.value += n


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_ok(f"{url}/moto-api/"), 30, "moto_server to answer")
    except AssertionError:
        process.kill()
        raise
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def make_queue() -> str:
    sqs = aws.client("sqs")
    dlq = sqs.create_queue(QueueName="bench-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    policy = f'{{"deadLetterTargetArn": "{arn["QueueArn"]}", "maxReceiveCount": "5"}}'
    return sqs.create_queue(
        QueueName="bench", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": policy}
    )["QueueUrl"]


def visible(url: str) -> int:
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def receive(url: str, wait: int) -> list[MessageTypeDef]:
    answer = aws.client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
    )
    return list(answer.get("Messages", []))


def delete_batch(url: str, messages: list[MessageTypeDef]) -> None:
    aws.client("sqs").delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ],
    )


class Producer:
    """Keeps sent-minus-finished under BACKLOG; samples the visible backlog twice a second."""

    def __init__(self, url: str, finished: Callable[[], int]) -> None:
        self.url = url
        self.finished = finished
        self.sent = Counter()
        self.samples: list[int] = []
        self.outstanding: list[int] = []
        self.stop = threading.Event()
        # Two senders: one alone cannot keep ahead of the consumer (it was the bottleneck).
        self.threads = [threading.Thread(target=self._produce) for _ in range(PRODUCERS)]
        self.threads.append(threading.Thread(target=self._sample))

    def __enter__(self) -> Producer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _produce(self) -> None:
        sqs = aws.client("sqs")
        entries: Any = [{"Id": str(i), "MessageBody": f'{{"n": {i}}}'} for i in range(10)]
        while not self.stop.is_set():
            with self.sent.lock:
                room = self.sent.value - self.finished() <= BACKLOG - 10
                if room:
                    self.sent.value += 10
            if not room:
                self.stop.wait(0.002)
                continue
            sqs.send_message_batch(QueueUrl=self.url, Entries=entries)

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append(visible(self.url))
            self.outstanding.append(self.sent.value - self.finished())


# A variant starts its threads on the queue and returns a function that joins them once the
# stop event is set; it counts each finished message.
Variant = Callable[[str, threading.Event, Counter], Callable[[], None]]


def measure(url: str, variant: Variant, seconds: float) -> tuple[float, Producer]:
    done = Counter()
    stop = threading.Event()
    with Producer(url, lambda: done.value) as producer:
        finish = variant(url, stop, done)
        time.sleep(WARMUP)
        start_count, started = done.value, time.perf_counter()
        time.sleep(seconds)
        rate = (done.value - start_count) / (time.perf_counter() - started)
        stop.set()
        finish()
    # What a variant leaves behind must not slow the next one down.
    while messages := receive(url, 0):
        delete_batch(url, messages)
    return rate, producer


def threads(target: Callable[[], None], count: int) -> Callable[[], None]:
    started = [threading.Thread(target=target) for _ in range(count)]
    for thread in started:
        thread.start()

    def join() -> None:
        for thread in started:
            thread.join()

    return join


def naive(handle: Callable[[], None]) -> Variant:
    def variant(url: str, stop: threading.Event, done: Counter) -> Callable[[], None]:
        sqs = aws.client("sqs")

        def loop() -> None:
            while not stop.is_set():
                for message in receive(url, 1):
                    Job.model_validate_json(message["Body"])
                    handle()
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    done.add()

        return threads(loop, 1)

    return variant


def ceiling(url: str, stop: threading.Event, done: Counter) -> Callable[[], None]:
    def loop() -> None:
        while not stop.is_set():
            messages = receive(url, 1)
            if messages:
                delete_batch(url, messages)
                done.add(len(messages))

    return threads(loop, RECEIVERS)


def consumer(handle: Callable[[], None], concurrency: int = CONCURRENCY) -> Variant:
    def variant(url: str, stop: threading.Event, done: Counter) -> Callable[[], None]:
        def handler(delivery: Delivery[Job]) -> None:
            handle()
            done.add()

        runtime = Consumer(
            url,
            Job,
            handler,
            concurrency=concurrency,
            receivers=RECEIVERS,
            wait_time_seconds=1,
            metrics=Metrics("Bench", {"Service": "bench"}),
        )
        return threads(lambda: runtime.run(stop), 1)

    return variant


def io_wait() -> None:
    time.sleep(IO_WAIT)  # stands for a 20 ms database or HTTP round trip: the GIL is released


def noop() -> None:
    pass


NAIVE_NOOP, NAIVE_IO = "naive, no-op handler", "naive, 20 ms handler"
CEILING = f"ceiling ({RECEIVERS} receivers, batch delete)"
A, B = "(a) consumer, no-op handler", "(b) consumer, 20 ms handler"
VARIANTS: dict[str, Variant] = {
    NAIVE_NOOP: naive(noop),
    NAIVE_IO: naive(io_wait),
    CEILING: ceiling,
    A: consumer(noop),
    B: consumer(io_wait),
}
# Stable names for the JSON output.
KEYS = {
    NAIVE_NOOP: "naive_noop",
    NAIVE_IO: "naive_io",
    CEILING: "ceiling",
    A: "consumer_noop",
    B: "consumer_io",
}


class Results:
    """msg/s per round, and the backlog samples of every round, by variant name."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.rates: dict[str, list[float]] = {}
        self.backlog: dict[str, list[int]] = {}
        self.outstanding: dict[str, list[int]] = {}

    def run(self, url: str, name: str, variant: Variant, label: str) -> None:
        # The EMF lines the consumer writes count in its cost, but not on the screen.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            rate, producer = measure(url, variant, self.seconds)
        self.rates.setdefault(name, []).append(rate)
        self.backlog.setdefault(name, []).extend(producer.samples)
        self.outstanding.setdefault(name, []).extend(producer.outstanding)
        print(f"  {label}: {name:<38} {rate:7.0f} msg/s", flush=True)

    def figures(self, name: str) -> dict[str, Any]:
        rates = self.rates[name]
        return {
            "rates": rates,
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "backlog_visible_median": statistics.median(self.backlog[name] or [0]),
            "backlog_visible_max": max(self.backlog[name], default=0),
            "outstanding_max": max(self.outstanding[name], default=0),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured per variant")
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(level) for level in text.split(",") if level],
        default=[],
        help="handler concurrencies for the 20 ms consumer, e.g. 1,2,4,8,16,32",
    )
    parser.add_argument("--sweep-rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    # moto 5.2 rebuilds a queue's message list on delete without the lock its sends take, so a
    # send racing a delete can lose a message now and then; the consumer then logs the refused
    # delete entry (ReceiptHandleIsInvalid) as a warning. Keep the figures readable.
    logging.basicConfig(level=logging.ERROR)
    results, sweep = Results(args.seconds), Results(args.seconds)
    with moto_process() as endpoint:
        os.environ.update(fake_aws_environment(endpoint))
        aws.reset_clients()
        url = make_queue()
        print(
            f"moto in its own process; {args.rounds} rounds x {args.seconds:g} s per variant; "
            f"consumer: {RECEIVERS} receivers, {CONCURRENCY} handler threads",
            flush=True,
        )
        for round_ in range(args.rounds):
            for name, variant in VARIANTS.items():
                results.run(url, name, variant, f"round {round_ + 1}")
        for round_ in range(args.sweep_rounds if args.sweep else 0):
            for level in args.sweep:
                name = f"(b) consumer, 20 ms handler, {level:>2} threads"
                sweep.run(url, name, consumer(io_wait, level), f"sweep {round_ + 1}")

    figures = {name: results.figures(name) for name in results.rates}
    median = {name: figure["median"] for name, figure in figures.items()}
    print(f"\n{'variant (median)':<40} {'msg/s':>7}   backlog: visible median/max, outstanding max")
    for name, figure in figures.items():
        print(
            f"{name:<40} {figure['median']:7.0f}   {figure['backlog_visible_median']:4.0f} /"
            f" {figure['backlog_visible_max']:3d}, {figure['outstanding_max']:3d}"
        )
    print()
    print(f"(b) / naive (20 ms)   {median[B] / median[NAIVE_IO]:5.1f}x   (target >= 5x)")
    print(f"(b) / ceiling         {median[B] / median[CEILING]:5.2f}    (target >= 0.8)")
    print(f"(a) / ceiling         {median[A] / median[CEILING]:5.2f}    (target >= 0.8)")
    print(f"(a) / naive (no-op)   {median[A] / median[NAIVE_NOOP]:5.1f}x")
    if args.sweep:
        print(f"\nconsumer, 20 ms handler, by handler threads ({args.sweep_rounds} rounds, median)")
        for name, values in sweep.rates.items():
            print(f"{name:<46} {statistics.median(values):7.0f} msg/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "backlog_limit": BACKLOG,
            "receivers": RECEIVERS,
            "concurrency": CONCURRENCY,
            "handler_io_ms": IO_WAIT * 1000,
            "variants": {KEYS[name]: figure | {"label": name} for name, figure in figures.items()},
            "sweep": [
                {"concurrency": level, **sweep.figures(name)}
                for level, name in zip(args.sweep, sweep.rates, strict=True)
            ],
        }
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
