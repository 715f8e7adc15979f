#!/usr/bin/env node
// Runs graphql-http's GraphQL-over-HTTP server audits (`serverAudits`) against a URL.
//
//   node audit.mjs http://127.0.0.1:8080/graphql
//   GRAPHQL_URL=http://127.0.0.1:8080/graphql node audit.mjs
//   node audit.mjs URL -H 'Authorization: Bearer s3cret'     (SHIPLOG_API_TOKENS)
//   node audit.mjs URL --json                                 (machine-readable report)
//
// Exit codes: 0 = every MUST and SHOULD audit is ok (MAY audits may fail; they are listed);
//             1 = at least one MUST or SHOULD audit is not ok (or an audit crashed);
//             2 = usage error (no URL, bad option).
import { serverAudits } from 'graphql-http';

const USAGE = `usage: node audit.mjs [URL] [-H 'Name: value']... [--timeout MS] [--json] [--verbose]
  URL            GraphQL endpoint, e.g. http://127.0.0.1:8080/graphql
                 (or env GRAPHQL_URL / AUDIT_URL)
  -H, --header   extra request header for every audit request (repeatable);
                 env AUDIT_HEADERS takes a JSON object too, e.g. '{"Authorization":"Bearer x"}'
  --timeout MS   per-request timeout (default 10000; env AUDIT_TIMEOUT_MS)
  --json         print the results as JSON instead of a table
  --verbose      also print status/content-type/body of every non-ok response`;

function parseArgs(argv) {
  const opts = {
    url: process.env.GRAPHQL_URL || process.env.AUDIT_URL || '',
    headers: {},
    timeoutMs: Number(process.env.AUDIT_TIMEOUT_MS || 10000),
    json: false,
    verbose: false,
  };
  if (process.env.AUDIT_HEADERS) {
    try {
      Object.assign(opts.headers, JSON.parse(process.env.AUDIT_HEADERS));
    } catch (err) {
      throw new Error(`AUDIT_HEADERS is not a JSON object: ${err.message}`);
    }
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (a === '-H' || a === '--header') {
      const h = argv[++i];
      const colon = h ? h.indexOf(':') : -1;
      if (colon < 1) throw new Error(`bad header ${JSON.stringify(h)}; expected 'Name: value'`);
      opts.headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
    } else if (a === '--timeout') {
      opts.timeoutMs = Number(argv[++i]);
    } else if (a === '--json') {
      opts.json = true;
    } else if (a === '--verbose' || a === '-v') {
      opts.verbose = true;
    } else if (a.startsWith('-')) {
      throw new Error(`unknown option ${a}`);
    } else {
      opts.url = a;
    }
  }
  if (!opts.url) throw new Error('no URL given');
  new URL(opts.url); // throws on a malformed URL
  if (!(opts.timeoutMs > 0)) throw new Error('--timeout must be a positive number');
  return opts;
}

/** The level is the first word of the audit's name: MUST, SHOULD or MAY ("MAY NOT ..." is MAY). */
function levelOf(name) {
  const word = name.split(' ', 1)[0];
  return ['MUST', 'SHOULD', 'MAY'].includes(word) ? word : 'UNKNOWN';
}

/** A fetch that adds the extra headers (without overriding the audit's own) and a timeout. */
function makeFetch(extraHeaders, timeoutMs) {
  return (input, init = {}) => {
    const headers = new Headers(init.headers);
    for (const [k, v] of Object.entries(extraHeaders)) {
      if (!headers.has(k)) headers.set(k, v);
    }
    return fetch(input, { ...init, headers, signal: AbortSignal.timeout(timeoutMs) });
  };
}

async function describeResponse(res) {
  if (!res || typeof res.clone !== 'function') return undefined;
  let body = '';
  try {
    body = await res.clone().text();
  } catch {
    body = '<body already consumed>';
  }
  if (body.length > 300) body = body.slice(0, 300) + '…';
  return { status: res.status, contentType: res.headers.get('content-type'), body };
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`error: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }

  const audits = serverAudits({ url: opts.url, fetchFn: makeFetch(opts.headers, opts.timeoutMs) });
  const results = [];
  // One at a time: the audits are independent, but running them serially keeps the server's
  // logs readable and the load negligible.
  for (const a of audits) {
    const level = levelOf(a.name);
    let r;
    try {
      r = await a.fn();
    } catch (err) {
      // graphql-http rethrows anything that is not an assertion failure (network error, timeout).
      r = { id: a.id, name: a.name, status: 'error', reason: `audit crashed: ${err?.cause?.message || err?.message || err}` };
    }
    const row = { id: r.id, level, status: r.status, name: r.name };
    if (r.status !== 'ok') {
      row.reason = r.reason;
      if (opts.verbose || opts.json) row.response = await describeResponse(r.response);
    }
    results.push(row);
  }

  // graphql-http's own status: ok | error (failed MUST) | warn (failed SHOULD) | notice (failed MAY).
  const blocking = results.filter((r) => r.status !== 'ok' && (r.level === 'MUST' || r.level === 'SHOULD' || r.level === 'UNKNOWN' || r.reason?.startsWith('audit crashed')));
  const mayFailures = results.filter((r) => r.status !== 'ok' && !blocking.includes(r));
  const count = (s) => results.filter((r) => r.status === s).length;

  if (opts.json) {
    console.log(JSON.stringify({ url: opts.url, total: results.length, ok: count('ok'), blocking: blocking.length, mayFailures: mayFailures.length, results }, null, 2));
  } else {
    console.log(`graphql-http server audits against ${opts.url}\n`);
    console.log(`${'ID'.padEnd(5)} ${'LEVEL'.padEnd(6)} ${'STATUS'.padEnd(6)} NAME / REASON`);
    for (const r of results) {
      const shown = r.status === 'notice' ? 'warn' : r.status; // MAY failures shown as warn
      console.log(`${r.id.padEnd(5)} ${r.level.padEnd(6)} ${shown.padEnd(6)} ${r.name}`);
      if (r.reason) console.log(`${' '.repeat(20)}reason: ${r.reason}`);
      if (opts.verbose && r.response) {
        console.log(`${' '.repeat(20)}got: ${r.response.status} ${r.response.contentType ?? '(no content-type)'} ${JSON.stringify(r.response.body)}`);
      }
    }
    console.log(`\n${results.length} audits: ${count('ok')} ok, ${count('error')} error (MUST), ${count('warn')} warn (SHOULD), ${count('notice')} warn (MAY, allowed)`);
    if (mayFailures.length) {
      console.log(`MAY audits not ok (allowed): ${mayFailures.map((r) => r.id).join(', ')}`);
    }
    if (blocking.length) {
      console.log(`FAIL: MUST/SHOULD audits not ok: ${blocking.map((r) => `${r.id}(${r.level})`).join(', ')}`);
    } else {
      console.log('PASS: every MUST and SHOULD audit is ok');
    }
  }
  process.exitCode = blocking.length ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
