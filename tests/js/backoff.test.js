// Property tests of the browser client's backoff (static/squall.js), the same
// properties as tests/unit/test_backoff_properties.py for the Python client:
// bounds, give-up after maxAttempts, reset rules. Run: node --test tests/js/
// (tests/unit/test_js_client.py runs it under pytest). Random cases come from a
// seeded generator, so every run checks the same ones.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const Squall = require(path.join(__dirname, "..", "..", "static", "squall.js"));

const CASES = 2000;

/** mulberry32: a small seeded PRNG in [0, 1). */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomPolicy(r) {
  const base = 0.001 + r() * 100;
  const cap = base + r() * 10000;
  return Squall.Backoff({
    base,
    cap,
    jitter: r(),
    maxAttempts: r() < 0.3 ? null : 1 + Math.floor(r() * 30),
    resetAfter: r() * 1000,
    restartDelay: r() * 10,
  });
}

test("every delay lies in the jitter window below the cap", () => {
  const r = seeded(1);
  for (let i = 0; i < CASES; i++) {
    const p = randomPolicy(r);
    const attempt = Math.floor(r() * 10000);
    const top = Squall.ceilingOf(p, attempt);
    assert.equal(top, Math.min(p.cap, p.base * Math.pow(2, Math.min(attempt, 64))));
    const x = r();
    const d = Squall.delayOf(p, attempt, () => x);
    assert.ok(d >= top * (1 - p.jitter) - 1e-9 && d <= top + 1e-9, `${d} outside window`);
    assert.ok(d >= 0 && d <= p.cap + 1e-9);
  }
});

test("ceilings never decrease", () => {
  const r = seeded(2);
  for (let i = 0; i < CASES; i++) {
    const p = randomPolicy(r);
    const n = Math.floor(r() * 200);
    assert.ok(Squall.ceilingOf(p, n) <= Squall.ceilingOf(p, n + 1));
  }
});

test("gives up exactly after maxAttempts", () => {
  const r = seeded(3);
  for (let i = 0; i < CASES / 4; i++) {
    const p = randomPolicy(r);
    const a = new Squall.Attempts(p, r);
    const n = 1 + Math.floor(r() * 50);
    const delays = Array.from({ length: n + 2 }, () => a.nextDelay());
    const given = delays.filter((d) => d !== null);
    if (p.maxAttempts === null) {
      assert.equal(given.length, delays.length);
      assert.equal(a.exhausted, false);
    } else {
      assert.equal(given.length, Math.min(p.maxAttempts, delays.length));
      assert.deepEqual(delays.slice(0, given.length), given); // null only after the last
      if (delays.length > p.maxAttempts) {
        assert.equal(a.exhausted, true);
        assert.equal(a.nextDelay(), null);
      }
    }
  }
});

test("a drop resets the count exactly after resetAfter seconds up", () => {
  const r = seeded(4);
  for (let i = 0; i < CASES; i++) {
    const p = randomPolicy(r);
    const a = new Squall.Attempts(p, () => 0.5);
    const failures = Math.floor(r() * 40);
    for (let k = 0; k < failures; k++) a.nextDelay();
    const before = a.attempt;
    const at = r() * 1e6;
    const uptime = r() < 0.1 ? p.resetAfter : r() * 2000;
    a.connected(at);
    a.disconnected(at + uptime);
    const stayed = at + uptime - at;
    assert.equal(a.attempt, stayed >= p.resetAfter ? 0 : before);
    a.disconnected(at + uptime + 10000); // no connected() in between: nothing changes
    assert.equal(a.attempt, stayed >= p.resetAfter ? 0 : before);
  }
});

test("a restart close never inherits the count", () => {
  const r = seeded(5);
  for (let i = 0; i < CASES; i++) {
    const p = randomPolicy(r);
    const x = r();
    const a = new Squall.Attempts(p, () => x);
    const failures = Math.floor(r() * 40);
    for (let k = 0; k < failures; k++) a.nextDelay();
    const d = a.restart();
    assert.ok(d >= 0 && d <= p.restartDelay);
    assert.equal(a.attempt, 1);
    const next = a.nextDelay();
    if (p.maxAttempts === 1) assert.equal(next, null);
    else assert.ok(next !== null && next <= Squall.ceilingOf(p, 1));
  }
});

test("the reference preset is 1 s doubling to 30 s, ten tries", () => {
  const a = new Squall.Attempts(Squall.REFERENCE_BACKOFF, () => 1 - 1e-12);
  const delays = Array.from({ length: 11 }, () => a.nextDelay());
  assert.deepEqual(delays.slice(0, 10).map(Math.round), [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]);
  assert.equal(delays[10], null);
  assert.equal(new Squall.Attempts(Squall.REFERENCE_BACKOFF, () => 0).nextDelay(), 0.8);
});

test("invalid policies are refused", () => {
  assert.throws(() => Squall.Backoff({ base: 0 }), RangeError);
  assert.throws(() => Squall.Backoff({ base: 2, cap: 1 }), RangeError);
  assert.throws(() => Squall.Backoff({ jitter: 1.5 }), RangeError);
  assert.throws(() => Squall.Backoff({ maxAttempts: 0 }), RangeError);
  assert.throws(() => Squall.Backoff({ restartDelay: -1 }), RangeError);
  assert.deepEqual({ ...Squall.Backoff() }, {
    base: 0.5, cap: 30, jitter: 1, maxAttempts: null, resetAfter: 10, restartDelay: 1,
  });
});

test("status lines read as the Python client's", () => {
  const d = Squall.describeStatus;
  assert.equal(d({ state: "connecting", attempt: 0 }), "connecting");
  assert.equal(d({ state: "connecting", attempt: 2 }), "connecting (retry 2)");
  assert.equal(
    d({ state: "retry", attempt: 1, delay: 0.05, code: 1012, reason: "service restart" }),
    "retry 1 in 0.1 s (1012 service restart)"
  );
  assert.equal(d({ state: "recovered", attempt: 1, code: null }), "recovered after 1 try");
  assert.equal(d({ state: "gave_up", attempt: 10, code: 1006, reason: "" }), "gave up after 10 tries (1006)");
});
