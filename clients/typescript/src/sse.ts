// A text/event-stream parser (the WHATWG HTML "Server-sent events" interpretation rules):
// lines end with CRLF, LF or CR; `field: value` (one space after the colon dropped);
// lines starting with ":" are comments; a blank line dispatches the event.

/** One dispatched event, or a `retry` the server asked for. */
export type SseFrame =
  | { kind: "event"; event: string; data: string; lastEventId: string }
  | { kind: "retry"; ms: number }
  | { kind: "comment"; text: string };

/**
 * The frames of a byte stream, as they arrive. Events without data are not dispatched, but
 * their `id` still becomes the last event id (as EventSource does). Ends when the stream
 * ends; the reader is released (the stream cancelled) when the consumer stops early.
 */
export async function* parseEventStream(
  stream: ReadableStream<Uint8Array>,
  initialLastEventId = "",
): AsyncGenerator<SseFrame, void, undefined> {
  const reader = stream.getReader();
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  let first = true;
  let data: string[] = [];
  let event = "";
  let lastEventId = initialLastEventId;
  let pendingCR = false; // a chunk ended with CR: a following LF belongs to it

  function* line(text: string): Generator<SseFrame> {
    if (text === "") {
      if (data.length > 0) {
        yield { kind: "event", event: event || "message", data: data.join("\n"), lastEventId };
      }
      data = [];
      event = "";
      return;
    }
    if (text.startsWith(":")) {
      yield { kind: "comment", text: text.slice(1).replace(/^ /, "") };
      return;
    }
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    const value = colon === -1 ? "" : text.slice(colon + 1).replace(/^ /, "");
    switch (field) {
      case "event":
        event = value;
        break;
      case "data":
        data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) yield { kind: "retry", ms: Number(value) };
        break;
      default: // unknown fields are ignored
    }
  }

  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      if (first && buffer.length > 0) {
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
        first = false;
      }
      if (pendingCR && buffer.startsWith("\n")) buffer = buffer.slice(1);
      pendingCR = false;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer.charCodeAt(i);
        if (c !== 10 && c !== 13) continue;
        yield* line(buffer.slice(start, i));
        if (c === 13) {
          if (i + 1 === buffer.length) pendingCR = true;
          else if (buffer.charCodeAt(i + 1) === 10) i++;
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
      if (done) return; // an unterminated last event is dropped, as the standard says
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
