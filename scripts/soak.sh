#!/usr/bin/env bash
# The slow soak runs that `cargo test` skips (#[ignore]): draining a 100,000-message backlog while
# the peak RSS is watched, and the dlq commands on 100,000 dead letters. Needs RabbitMQ at AMQP_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
cargo test --release --test faults --test dlq -- --ignored --nocapture --test-threads=1
