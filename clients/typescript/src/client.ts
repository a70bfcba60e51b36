// The client: openapi-fetch over the generated schema, with the token, Retry-After and the
// error envelope as middlewares, and the event stream.
import createClient, { type Client, type ClientOptions } from "openapi-fetch";

import {
  type EventSourceLike,
  type EventSourceOptions,
  openEventSource,
  type SessionEvent,
  sessionEvents,
  type SessionEventsOptions,
  streamTicket,
} from "./events.js";
import { authMiddleware, errorMiddleware, type RetryOptions, retryAfterMiddleware, type TokenSource } from "./middleware.js";
import type { paths } from "./schema.js";

export interface BotSessionClientOptions {
  /** The API's root, e.g. "https://botsession.example" (no /v1). */
  baseUrl: string;
  /** An API token with the scopes the calls need, or a function returning the current one. */
  token?: TokenSource;
  /** Retry-After handling on 429 and 503; `false` throws those at once. */
  retry?: RetryOptions | false;
  /** A fetch of your own (tests, instrumentation). Default: globalThis.fetch. */
  fetch?: (request: Request) => Promise<Response>;
  /** Headers sent with every request. */
  headers?: ClientOptions["headers"];
}

/**
 * openapi-fetch's typed client (`GET`, `POST`, ... with the API's paths, parameters and
 * bodies) whose calls throw BotSessionError for every non-2xx answer, so `data` is there
 * whenever they return; plus the event stream.
 */
export type BotSessionClient = Client<paths> & {
  /** The session events as an async iterator (Node, servers; see `sessionEvents`). */
  sessionEvents(options?: SessionEventsOptions): AsyncGenerator<SessionEvent, void, undefined>;
  /** A stream ticket for a browser's EventSource. */
  streamTicket(): Promise<{ ticket: string; expiresAt: string }>;
  /** For browsers: a ticket, then an EventSource with `?ticket=` (see `openEventSource`). */
  openEventSource<T extends EventSourceLike = EventSource>(
    options?: EventSourceOptions<T>,
  ): Promise<{ source: T; url: string; ticket: string; expiresAt: string }>;
};

export function createBotSessionClient(options: BotSessionClientOptions): BotSessionClient {
  const client = createClient<paths>({
    baseUrl: options.baseUrl,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.headers ? { headers: options.headers } : {}),
  });
  // onRequest runs in this order, onResponse in the reverse one: the token is on the copy the
  // retries send, and the error is thrown only once the retries are done
  if (options.token !== undefined) client.use(authMiddleware(options.token));
  client.use(errorMiddleware());
  if (options.retry !== false) client.use(retryAfterMiddleware(options.retry ?? {}));
  return Object.assign(client, {
    sessionEvents: (eventOptions?: SessionEventsOptions) => sessionEvents(client, eventOptions),
    streamTicket: () => streamTicket(client),
    openEventSource: <T extends EventSourceLike = EventSource>(sourceOptions?: EventSourceOptions<T>) =>
      openEventSource<T>(client, options.baseUrl, sourceOptions),
  });
}

/**
 * `data` of an answer, typed without `undefined`: the client's calls throw for every
 * non-2xx, so it is always there (except for bodiless answers, which the API has none of).
 */
export async function unwrap<T>(call: Promise<{ data?: T; response: Response }>): Promise<T> {
  const { data, response } = await call;
  if (data === undefined) throw new Error(`HTTP ${response.status} answered without a body`);
  return data;
}
