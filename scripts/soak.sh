#!/usr/bin/env bash
# The slow soak runs that `cargo test` skips (#[ignore]): the ten-minute combined-fault soak (every
# fault at once: random 500s, 429s and stalls, broker connections cut every few seconds, the worker
# SIGKILLed and restarted every ~15 s), draining a 100,000-message backlog while the peak RSS is
# watched, and the dlq commands on 100,000 dead letters. Needs RabbitMQ at AMQP_URL. SOAK_SEED
# repeats a soak's random choices (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo test --release --test it -- --ignored --nocapture --test-threads=1 faults:: dlq::
