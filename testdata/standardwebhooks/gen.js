#!/usr/bin/env node
// Generates fixtures.json: Standard Webhooks signatures made by the reference
// npm package standardwebhooks (see package.json for the version), for
// deliveries shaped like the ones the worker forwards. The Go tests in
// ../../internal/webhook check that our signer produces exactly these
// signatures and that our verifier accepts them; CI never runs this script.
// Regenerate with: npm ci && npm run gen
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Webhook } = require('standardwebhooks');

// Deterministic keys, so the fixtures do not change on regeneration.
function key(n, seed) {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (seed * 31 + i * 7) & 0xff;
  return 'whsec_' + out.toString('base64');
}

const secrets = [key(24, 1), key(32, 2), key(64, 3)];
const bodies = [
  '{"type":"tenant.installed","timestamp":"2026-12-01T10:00:00Z","data":{"sequence":1,"tenant":{"clientKey":"jira:abc"}}}',
  '{"type":"migration.upload_ready","timestamp":"2026-12-01T10:00:01Z","data":{"s3Key":"k/ü 1","label":"final"}}',
  '{}',
  '',
  'caf\u00e9 \u2713 \ud83d\ude80 "quoted" \\ back\nslash',
  'x'.repeat(5000),
];
const ids = ['evt_1', 'evt_9223372036854775807', 'upl_0123456789abcdef0123456789abcdef', 'msg with spaces.and.dots'];
const timestamps = [1764583200, 1, 4102444800];

const cases = [];
let n = 0;
for (const secret of secrets) {
  for (const body of bodies) {
    const id = ids[n % ids.length];
    const ts = timestamps[n % timestamps.length];
    n++;
    const wh = new Webhook(secret);
    const signature = wh.sign(id, new Date(ts * 1000), body);
    cases.push({ secret, id, timestamp: ts, body, signature });
  }
}

// The library's own verify at the current time, to show the fixtures'
// shape is what it verifies (a signature it rejects would be no fixture).
{
  const wh = new Webhook(secrets[1]);
  const now = new Date();
  const id = 'evt_self_check';
  const sig = wh.sign(id, now, bodies[0]);
  wh.verify(bodies[0], {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
    'webhook-signature': sig,
  });
  let refused = false;
  try {
    wh.verify(bodies[0] + ' ', {
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
      'webhook-signature': sig,
    });
  } catch (e) {
    refused = true;
  }
  if (!refused) throw new Error('standardwebhooks accepted a tampered body');
}

const pkg = require('standardwebhooks/package.json');
fs.writeFileSync(
  path.join(__dirname, 'fixtures.json'),
  JSON.stringify({ generator: 'standardwebhooks@' + pkg.version, cases }, null, 1) + '\n',
);
console.log('wrote', cases.length, 'cases with standardwebhooks@' + pkg.version);
