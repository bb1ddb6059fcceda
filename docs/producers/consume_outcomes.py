#!/usr/bin/env python3
"""Follow every outcome on job-closer's outcome exchange (OUTCOME_EXCHANGE), from a queue of your own.

    pip install pika
    AMQP_URL=amqp://user:pass@rabbitmq:5672/%2f OUTCOME_EXCHANGE=linkedin.jobs.outcomes \
        OUTCOME_QUEUE=ats.job-outcomes python3 consume_outcomes.py [BINDING_KEY ...]

BINDING_KEY is '#' (every outcome) unless given: 'closed', 'already-closed', 'dead-lettered'.
Prints one line per outcome and acknowledges it once handled; with OUTCOME_COUNT=N, exits after N.
"""
import json
import os
import sys

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
OUTCOME_EXCHANGE = os.environ.get("OUTCOME_EXCHANGE", "linkedin.jobs.outcomes")
OUTCOME_QUEUE = os.environ.get("OUTCOME_QUEUE", "ats.job-outcomes")
OUTCOME_COUNT = int(os.environ.get("OUTCOME_COUNT", "0"))


def handle(outcome):
    """Your system's part: mark the job closed (with its LinkedIn URN) or show the failure."""
    detail = outcome.get("jobPosting") or outcome.get("message") or ""
    print(f"{outcome['externalJobPostingId']}  {outcome['outcome']}  {detail}", flush=True)


def main():
    binding_keys = sys.argv[1:] or ["#"]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    # As job-closer declares it (durable, topic): declaring it again changes nothing, and lets this
    # consumer start first.
    channel.exchange_declare(exchange=OUTCOME_EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(queue=OUTCOME_QUEUE, durable=True)
    for key in binding_keys:
        channel.queue_bind(queue=OUTCOME_QUEUE, exchange=OUTCOME_EXCHANGE, routing_key=key)
    channel.basic_qos(prefetch_count=100)
    # A repeated outcome (a worker crashed after publishing it) carries the same message_id: keep
    # the ids you handled (in your database, with the job) and drop repeats.
    seen = set()
    handled = 0
    for method, properties, body in channel.consume(OUTCOME_QUEUE):
        if properties.message_id not in seen:
            seen.add(properties.message_id)
            handle(json.loads(body))
            handled += 1
        channel.basic_ack(method.delivery_tag)
        if OUTCOME_COUNT and handled >= OUTCOME_COUNT:
            break
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
