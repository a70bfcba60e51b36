// The client against the real API, which tests/integration/test_typescript_client.py starts:
// BOTSESSION_API_URL and the tokens BOTSESSION_TOKEN_{READER,REPORTER,BOTH,LIMITED} (LIMITED:
// read scope, 1 request a second, burst 1). Without BOTSESSION_API_URL these tests skip.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { BotSessionError, EventsExpiredError, createBotSessionClient, onSessionEvent, unwrap } from "../dist/index.js";

const baseUrl = process.env.BOTSESSION_API_URL;
const skip = baseUrl ? false : "BOTSESSION_API_URL is not set (run tests/integration/test_typescript_client.py)";
const token = (kind) => process.env[`BOTSESSION_TOKEN_${kind}`];
const client = (kind, options = {}) => createBotSessionClient({ baseUrl, token: token(kind), ...options });
const BOT = `ts-${process.pid}-${Date.now().toString(36)}`; // events of this run only

async function report(userId, state, extra = {}) {
  return unwrap(
    client("REPORTER").POST("/v1/whatsapp/sessions/{botId}/{userId}/report", {
      params: { path: { botId: BOT, userId } },
      body: { state, ...extra },
    }),
  );
}

/** The next `count` events of an iterator, within `ms`. */
async function take(iterator, count, ms = 15_000) {
  const seen = [];
  const deadline = sleep(ms).then(() => {
    throw new Error(`only ${seen.length} of ${count} events within ${ms} ms`);
  });
  while (seen.length < count) {
    const next = await Promise.race([iterator.next(), deadline]);
    assert.equal(next.done, false, "the stream ended");
    seen.push(next.value);
  }
  return seen;
}

describe("the REST endpoints", { skip }, () => {
  test("report and session status round trip, typed", async () => {
    const created = await report("alice", "connecting", { phoneNumber: "4915112345678", displayName: "Alice" });
    assert.equal(created.success, true);
    assert.equal(created.created, true);
    assert.equal(created.session.status, "connecting");
    assert.deepEqual(
      created.transitions.map((t) => [t.revision, t.from, t.to]),
      [[1, null, "connecting"]],
    );
    await report("alice", "connected");

    const api = client("READER");
    const { data, response } = await api.GET("/v1/whatsapp/session-status/{botId}", {
      params: { path: { botId: BOT }, query: { userId: "alice" } },
    });
    assert.equal(response.headers.get("X-Session-Source"), "redis");
    assert.deepEqual(Object.keys(data), ["success", "status", "lastSeen", "phoneNumber", "displayName", "sessionId"]);
    assert.equal(data.status, "active");
    assert.equal(data.phoneNumber, "4915112345678");
    assert.match(data.lastSeen, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    const cleared = await unwrap(
      client("BOTH").POST("/v1/whatsapp/clear-session/{botId}", {
        params: { path: { botId: BOT } },
        body: { userId: "alice" },
      }),
    );
    assert.equal(cleared.success, true);
    assert.equal(cleared.cleared.session, 1);
  });

  test("a 4xx is a BotSessionError carrying the envelope", async () => {
    const api = client("READER");
    await assert.rejects(
      api.GET("/v1/whatsapp/session-status/{botId}", { params: { path: { botId: BOT }, query: { userId: "nobody" } } }),
      (error) => {
        assert.ok(error instanceof BotSessionError);
        assert.equal(error.name, "BotSessionError");
        assert.equal(error.status, 404);
        assert.equal(error.code, "session_not_found");
        assert.equal(typeof error.message, "string");
        assert.equal(error.request.method, "GET");
        return true;
      },
    );
    await report("bob", "connected");
    await assert.rejects(report("bob", "failed"), (error) => {
      assert.equal(error.status, 409);
      assert.equal(error.code, "transition_refused");
      assert.equal(error.info.current, "active");
      assert.equal(error.info.requested, "failed");
      assert.ok(Array.isArray(error.info.allowed));
      return true;
    });
    await assert.rejects(report("bob", "sleeping"), (error) => {
      assert.equal(error.status, 422);
      assert.equal(error.code, "invalid_input");
      assert.ok(error.details.some((d) => d.field.includes("state")), JSON.stringify(error.details));
      return true;
    });
    await assert.rejects(
      api.POST("/v1/whatsapp/sessions/{botId}/{userId}/heartbeat", { params: { path: { botId: BOT, userId: "bob" } } }),
      (error) => error instanceof BotSessionError && error.status === 403 && error.code === "forbidden",
    );
    await assert.rejects(
      createBotSessionClient({ baseUrl, token: "not-a-token-of-this-api" }).GET("/v1/whatsapp/webhooks"),
      (error) => error instanceof BotSessionError && error.status === 401 && error.code === "unauthorized",
    );
  });

  test("Retry-After is honoured on 429, within bounds", async () => {
    const status = (api) =>
      api.GET("/v1/whatsapp/session-status/{botId}", { params: { path: { botId: BOT }, query: { userId: "bob" } } });
    // the bucket holds one request: the first empties it
    await status(client("LIMITED", { retry: false }));
    await assert.rejects(status(client("LIMITED", { retry: false })), (error) => {
      assert.ok(error instanceof BotSessionError);
      assert.equal(error.status, 429);
      assert.equal(error.code, "rate_limited");
      assert.equal(error.retryAfter, 1);
      return true;
    });
    // a total wait too short for Retry-After: thrown at once, not waited for
    const started = performance.now();
    await assert.rejects(status(client("LIMITED", { retry: { maxTotalWaitMs: 500 } })), { code: "rate_limited" });
    assert.ok(performance.now() - started < 900);

    const retries = [];
    const patient = client("LIMITED", { retry: { onRetry: (retry) => retries.push(retry) } });
    const before = performance.now();
    const { data } = await status(patient);
    const waited = performance.now() - before;
    assert.equal(data.status, "active");
    assert.equal(retries.length, 1, JSON.stringify(retries));
    assert.equal(retries[0].status, 429);
    assert.equal(retries[0].waitMs, 1000);
    assert.ok(waited >= 1000, `answered after ${waited} ms, before Retry-After`);
  });
});

describe("the session event stream", { skip }, () => {
  test("delivers transitions in order, typed", async () => {
    const abort = new AbortController();
    let open;
    const opened = new Promise((resolve) => (open = resolve));
    const events = client("READER").sessionEvents({ botId: BOT, userId: "carol", signal: abort.signal, onOpen: open });
    const first = events.next();
    await opened;
    await sleep(500); // the API's reader has seen the stream's end
    await report("carol", "connecting");
    await report("carol", "connected");
    await report("carol", "disconnected");
    const seen = [(await first).value, ...(await take(events, 2))];
    abort.abort();
    assert.deepEqual((await events.next()).done, true);
    assert.deepEqual(
      seen.map((e) => [e.type, e.botId, e.userId, e.revision, e.from, e.to, e.actor]),
      [
        ["transition", BOT, "carol", 1, null, "connecting", "bot-runner"],
        ["transition", BOT, "carol", 2, "connecting", "active", "bot-runner"],
        ["transition", BOT, "carol", 3, "active", "inactive", "bot-runner"],
      ],
    );
    assert.ok(seen[1].id > seen[0].id && seen[2].id > seen[1].id);
  });

  test("resumes with Last-Event-ID after the connection drops", async () => {
    // a fetch whose event streams the test can cut, as a network failure would
    const requests = [];
    let cut;
    const fetch = async (request) => {
      requests.push({ url: request.url, lastEventId: request.headers.get("Last-Event-ID") });
      const response = await globalThis.fetch(request);
      if (!response.ok || !request.url.includes("/session-events")) return response;
      const reader = response.body.getReader();
      const body = new ReadableStream({
        start(controller) {
          cut = () => {
            controller.error(new TypeError("terminated: the test cut the connection"));
            reader.cancel().catch(() => undefined);
          };
        },
        async pull(controller) {
          try {
            const { done, value } = await reader.read();
            if (done) controller.close();
            else controller.enqueue(value);
          } catch (error) {
            controller.error(error);
          }
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    };
    const abort = new AbortController();
    const reconnects = [];
    let open;
    let opened = new Promise((resolve) => (open = resolve));
    const events = client("READER", { fetch }).sessionEvents({
      botId: BOT,
      userId: "dave",
      signal: abort.signal,
      onOpen: () => open(),
      onReconnect: (r) => reconnects.push(r),
    });
    const pending = events.next();
    await opened;
    await sleep(500);
    await report("dave", "connecting");
    const first = (await pending).value;
    assert.equal(first.revision, 1);

    opened = new Promise((resolve) => (open = resolve));
    cut(); // the connection drops; what happens now is missed until the client is back
    await report("dave", "connected");
    await report("dave", "disconnected");
    const after = await take(events, 2);
    await opened;
    await report("dave", "connecting"); // and it is live again
    const [live] = await take(events, 1);
    abort.abort();

    assert.deepEqual(
      [first, ...after, live].map((e) => [e.revision, e.to]),
      [
        [1, "connecting"],
        [2, "active"],
        [3, "inactive"],
        [4, "connecting"],
      ],
    );
    assert.equal(reconnects.length, 1);
    assert.equal(reconnects[0].delayMs, 1000); // the server's `retry: 1000`
    const streams = requests.filter((r) => r.url.includes("/session-events"));
    assert.deepEqual(
      streams.map((r) => r.lastEventId),
      [null, first.id],
    );
  });

  test("a new stream resumes from lastEventId after the test aborted the first", async () => {
    const abort = new AbortController();
    const events = client("READER").sessionEvents({ botId: BOT, userId: "dave", lastEventId: "0", signal: abort.signal });
    const replayed = await take(events, 4);
    abort.abort();
    assert.deepEqual(
      replayed.map((e) => e.revision),
      [1, 2, 3, 4],
    );
    const again = new AbortController();
    const resumed = client("READER").sessionEvents({
      botId: BOT,
      userId: "dave",
      lastEventId: replayed[1].id,
      signal: again.signal,
    });
    const rest = await take(resumed, 2);
    again.abort();
    assert.deepEqual(
      rest.map((e) => e.id),
      [replayed[2].id, replayed[3].id],
    );
  });

  test("a position no longer kept is EventsExpiredError (410 events_expired)", async () => {
    const events = client("READER").sessionEvents({ botId: BOT, lastEventId: "1-0" });
    await assert.rejects(events.next(), (error) => {
      assert.ok(error instanceof EventsExpiredError);
      assert.ok(error instanceof BotSessionError);
      assert.equal(error.status, 410);
      assert.equal(error.code, "events_expired");
      return true;
    });
  });

  test("a filter the API refuses is thrown, not retried", async () => {
    const events = client("READER").sessionEvents({ userId: "dave", maxReconnects: 0 });
    await assert.rejects(events.next(), { status: 422, code: "invalid_input" });
  });

  test("browsers: a ticket, then an EventSource with ?ticket=", async () => {
    const opened = [];
    class RecordingEventSource {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.listeners = {};
        opened.push(this);
      }
      addEventListener(type, listener) {
        (this.listeners[type] ??= []).push(listener);
      }
      close() {
        this.readyState = 2;
      }
    }
    const api = client("READER");
    const { source, url, ticket, expiresAt } = await api.openEventSource({
      botId: BOT,
      userId: "erin",
      EventSource: RecordingEventSource,
    });
    assert.equal(opened.length, 1);
    assert.equal(source.url, url);
    assert.ok(ticket.length > 10 && Date.parse(expiresAt) > Date.now());
    assert.ok(!url.includes(token("READER")), "the token is never in a URL");
    const handled = [];
    onSessionEvent(source, (event) => handled.push(event));
    assert.deepEqual(Object.keys(source.listeners).sort(), ["removed", "transition"]);

    // what a browser's EventSource would do with that URL: no Authorization header
    const abort = new AbortController();
    const response = await fetch(url, { headers: { Accept: "text/event-stream" }, signal: abort.signal });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /^text\/event-stream/);
    const reader = response.body.getReader();
    await sleep(500);
    await report("erin", "connecting");
    let text = "";
    while (!text.includes("\n\n", text.indexOf("event: transition"))) {
      const { value } = await reader.read();
      text += new TextDecoder().decode(value);
    }
    abort.abort();
    const data = text.split("\n").find((line) => line.startsWith("data: "));
    source.listeners.transition[0]({ data: data.slice("data: ".length) });
    assert.deepEqual(
      handled.map((e) => [e.userId, e.to]),
      [["erin", "connecting"]],
    );
  });
});
