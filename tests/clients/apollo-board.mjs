#!/usr/bin/env node
// Does Apollo Client's InMemoryCache keep two queries over different parts of `board`?
//
//   node apollo-board.mjs http://127.0.0.1:8080/graphql
//   GRAPHQL_URL=... node apollo-board.mjs [-H 'Authorization: Bearer x'] [--q1 '...'] [--q2 '...']
//                                  [--type-policies ./policies.mjs] [--verbose]
//
// Runs query 1, then query 2 (both network-only, one ApolloClient + InMemoryCache), then reads
// both back from the cache. Exit codes:
//   0  no "Cache data may be lost" warning, both queries read back complete and equal to what
//      the server sent
//   1  a data-loss warning was logged, or a query cannot be read back from the cache (query 2
//      always; query 1 too, since silently losing it is the same problem without the warning),
//      or the server answered with errors
//   2  usage error
//   3  warning capture does not work in this environment (the built-in canary did not warn)
import { format } from 'node:util';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

// Apollo Client 3 only emits invariant.warn(...) when `globalThis.__DEV__ !== false`; its ESM
// build checks this at call time and defaults to "on", but a bundler/env may have set it to
// false, so force it on before Apollo is loaded. (APOLLO_DEV=false exists only so the
// self-test can prove the canary catches a build that hides warnings.)
globalThis.__DEV__ = process.env.APOLLO_DEV !== 'false';

// Capture every console method Apollo's ts-invariant may use (it looks `console[name]` up at
// call time, so patching works). Messages are kept and echoed to stderr with --verbose.
const captured = [];
let echo = false;
for (const level of ['debug', 'log', 'info', 'warn', 'error']) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    captured.push({ level, text: format(...args) });
    if (echo) process.stderr.write(`[apollo console.${level}] ${format(...args)}\n`);
    else if (level === 'log' || level === 'info') original(...args);
  };
}
const out = (...a) => process.stdout.write(format(...a) + '\n');

// Deep ESM paths: @apollo/client 3.x has no "exports" map, so `@apollo/client/core` is a
// directory import that Node's ESM loader refuses.
const { ApolloClient, InMemoryCache, HttpLink, gql, setLogVerbosity } = await import('@apollo/client/core/index.js');
const { loadDevMessages, loadErrorMessages } = await import('@apollo/client/dev/index.js');
// Without these the warning is only "An error occurred! ... go.apollo.dev/c/err#{...15...}".
loadDevMessages();
loadErrorMessages();
setLogVerbosity('log');

const DATA_LOSS = /Cache data may be lost when replacing the (\S+) field of a (\S+) object/;

const DEFAULT_Q1 = '{ board { environments { name } rows { system { name } } } }';
const DEFAULT_Q2 = '{ board { rows { cells { environment { name } current { version } } } } }';
// The same two queries selecting `id` wherever shiplog's types have (or would get) one:
// Apollo can only normalise an object whose id is in the response, so ids in the schema alone
// change nothing for a client that does not ask for them.
const IDS_Q1 = '{ board { id environments { id name } rows { id system { id name } } } }';
const IDS_Q2 = '{ board { id rows { id cells { id environment { id name } current { id version } } } } }';

const USAGE = `usage: node apollo-board.mjs [URL] [options]
  URL                  GraphQL endpoint (or env GRAPHQL_URL)
  -H 'Name: value'     extra request header (repeatable), e.g. -H 'Authorization: Bearer x'
  --q1 QUERY           first query  (default: ${DEFAULT_Q1})
  --q2 QUERY           second query (default: ${DEFAULT_Q2})
  --ids                use the id-selecting variants of the default queries:
                         ${IDS_Q1}
                         ${IDS_Q2}
  --type-policies F    ES module whose default export (or \`typePolicies\`) is passed to InMemoryCache
  --verbose            echo captured console output and print the cached results`;

function parseArgs(argv) {
  const o = { url: process.env.GRAPHQL_URL || '', headers: {}, q1: DEFAULT_Q1, q2: DEFAULT_Q2, typePolicies: null, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') { out(USAGE); process.exit(0); }
    else if (a === '-H' || a === '--header') {
      const h = argv[++i] ?? '';
      const c = h.indexOf(':');
      if (c < 1) throw new Error(`bad header ${JSON.stringify(h)}`);
      o.headers[h.slice(0, c).trim()] = h.slice(c + 1).trim();
    } else if (a === '--q1') o.q1 = argv[++i];
    else if (a === '--q2') o.q2 = argv[++i];
    else if (a === '--ids') { o.q1 = IDS_Q1; o.q2 = IDS_Q2; }
    else if (a === '--type-policies') o.typePolicies = argv[++i];
    else if (a === '--verbose' || a === '-v') o.verbose = true;
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else o.url = a;
  }
  if (!o.url) throw new Error('no URL given');
  new URL(o.url);
  if (!o.q1 || !o.q2) throw new Error('empty query');
  return o;
}

/** Proves that a data-loss warning would be seen: two id-less writes of one field. */
function canary() {
  const cache = new InMemoryCache();
  const before = captured.length;
  cache.writeQuery({ query: gql`{ shiplogCanary { a b } }`, data: { shiplogCanary: { __typename: 'Canary', a: 1, b: 2 } } });
  cache.writeQuery({ query: gql`{ shiplogCanary { a c } }`, data: { shiplogCanary: { __typename: 'Canary', a: 1, c: 3 } } });
  return captured.slice(before).some((m) => DATA_LOSS.test(m.text) && m.text.includes('shiplogCanary'));
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
    o.q1doc = gql(o.q1);
    o.q2doc = gql(o.q2);
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n\n${USAGE}\n`);
    return 2;
  }
  echo = o.verbose;

  if (!canary()) {
    out('FAIL: the canary write produced no "Cache data may be lost" warning: warnings are not visible in this environment (production build or __DEV__ false?), so this check would prove nothing.');
    return 3;
  }
  out('canary: data-loss warnings are captured (ok)');

  let typePolicies;
  if (o.typePolicies) {
    const mod = await import(pathToFileURL(path.resolve(o.typePolicies)).href);
    typePolicies = mod.typePolicies ?? mod.default;
    out(`using typePolicies from ${o.typePolicies}`);
  }
  const cache = new InMemoryCache(typePolicies ? { typePolicies } : {});
  const client = new ApolloClient({
    cache,
    link: new HttpLink({ uri: o.url, headers: o.headers, fetch }),
  });

  const start = captured.length;
  const problems = [];
  const results = [];
  for (const [name, doc] of [['query 1', o.q1doc], ['query 2', o.q2doc]]) {
    try {
      const r = await client.query({ query: doc, fetchPolicy: 'network-only', errorPolicy: 'all' });
      if (r.errors?.length) problems.push(`${name}: server returned errors: ${r.errors.map((e) => e.message).join('; ')}`);
      results.push(r.data);
    } catch (err) {
      out(`FAIL: ${name} failed: ${err.message}`);
      if (err.networkError?.result) out(`  server said: ${JSON.stringify(err.networkError.result).slice(0, 500)}`);
      return 1;
    }
  }

  const warnings = captured.slice(start).filter((m) => DATA_LOSS.test(m.text));
  for (const w of warnings) {
    const [, field, type] = w.text.match(DATA_LOSS);
    problems.push(`Apollo warned: "Cache data may be lost when replacing the ${field} field of a ${type} object"`);
  }

  for (const [i, [name, doc]] of [['query 1', o.q1doc], ['query 2', o.q2doc]].entries()) {
    const diff = cache.diff({ query: doc, optimistic: false, returnPartialData: true });
    const sameAsServer = JSON.stringify(diff.result) === JSON.stringify(results[i]);
    if (!diff.complete) {
      const missing = (Array.isArray(diff.missing) ? diff.missing : [diff.missing]).filter(Boolean).map((m) => m.message.split('\n')[0]);
      problems.push(`${name} cannot be read back from the cache (incomplete): ${missing.join('; ').slice(0, 300)}`);
    } else if (!sameAsServer) {
      problems.push(`${name} reads back from the cache but differs from what the server sent`);
    } else {
      out(`${name}: reads back complete from the cache (ok)`);
    }
    if (o.verbose) out(`${name} cached result: ${JSON.stringify(diff.result)}`);
  }

  const others = captured.slice(start).filter((m) => (m.level === 'warn' || m.level === 'error') && !DATA_LOSS.test(m.text));
  if (others.length) out(`other Apollo console warnings/errors (not failing): ${others.length}\n  ${others.map((m) => m.text.split('\n')[0]).join('\n  ')}`);

  if (problems.length) {
    out(`FAIL:\n  - ${problems.join('\n  - ')}`);
    if (o.verbose) for (const w of warnings) out(`\nfull warning:\n${w.text}`);
    return 1;
  }
  out('PASS: no data-loss warning; both queries read back from the cache');
  return 0;
}

process.exitCode = await main();
