#!/usr/bin/env node
// Generates fixtures.json: tokens and canonical requests made by the
// reference Node library atlassian-jwt@2.0.3, and atlassian-jwt's verdict on
// the outbound tokens our Go code made (ours.json). The Go tests in
// ../../connect read fixtures.json; CI never runs this script.
// See README.md for how to regenerate.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const ajwt = require('atlassian-jwt');

const IAT = 1750000000; // fixed, so HS256 tokens are reproducible
const EXP = IAT + 180;

// ---------------------------------------------------------------------------
// (a) HS256 product->app tokens, as a product (or ACE) would sign them.
const SECRET = 'fixture-tenant-shared-secret-0123456789';
const CLIENT_KEY = 'jira:fixture-client-key';
const APP = 'https://app.fixture.example';

const hs256Requests = [
  {
    name: 'GET iframe page with tricky query, token in jwt param',
    method: 'GET',
    url: APP + '/page?xdm_e=https%3A%2F%2Ffixture.atlassian.net&cp=&lic=active&cv=1001.0.0-SNAPSHOT' +
      '&tz=Europe%2FBerlin&loc=en-US&user_id=a+b&ids=3&ids=1&ids=20&q=caf%C3%A9+%E2%9C%93&star=a*b&tilde=~x&sub=!\'()',
    appBaseUrl: APP,
    tokenIn: 'query',
  },
  { name: 'POST /installed (shared-secret style)', method: 'POST', url: APP + '/installed', appBaseUrl: APP, tokenIn: 'header' },
  { name: 'POST /enabled', method: 'POST', url: APP + '/enabled', appBaseUrl: APP, tokenIn: 'header' },
  { name: 'POST /migration/events', method: 'POST', url: APP + '/migration/events', appBaseUrl: APP, tokenIn: 'header' },
  {
    name: 'POST /enabled under an app base URL with a path',
    method: 'POST',
    url: 'https://vendor.fixture.example/connect/enabled',
    appBaseUrl: 'https://vendor.fixture.example/connect',
    tokenIn: 'header',
  },
  { name: 'GET browser endpoint with a context token', method: 'GET', url: APP + '/api/data?x=1', appBaseUrl: APP, tokenIn: 'header', context: true },
];

const hs256 = hs256Requests.map((r) => {
  const req = ajwt.fromMethodAndUrl(r.method, r.url);
  const canonical = ajwt.createCanonicalRequest(req, false, r.appBaseUrl);
  const qsh = r.context ? 'context-qsh' : ajwt.createQueryStringHash(req, false, r.appBaseUrl);
  const claims = { iss: CLIENT_KEY, sub: '557058:fixture-user', iat: IAT, exp: EXP, qsh, context: { license: { active: true } } };
  const token = ajwt.encodeSymmetric(claims, SECRET, ajwt.SymmetricAlgorithm.HS256);
  const requestUrl = r.tokenIn === 'query' ? r.url + '&jwt=' + token : r.url;
  return { ...r, clientKey: CLIENT_KEY, secret: SECRET, iat: IAT, exp: EXP, canonical, qsh, token, requestUrl };
});

// App->product tokens the way atlassian-connect-express signs them
// (iss = app key, qsh relative to the product base URL).
const APP_KEY = 'com.vendor.connectrelay-fixture';
const outboundRequests = [
  { name: 'Jira GET myself', method: 'GET', url: 'https://fixture.atlassian.net/rest/api/3/myself', productBaseUrl: 'https://fixture.atlassian.net' },
  {
    name: 'Confluence GET content under /wiki',
    method: 'GET',
    url: 'https://fixture.atlassian.net/wiki/rest/api/content?spaceKey=DS&expand=body.storage,version&title=Hello+World',
    productBaseUrl: 'https://fixture.atlassian.net/wiki',
  },
  {
    name: 'POST migration progress',
    method: 'POST',
    url: 'https://fixture.atlassian.net/rest/atlassian-connect/1/migration/progress/2e170ff3-6aa6-4969-a08a-e60119ef2db3',
    productBaseUrl: 'https://fixture.atlassian.net',
  },
];
const outbound = outboundRequests.map((r) => {
  const req = ajwt.fromMethodAndUrl(r.method, r.url);
  const qsh = ajwt.createQueryStringHash(req, false, r.productBaseUrl);
  // Key order of atlassian-connect-express: iss, iat, exp, qsh.
  const token = ajwt.encodeSymmetric({ iss: APP_KEY, iat: IAT, exp: EXP, qsh }, SECRET, ajwt.SymmetricAlgorithm.HS256);
  return { ...r, appKey: APP_KEY, secret: SECRET, iat: IAT, exp: EXP, canonical: ajwt.createCanonicalRequest(req, false, r.productBaseUrl), qsh, token };
});

// ---------------------------------------------------------------------------
// (b) RS256 signed installs with a fresh key pair (the private key is not kept).
const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' });
const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' });
const KID = 'fixture/' + crypto.randomUUID();
const PRODUCT = 'https://fixture.atlassian.net';

const installRequests = [
  { name: 'POST /installed', url: APP + '/installed', appBaseUrl: APP, aud: APP },
  { name: 'POST /uninstalled', url: APP + '/uninstalled', appBaseUrl: APP, aud: APP },
  {
    name: 'POST /installed under an app base URL with a path, aud with trailing slash',
    url: 'https://vendor.fixture.example/connect/installed',
    appBaseUrl: 'https://vendor.fixture.example/connect',
    aud: 'https://vendor.fixture.example/connect/',
  },
];
const rs256 = installRequests.map((r) => {
  const req = ajwt.fromMethodAndUrl('POST', r.url);
  const qsh = ajwt.createQueryStringHash(req, false, r.appBaseUrl);
  const claims = { iss: CLIENT_KEY, sub: '557058:fixture-admin', aud: r.aud, iat: IAT, exp: EXP, qsh, context: {} };
  const token = ajwt.encodeAsymmetric(claims, privateKeyPem, ajwt.AsymmetricAlgorithm.RS256, { kid: KID });
  // Sanity: atlassian-jwt itself accepts what it made.
  ajwt.decodeAsymmetric(token, publicKeyPem, ajwt.AsymmetricAlgorithm.RS256);
  return { ...r, method: 'POST', clientKey: CLIENT_KEY, productBaseUrl: PRODUCT, iat: IAT, exp: EXP, qsh, token };
});

// ---------------------------------------------------------------------------
// Canonical requests for many tricky URLs, for a differential test of our
// canonicaliser. Deterministic PRNG so regenerating gives the same list.
let seed = 0x5eed1234;
function rand(n) {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) % n;
}
const pathPieces = ['a', 'B', '0', '-', '.', '_', '~', '!', '$', '&', '(', ')', '*', '+', ',', ';', '=', ':', '@', '%2F', '%26', '%41', '/', '//'];
const queryPieces = ['a', 'Z', '9', '-', '.', '_', '~', '!', '*', "'", '(', ')', ';', ':', '@', '$', ',', '/', '?', '[', ']',
  '+', '%20', '%2B', '%25', '%zz', '%', '%2', '%E2%82', '%FF', '%C3%A9', '%E2%9C%93', '%F0%9F%98%80', '%EF%BC%81', '%ED%A0%80',
  '%C0%80', '=', '%3D', '%26', 'jwt', 'j%77t', ' ', '"', '<', '{', '|', '^', '`'];
const names = ['a', 'b', 'A', 'a1', 'a10', 'jwt', '', '%3A1', 'x%20y', 'z+z', '%F0%9F%98%80', '%EF%BC%81', 'lic', 'cp', 'xdm_e'];
function pick(arr, n) {
  let s = '';
  for (let i = 0; i < n; i++) s += arr[rand(arr.length)];
  return s;
}
const bases = ['https://example.com', 'https://example.com/', 'https://example.com/addon', 'https://example.com/a&b'];
const canonicalCases = [];
const fixed = [
  ['GET', 'https://example.com/p?a=1&a=1&b=&b', 'https://example.com'],
  ['get', 'https://example.com', 'https://example.com'],
  ['POST', 'https://example.com/addon', 'https://example.com/addon'],
  ['POST', 'https://example.com/addonX/installed', 'https://example.com/addon'],
  ['DELETE', 'https://example.com/a&b/c/', 'https://example.com/a&b'],
  ['GET', 'https://example.com/p?=&=x&&&a', 'https://example.com'],
  ['GET', 'https://example.com/p?a=%E2%82A&b=%F0%9F&c=%F4%90%80%80', 'https://example.com'],
];
for (const [method, url, baseUrl] of fixed) canonicalCases.push({ method, url, baseUrl });
for (let i = 0; i < 400; i++) {
  const method = ['GET', 'POST', 'put', 'Delete'][rand(4)];
  let url = 'https://example.com/' + pick(pathPieces, rand(6));
  const nParams = rand(6);
  const params = [];
  for (let j = 0; j < nParams; j++) {
    const name = rand(3) === 0 ? pick(queryPieces, 1 + rand(3)) : names[rand(names.length)];
    const value = pick(queryPieces, rand(5));
    params.push(rand(8) === 0 ? name : name + '=' + value);
  }
  if (nParams > 0 || rand(4) === 0) url += '?' + params.join('&');
  // Node's legacy url.parse treats '#' as a fragment and trims trailing
  // whitespace (a request line cannot end in a raw space anyway), and
  // "__proto__" is a documented difference (README.md): leave these out.
  if (url.includes('#') || url.includes('__proto__') || url !== url.trim()) continue;
  canonicalCases.push({ method, url, baseUrl: bases[rand(bases.length)] });
}
const canonical = canonicalCases.map((c) => {
  const req = ajwt.fromMethodAndUrl(c.method, c.url);
  return { ...c, canonical: ajwt.createCanonicalRequest(req, false, c.baseUrl) };
});

// ---------------------------------------------------------------------------
// (c) atlassian-jwt's verdict on the outbound tokens our Go code produced.
const oursPath = path.join(__dirname, 'ours.json');
const ours = JSON.parse(fs.readFileSync(oursPath, 'utf8'));
const oursVerdicts = ours.tokens.map((o) => {
  const verdict = { signatureValid: false, error: null, qshValid: false, lifetimeSeconds: null, identicalToAtlassianJWT: false };
  const req = ajwt.fromMethodAndUrl(o.method, o.url);
  verdict.canonical = ajwt.createCanonicalRequest(req, false, o.productBaseUrl);
  verdict.qsh = ajwt.createQueryStringHash(req, false, o.productBaseUrl);
  try {
    const payload = ajwt.decodeSymmetric(o.token, o.secret, ajwt.SymmetricAlgorithm.HS256);
    verdict.signatureValid = true;
    verdict.qshValid = payload.qsh === verdict.qsh;
    verdict.lifetimeSeconds = payload.exp - payload.iat;
    verdict.payload = payload;
    const theirs = ajwt.encodeSymmetric({ iss: payload.iss, iat: payload.iat, exp: payload.exp, qsh: verdict.qsh }, o.secret, ajwt.SymmetricAlgorithm.HS256);
    verdict.identicalToAtlassianJWT = theirs === o.token;
  } catch (e) {
    verdict.error = String(e.message || e).slice(0, 200);
  }
  return { ...o, verdict };
});

const fixtures = {
  generator: 'atlassian-jwt@' + ajwt.version + ' on node ' + process.version + ' (testdata/atlassian-jwt/gen.js)',
  hs256,
  outbound,
  rs256: { kid: KID, publicKeyPem, cases: rs256 },
  canonical,
  ours: oursVerdicts,
};
fs.writeFileSync(path.join(__dirname, 'fixtures.json'), JSON.stringify(fixtures, null, 2) + '\n');
console.log(`wrote fixtures.json: ${hs256.length} hs256, ${outbound.length} outbound, ${rs256.length} rs256, ` +
  `${canonical.length} canonical, ${oursVerdicts.length} verdicts on our tokens ` +
  `(${oursVerdicts.filter((v) => v.verdict.signatureValid && v.verdict.qshValid).length} accepted)`);
