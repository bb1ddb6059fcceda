#!/usr/bin/env python3
"""Publish one close request to job-closer's close queue, the way the worker expects it.

    pip install pika
    AMQP_URL=amqp://user:pass@rabbitmq:5672/%2f CLOSE_QUEUE=linkedin.jobs.close \
        python3 publish_close_request.py JOB-150421

Exits 0 once the broker has confirmed the message, 1 when it did not take it.
"""
import json
import os
import sys
import uuid

import pika
import pika.exceptions

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
CLOSE_QUEUE = os.environ.get("CLOSE_QUEUE", "linkedin.jobs.close")


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
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except pika.exceptions.AMQPConnectionError as error:
        print(f"error: cannot connect to the broker: {error!r}", file=sys.stderr)
        return 1
    try:
        channel = connection.channel()
        # Publisher confirms: basic_publish returns only once the broker has taken the message
        # (for a persistent message, written it to disk), and raises when it did not.
        channel.confirm_delivery()
        channel.basic_publish(
            exchange="",  # the default exchange routes to the queue named by the routing key
            routing_key=CLOSE_QUEUE,
            body=body,
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,  # survives a broker restart
                message_id=str(uuid.uuid4()),
            ),
            # A queue that does not exist is an error here, not a silently dropped message.
            mandatory=True,
        )
    except pika.exceptions.UnroutableError:
        print(f"error: no queue {CLOSE_QUEUE!r} took the message; is job-closer's queue declared?", file=sys.stderr)
        return 1
    except pika.exceptions.NackError:
        print("error: the broker refused the message", file=sys.stderr)
        return 1
    finally:
        connection.close()
    print(f"Published the close request for {external_id} to {CLOSE_QUEUE!r}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
