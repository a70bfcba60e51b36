// openapi-fetch middlewares: the bearer token, Retry-After honoured, the error envelope
// thrown as BotSessionError. The requests themselves are openapi-fetch's, typed by the
// generated schema.
import type { Middleware } from "openapi-fetch";

import { errorFromResponse, parseRetryAfter } from "./errors.js";

/** A token, or a function that returns the current one (for tokens that rotate). */
export type TokenSource = string | (() => string | Promise<string>);

/** Sets `Authorization: Bearer <token>` on every request. */
export function authMiddleware(token: TokenSource): Middleware {
  return {
    async onRequest({ request }) {
      const value = typeof token === "function" ? await token() : token;
      request.headers.set("Authorization", `Bearer ${value}`);
      return request;
    },
  };
}

/** Throws BotSessionError (EventsExpiredError for 410 events_expired) for every non-2xx. */
export function errorMiddleware(): Middleware {
  return {
    async onResponse({ request, response }) {
      if (!response.ok) {
        throw await errorFromResponse(response, { method: request.method, url: request.url });
      }
      return undefined;
    },
  };
}

export interface RetryOptions {
  /** Statuses retried when they carry `Retry-After`. Default: 429 and 503. */
  statuses?: readonly number[];
  /** Retries of one request at most. Default 3. */
  maxRetries?: number;
  /**
   * Milliseconds one request may spend waiting in all. A `Retry-After` that does not fit in
   * what is left is not waited for: the answer is thrown at once. Default 30 000.
   */
  maxTotalWaitMs?: number;
  /** Called before each wait, e.g. to log it. */
  onRetry?: (retry: { attempt: number; waitMs: number; status: number; url: string }) => void;
}

const DEFAULT_STATUSES = [429, 503] as const;

function sleep(ms: number, signal: AbortSignal | null | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const done = () => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const aborted = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

/**
 * Honours `Retry-After` on 429 `rate_limited` and 503 (`store_unavailable`, `overloaded`):
 * waits what it says and sends the request again, at most `maxRetries` times and
 * `maxTotalWaitMs` in all; then the last answer goes on (and errorMiddleware throws it, with
 * its `retryAfter`). The API wrote nothing when it answered these, so a report or a clear is
 * as safe to send again as a read. Answers without `Retry-After` are not retried.
 */
export function retryAfterMiddleware(options: RetryOptions = {}): Middleware {
  const statuses = options.statuses ?? DEFAULT_STATUSES;
  const maxRetries = options.maxRetries ?? 3;
  const maxTotalWaitMs = options.maxTotalWaitMs ?? 30_000;
  const originals = new Map<string, Request>();
  return {
    onRequest({ request, id }) {
      // the body is gone once the request was sent: keep a copy to send again
      originals.set(id, request.clone());
      return undefined;
    },
    async onResponse({ response, id, options: fetchOptions }) {
      const original = originals.get(id);
      originals.delete(id);
      if (original === undefined) return undefined;
      let current = response;
      let waited = 0;
      for (let attempt = 1; attempt <= maxRetries && statuses.includes(current.status); attempt++) {
        const seconds = parseRetryAfter(current.headers.get("Retry-After"));
        if (seconds === undefined) break;
        const waitMs = Math.ceil(seconds * 1000);
        if (waited + waitMs > maxTotalWaitMs) break;
        options.onRetry?.({ attempt, waitMs, status: current.status, url: original.url });
        await current.body?.cancel();
        await sleep(waitMs, original.signal);
        waited += waitMs;
        current = await fetchOptions.fetch(original.clone());
      }
      return current === response ? undefined : current;
    },
    onError({ id }) {
      originals.delete(id);
      return undefined;
    },
  };
}
