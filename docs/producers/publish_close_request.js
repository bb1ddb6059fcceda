#!/usr/bin/env node
// Publish one close request to job-closer's close queue, the way the worker expects it.
//
//   npm install amqplib
//   AMQP_URL=amqp://user:pass@rabbitmq:5672/%2f CLOSE_QUEUE=linkedin.jobs.close \
//       node publish_close_request.js JOB-150421
//
// Exits 0 once the broker has confirmed the message, 1 when it did not take it.
'use strict';

const amqp = require('amqplib');
const { randomUUID } = require('node:crypto');

const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f';
const CLOSE_QUEUE = process.env.CLOSE_QUEUE || 'linkedin.jobs.close';

// One LinkedIn job element; see schema/close-request.schema.json for every rule.
function closeRequest(externalId) {
  return {
    companyApplyUrl: `https://jobs.example.com/apply/${encodeURIComponent(externalId)}`,
    externalJobPostingId: externalId,
    description: 'This position has been filled.',
    title: 'Senior Engineer',
    listedAt: 1700000000000,
    location: 'San Francisco, California',
  };
}

// A promise that rejects after `ms` (without keeping the process alive).
function timeout(ms, message) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), ms).unref());
}

async function main() {
  const externalId = process.argv[2] || 'JOB-1';
  const body = Buffer.from(JSON.stringify(closeRequest(externalId)), 'utf8');
  const connection = await amqp.connect(AMQP_URL);
  try {
    // A confirm channel: the broker acknowledges every message it has taken.
    const channel = await connection.createConfirmChannel();
    // With `mandatory`, a message no queue took comes back (before its confirm) instead of being
    // dropped.
    let returned = false;
    channel.on('return', () => {
      returned = true;
    });
    channel.publish('', CLOSE_QUEUE, body, {
      persistent: true, // delivery mode 2: survives a broker restart
      mandatory: true,
      contentType: 'application/json',
      messageId: randomUUID(),
    });
    // Rejects when the broker refused the message; a confirm that does not come is a failure too.
    const late = timeout(10_000, 'no confirm from the broker within 10 s');
    await Promise.race([channel.waitForConfirms(), late]);
    if (returned) {
      throw new Error(`no queue '${CLOSE_QUEUE}' took the message; is job-closer's queue declared?`);
    }
    console.log(`Published the close request for ${externalId} to '${CLOSE_QUEUE}'.`);
  } finally {
    await connection.close();
  }
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exitCode = 1;
});
