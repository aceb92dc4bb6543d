#!/usr/bin/env node
// A vendor backend in Node behind connectrelay. It shows the three things a
// backend in any language does with the service:
//
//  1. POST /atlassian/events receives every forwarded event, signed per the
//     Standard Webhooks specification, and verifies it with the
//     `standardwebhooks` package before trusting it. webhook-id is the
//     idempotency key (a delivery can repeat); data.sequence orders a tenant's
//     events. A migration upload is answered 202, streamed from the internal
//     API and its result reported there.
//  2. GET /panel is a page Jira loads in an iframe with a JWT in the query; the
//     backend asks POST /v1/verify whether the token is good.
//  3. GET /demo/myself?clientKey=... calls the tenant's Jira as the app: POST
//     /v1/sign returns the Authorization header (the shared secret never
//     leaves connectrelay).
//
// Configuration (environment): PORT (default 3000), FORWARD_SECRET (the same
// whsec_ value connectrelay signs with), INTERNAL_URL (connectrelay's internal
// listener, default http://127.0.0.1:8081), INTERNAL_TOKEN, APP_BASE_URL (the
// public base URL Jira calls this backend at, for /v1/verify).
'use strict';

const express = require('express');
const { Webhook } = require('standardwebhooks');

const port = Number(process.env.PORT || 3000);
const internalURL = (process.env.INTERNAL_URL || 'http://127.0.0.1:8081').replace(/\/$/, '');
const internalToken = process.env.INTERNAL_TOKEN;
const appBaseURL = (process.env.APP_BASE_URL || `http://127.0.0.1:${port}`).replace(/\/$/, '');
if (!process.env.FORWARD_SECRET || !internalToken) {
  console.error('FORWARD_SECRET and INTERNAL_TOKEN are required');
  process.exit(2);
}
const webhook = new Webhook(process.env.FORWARD_SECRET);

// What this example "stores": a real backend uses its database.
const seen = new Set(); // webhook-ids handled
const lastSequence = new Map(); // clientKey -> highest sequence applied
const tenants = new Map(); // clientKey -> public tenant fields

// log prints one JSON line per thing the backend did (the repository's test
// reads them).
function log(what, fields) {
  console.log(JSON.stringify({ what, ...fields }));
}

// internal calls connectrelay's internal API.
async function internal(method, path, body) {
  const res = await fetch(internalURL + path, {
    method,
    headers: { authorization: `Bearer ${internalToken}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  return res;
}

const app = express();

// The raw body is what was signed: verify before parsing.
app.post('/atlassian/events', express.raw({ type: '*/*', limit: '1mb' }), (req, res) => {
  const payload = req.body.toString('utf8');
  let event;
  try {
    event = webhook.verify(payload, req.headers);
  } catch (err) {
    log('refused', { reason: err.message });
    return res.status(401).json({ message: 'bad signature' });
  }
  const id = req.headers['webhook-id'];
  if (seen.has(id)) {
    return res.status(204).end(); // a repeat: already handled
  }
  const { type, data } = event;
  const clientKey = data.tenant && data.tenant.clientKey;

  if (type === 'migration.upload_ready') {
    // Answer at once, import in the background, report the result.
    seen.add(id);
    res.status(202).end();
    importUpload(data).catch((err) => log('import-error', { s3Key: data.s3Key, error: err.message }));
    return;
  }
  if (data.sequence !== undefined && clientKey) {
    if (data.sequence <= (lastSequence.get(clientKey) || 0)) {
      seen.add(id);
      log('stale', { id, type, clientKey });
      return res.status(204).end();
    }
    lastSequence.set(clientKey, data.sequence);
  }
  if (type.startsWith('tenant.')) {
    tenants.set(clientKey, data.tenant);
  }
  seen.add(id);
  log('event', { id, type, clientKey, sequence: data.sequence, changes: data.changes });
  res.status(204).end();
});

// importUpload streams an upload from the internal API and reports it imported.
async function importUpload(data) {
  const res = await fetch(data.dataUrl, {
    headers: { authorization: `Bearer ${internalToken}` },
    signal: AbortSignal.timeout(10 * 60 * 1000),
  });
  if (!res.ok) {
    throw new Error(`GET dataUrl: ${res.status}`);
  }
  let bytes = 0;
  for await (const chunk of res.body) {
    bytes += chunk.length; // a real backend writes the rows here
  }
  const result = await fetch(data.resultUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${internalToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ status: 'imported', message: `${bytes} bytes imported` }),
  });
  log('imported', { transferId: data.transfer.transferId, s3Key: data.s3Key, bytes, result: result.status });
}

// A page Jira loads in an iframe: the JWT is in the query.
app.get('/panel', async (req, res) => {
  const verdict = await internal('POST', '/v1/verify', {
    method: 'GET',
    url: appBaseURL + req.originalUrl,
    authorization: `JWT ${req.query.jwt || ''}`,
  });
  const body = await verdict.json();
  if (verdict.status !== 200) {
    log('page-refused', { status: verdict.status, reason: body.reason });
    return res.status(401).send('Unauthorized');
  }
  log('page', { clientKey: body.tenant.clientKey });
  res.type('html').send(`<p>Hello, ${body.tenant.baseUrl}</p>`);
});

// Calls the tenant's Jira as the app.
app.get('/demo/myself', async (req, res) => {
  const signed = await internal('POST', '/v1/sign', {
    clientKey: req.query.clientKey,
    method: 'GET',
    url: '/rest/api/3/myself',
  });
  if (signed.status !== 200) {
    return res.status(signed.status).json(await signed.json());
  }
  const { authorization, url } = await signed.json();
  const jira = await fetch(url, { headers: { authorization, accept: 'application/json' } });
  log('jira', { clientKey: req.query.clientKey, status: jira.status });
  res.status(jira.status).type('json').send(await jira.text());
});

const server = app.listen(port, '127.0.0.1', () => log('listening', { port: server.address().port }));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
