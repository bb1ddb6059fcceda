#!/usr/bin/env python3
"""Publish one close request with a reply_to queue, and wait for how it ended.

    pip install pika
    AMQP_URL=amqp://user:pass@rabbitmq:5672/%2f CLOSE_QUEUE=linkedin.jobs.close \
        python3 close_and_wait.py JOB-150421

Prints the outcome message's body (closed, already-closed or dead-lettered) and exits 0 when the
job is closed, 3 when the request was dead-lettered, 4 when no outcome came within TIMEOUT_SECONDS
(default 600: with task checks on, a close is told only once LinkedIn's task succeeded), 1 when
the broker did not take the request.
"""
import json
import os
import sys
import uuid

import pika
import pika.exceptions

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
CLOSE_QUEUE = os.environ.get("CLOSE_QUEUE", "linkedin.jobs.close")
TIMEOUT_SECONDS = float(os.environ.get("TIMEOUT_SECONDS", "600"))


def close_request(external_id):
    """One LinkedIn job element; see schema/close-request.schema.json for every rule."""
    return {
        "companyApplyUrl": f"https://jobs.example.com/apply/{external_id}",
        "externalJobPostingId": external_id,
        "description": "This position has been filled.",
        "title": "Senior Engineer",
        "listedAt": 1700000000000,
        "location": "San Francisco, California",
    }


def main():
    external_id = sys.argv[1] if len(sys.argv) > 1 else "JOB-1"
    body = json.dumps(close_request(external_id)).encode("utf-8")
    request_id = str(uuid.uuid4())
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as error:
        print(f"error: cannot connect to the broker: {error!r}", file=sys.stderr)
        return 1
    try:
        channel = connection.channel()
        # A reply queue of our own: the broker names it, and deletes it when we disconnect.
        replies = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        channel.confirm_delivery()
        channel.basic_publish(
            exchange="",
            routing_key=CLOSE_QUEUE,
            body=body,
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=request_id,
                correlation_id=request_id,  # copied onto the outcome
                reply_to=replies,  # where the outcome goes
            ),
            mandatory=True,
        )
        print(f"Published the close request for {external_id}; waiting for its outcome.", file=sys.stderr)
        for method, properties, outcome_body in channel.consume(
            replies, auto_ack=True, inactivity_timeout=TIMEOUT_SECONDS
        ):
            if method is None:
                print(f"error: no outcome within {TIMEOUT_SECONDS:g} s", file=sys.stderr)
                return 4
            if properties.correlation_id != request_id:
                continue  # not ours
            outcome = json.loads(outcome_body)
            print(json.dumps(outcome))
            return 3 if outcome["outcome"] == "dead-lettered" else 0
    except pika.exceptions.UnroutableError:
        print(f"error: no queue {CLOSE_QUEUE!r} took the message; is job-closer's queue declared?", file=sys.stderr)
        return 1
    except pika.exceptions.NackError:
        print("error: the broker refused the message", file=sys.stderr)
        return 1
    finally:
        connection.close()
    return 4


if __name__ == "__main__":
    sys.exit(main())
