// The text/event-stream parser on its own (no server): line endings, comments, ids, retry.
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseEventStream } from "../dist/index.js";

function streamOf(...chunks) {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
      controller.close();
    },
  });
}

async function frames(stream, lastEventId) {
  const seen = [];
  for await (const frame of parseEventStream(stream, lastEventId)) seen.push(frame);
  return seen;
}

test("events, comments and retry, in any chunking and line ending", async () => {
  const text =
    "\uFEFFretry: 1000\n\n: keep-alive\n\nid: 1-0\nevent: transition\ndata: {\"a\":\n" +
    "data: 1}\n\nid: 2-0\r\nevent: removed\r\ndata:x\r\n\r\nid: 3-0\rdata: y\r\r";
  const expected = [
    { kind: "retry", ms: 1000 },
    { kind: "comment", text: "keep-alive" },
    { kind: "event", event: "transition", data: '{"a":\n1}', lastEventId: "1-0" },
    { kind: "event", event: "removed", data: "x", lastEventId: "2-0" },
    { kind: "event", event: "message", data: "y", lastEventId: "3-0" },
  ];
  assert.deepEqual(await frames(streamOf(text)), expected);
  // one byte at a time: CRLF split across chunks, a multi-byte character split too
  const bytes = new TextEncoder().encode(text + "data: \u00e9\n\n");
  const one = [...bytes].map((b) => new Uint8Array([b]));
  assert.deepEqual(await frames(streamOf(...one)), [
    ...expected,
    { kind: "event", event: "message", data: "\u00e9", lastEventId: "3-0" },
  ]);
});

test("an id without data moves the last event id; an unterminated event is dropped", async () => {
  const seen = await frames(streamOf("id: 5-0\n\ndata: a\n\nid: 6-0\ndata: b"), "4-0");
  assert.deepEqual(seen, [{ kind: "event", event: "message", data: "a", lastEventId: "5-0" }]);
  const kept = await frames(streamOf("data: c\n\n"), "4-0");
  assert.deepEqual(kept, [{ kind: "event", event: "message", data: "c", lastEventId: "4-0" }]);
  assert.deepEqual(await frames(streamOf("retry: soon\n\n")), []);
});

test("stopping early cancels the stream", async () => {
  let cancelled = false;
  const stream = new ReadableStream({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode("data: x\n\n"));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const frame of parseEventStream(stream)) {
    assert.equal(frame.data, "x");
    break;
  }
  assert.ok(cancelled);
});
