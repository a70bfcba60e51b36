// The session event stream (docs/api.md, "Session events"): GET /v1/whatsapp/session-events
// as Server-Sent Events. In Node and on servers: fetch streaming with the bearer token,
// resumed with Last-Event-ID after a dropped connection. In browsers: a stream ticket and
// an EventSource (which cannot send the Authorization header).
import type { Client } from "openapi-fetch";

import { BotSessionError } from "./errors.js";
import type { components, paths } from "./schema.js";
import { parseEventStream } from "./sse.js";

export type Phase = components["schemas"]["Phase"];
export type Reason = components["schemas"]["Reason"];

interface SessionEventBase {
  /** The stream id ("<ms>-<n>"): orders all events; resume after it with `lastEventId`. */
  id: string;
  botId: string;
  userId: string;
  /** `botId` + `userId` + `incarnation` + `revision` identify an event: drop repeats by it. */
  incarnation: number;
  revision: number;
  /** Who caused it: the API token's name, or the operator. */
  actor: string;
  /** ISO 8601 UTC, to the second. */
  at: string;
}

/** `event: transition`: the session moved from `from` (null for its first phase) to `to`. */
export interface TransitionEvent extends SessionEventBase {
  type: "transition";
  from: Phase | null;
  to: Phase;
  reason: Reason;
}

/** `event: removed`: the session's BotSession was deleted; `from` was its last phase. */
export interface RemovedEvent extends SessionEventBase {
  type: "removed";
  from: Phase | null;
  to: null;
  reason: null;
}

export type SessionEvent = TransitionEvent | RemovedEvent;

export interface SessionEventsOptions {
  /** Only this bot's events. */
  botId?: string;
  /** With `botId`: only this session's. */
  userId?: string;
  /**
   * Start after this event id (replaying what came after it); "0" replays everything kept.
   * Without it the stream starts with what happens from now on.
   */
  lastEventId?: string;
  /** Stops the stream: the iteration then ends without an error. */
  signal?: AbortSignal;
  /**
   * Reconnections in a row that fail to open the stream before giving up with the last
   * error. Default: unlimited (as EventSource).
   */
  maxReconnects?: number;
  /** Longest wait between reconnections, in ms (the waits double from the server's `retry`). Default 30 000. */
  maxReconnectDelayMs?: number;
  /** Called each time the stream is open (the server's first frame arrived). */
  onOpen?: () => void;
  /** Called before each reconnection, with why and how long it waits. */
  onReconnect?: (reconnect: { attempt: number; delayMs: number; lastEventId: string | undefined; error: unknown }) => void;
}

const EVENTS = "/v1/whatsapp/session-events";
const TICKETS = "/v1/whatsapp/session-events/tickets";
const KINDS = new Set(["transition", "removed"]);

function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Errors a reconnection cannot fix: the token, the filters, an expired position. */
function isFinal(error: unknown): boolean {
  return error instanceof BotSessionError && error.status < 500 && error.status !== 429 && error.status !== 408;
}

/**
 * The session events as an async iterator, over fetch streaming with the client's token.
 * After a dropped connection (or the server cutting off a slow client) it waits the
 * server's `retry` (doubling while reconnecting fails, up to `maxReconnectDelayMs`) and
 * reconnects with `Last-Event-ID`, so no event is missed and none repeats. Errors before
 * the stream starts are thrown as BotSessionError: `EventsExpiredError` (410
 * `events_expired`) when the position asked for is no longer kept; 401, 403 and 422 at
 * once; 5xx and network errors are retried. Breaking out of the loop or aborting `signal`
 * closes the connection.
 */
export async function* sessionEvents(
  client: Client<paths>,
  options: SessionEventsOptions = {},
): AsyncGenerator<SessionEvent, void, undefined> {
  const { signal } = options;
  const maxDelay = options.maxReconnectDelayMs ?? 30_000;
  let lastEventId = options.lastEventId;
  let retryMs = 1_000;
  let failures = 0;
  while (!signal?.aborted) {
    let error: unknown;
    try {
      const { data: body } = await client.GET(EVENTS, {
        params: {
          query: { botId: options.botId, userId: options.userId },
          header: lastEventId === undefined ? {} : { "Last-Event-ID": lastEventId },
        },
        parseAs: "stream",
        ...(signal ? { signal } : {}),
      });
      if (!body) throw new Error("the event stream answered without a body");
      let opened = false;
      for await (const frame of parseEventStream(body, lastEventId ?? "")) {
        if (!opened) {
          opened = true;
          failures = 0;
          options.onOpen?.();
        }
        if (frame.kind === "retry") {
          retryMs = frame.ms;
        } else if (frame.kind === "event") {
          lastEventId = frame.lastEventId || lastEventId;
          if (KINDS.has(frame.event)) {
            yield JSON.parse(frame.data) as SessionEvent;
          }
        }
      }
    } catch (caught) {
      if (signal?.aborted) return;
      if (isFinal(caught)) throw caught;
      error = caught;
    }
    if (signal?.aborted) return;
    failures += 1;
    if (options.maxReconnects !== undefined && failures > options.maxReconnects) {
      throw error ?? new Error("the event stream kept closing");
    }
    const retryAfter = error instanceof BotSessionError && error.retryAfter !== undefined ? error.retryAfter * 1000 : 0;
    const delayMs = Math.max(retryAfter, Math.min(maxDelay, retryMs * 2 ** Math.max(0, failures - 1)));
    options.onReconnect?.({ attempt: failures, delayMs, lastEventId, error });
    await pause(delayMs, signal);
  }
}

/** A stream ticket for a browser's EventSource: `POST /v1/whatsapp/session-events/tickets`. */
export async function streamTicket(client: Client<paths>): Promise<{ ticket: string; expiresAt: string }> {
  const { data } = await client.POST(TICKETS);
  if (!data) throw new Error("the ticket endpoint answered without a body");
  return { ticket: data.ticket, expiresAt: data.expiresAt };
}

/** What `openEventSource` needs of an EventSource class (the browser's, or a polyfill). */
export interface EventSourceLike {
  addEventListener(type: string, listener: (event: MessageEvent<string>) => void): void;
  close(): void;
  readonly readyState: number;
}
export type EventSourceConstructor<T extends EventSourceLike = EventSource> = new (url: string) => T;

export interface EventSourceOptions<T extends EventSourceLike = EventSource> {
  botId?: string;
  userId?: string;
  /** Resume after this event id (`?lastEventId=`): after a ticket expired, the last id seen. */
  lastEventId?: string;
  /** Default: globalThis.EventSource. */
  EventSource?: EventSourceConstructor<T>;
}

/**
 * For browsers: trades the client's token for a stream ticket and opens an EventSource on
 * the event stream with `?ticket=` (never the token in a URL). The EventSource reconnects
 * and resumes with Last-Event-ID by itself while the ticket lasts (1 hour); when it has
 * expired the stream is refused (the EventSource closes, `readyState` 2): call this again
 * with `lastEventId` set to the last event's `id`. Listen with `onSessionEvent`.
 */
export async function openEventSource<T extends EventSourceLike = EventSource>(
  client: Client<paths>,
  baseUrl: string,
  options: EventSourceOptions<T> = {},
): Promise<{ source: T; url: string; ticket: string; expiresAt: string }> {
  const { ticket, expiresAt } = await streamTicket(client);
  const query = new URLSearchParams();
  if (options.botId !== undefined) query.set("botId", options.botId);
  if (options.userId !== undefined) query.set("userId", options.userId);
  if (options.lastEventId !== undefined) query.set("lastEventId", options.lastEventId);
  query.set("ticket", ticket);
  const base = baseUrl.replace(/\/+$/, "");
  const url = `${base}${EVENTS}?${query.toString()}`;
  const Source = options.EventSource ?? (globalThis.EventSource as unknown as EventSourceConstructor<T> | undefined);
  if (!Source) throw new Error("no EventSource here: pass one, or use sessionEvents()");
  return { source: new Source(url), url, ticket, expiresAt };
}

/** Calls `handler` with each typed session event an EventSource receives. */
export function onSessionEvent(source: EventSourceLike, handler: (event: SessionEvent) => void): void {
  for (const kind of KINDS) {
    source.addEventListener(kind, (message) => handler(JSON.parse(message.data) as SessionEvent));
  }
}
