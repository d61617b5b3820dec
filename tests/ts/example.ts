// Uses every part of static/squall.d.ts the way an application would; `tsc --noEmit`
// must accept it (tests/unit/test_js_client.py). The last lines must be refused,
// which the @ts-expect-error comments assert.
import Squall = require("../../static/squall.js");

async function main(getToken: () => Promise<string>): Promise<void> {
  const client = new Squall.SquallClient("/ws", {
    token: getToken,
    backoff: Squall.REFERENCE_BACKOFF,
    requestTimeout: 5000,
  });
  const log: string[] = [];
  client.on("status", (e: Squall.StatusEvent) => {
    log.push(Squall.describeStatus(e));
    if (e.state === "retry" && e.delay !== null) log.push(`next try in ${e.delay.toFixed(1)} s`);
  });
  client.on("msg", (m) => log.push(`${m.room}#${m.seq}: ${JSON.stringify(m.data)}`));
  client.on("dm", async (d) => {
    log.push(`${d.from ?? "server"}: ${String(d.data)}`);
  });
  client.on("closed", (err) => {
    if (err instanceof Squall.GaveUp) log.push(`gave up after ${err.attempts} tries`);
    else if (err) log.push(`ended ${err.code}`);
  });
  const welcome: Squall.Welcome = await client.connect();
  log.push(welcome.uid, welcome.subprotocol ?? "msgpack");
  const ok = await client.join("lobby");
  const seq: number = await client.publish("lobby", { text: "hi" });
  const users: string[] = await client.presence("lobby");
  const rtt: number = await client.ping();
  const sent = await client.send("bob", "hello");
  log.push(String(ok.recovered), String(seq), users.join(), String(rtt), String(sent.queued));
  try {
    await client.publish("elsewhere", 1);
  } catch (e) {
    if (e instanceof Squall.RequestFailed) log.push(`err ${e.code} ${e.reason}`);
  }
  const policy = Squall.Backoff({ base: 1, cap: 30, maxAttempts: 10 });
  const attempts = new Squall.Attempts(policy, Math.random);
  const delay: number | null = attempts.nextDelay();
  log.push(String(delay), String(Squall.ceilingOf(policy, 3)), String(client.rooms.lobby?.seq));
  client.close();

  // @ts-expect-error: the token is required
  new Squall.SquallClient("/ws", {});
  // @ts-expect-error: publish resolves with a seq number, not a string
  const wrong: string = await client.publish("lobby", 1);
  // @ts-expect-error: unknown event name
  client.on("message", () => undefined);
  log.push(wrong);
}

export { main };
