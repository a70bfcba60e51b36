// The API's error envelope as typed errors (docs/api.md, "Errors"): every 4xx and 5xx is
// {"success": false, "error": {"code", "message", ...}}.
import type { components } from "./schema.js";

/** The envelope's `error` object: `code`, `message` and the code's extra fields. */
export type ErrorInfo = components["schemas"]["ErrorInfo"];
/** The whole envelope, `{success: false, error}`. */
export type ErrorEnvelope = components["schemas"]["ErrorResponse"];
/** `invalid_input`'s per-field problems: `[{field, message}]`. */
export type ErrorDetails = NonNullable<ErrorInfo["details"]>;

/**
 * A non-2xx answer of the API. `code` is the envelope's machine-readable code
 * (`session_not_found`, `transition_refused`, `rate_limited`, ...; docs/api.md, "Errors");
 * `info` holds the whole `error` object with the code's extra fields (`current`, `allowed`,
 * `required`, `store`, `limit`, ...). An answer that is not the envelope (a proxy's error
 * page) gets the code `http_<status>`.
 */
export class BotSessionError extends Error {
  override readonly name: string = "BotSessionError";
  /** The HTTP status. */
  readonly status: number;
  /** The envelope's `error.code`. */
  readonly code: string;
  /** `invalid_input`'s `[{field, message}]`, when the request did not validate. */
  readonly details: ErrorDetails | undefined;
  /** The envelope's whole `error` object. */
  readonly info: ErrorInfo;
  /** Seconds the `Retry-After` header asked for (429, 503, 409 session_deleting), if any. */
  readonly retryAfter: number | undefined;
  /** The method and URL of the request that failed. */
  readonly request: { method: string; url: string } | undefined;

  constructor(
    status: number,
    info: ErrorInfo,
    options: { retryAfter?: number | undefined; request?: { method: string; url: string }; cause?: unknown } = {},
  ) {
    super(info.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = status;
    this.code = info.code;
    this.info = info;
    this.details = info.details ?? undefined;
    this.retryAfter = options.retryAfter;
    this.request = options.request;
  }
}

/**
 * `410 events_expired`: the events after the `Last-Event-ID` asked for are no longer kept.
 * Read the sessions' status, then open the stream again without `lastEventId`.
 */
export class EventsExpiredError extends BotSessionError {
  override readonly name: string = "EventsExpiredError";
}

/** Whether `body` is the API's error envelope. */
export function isErrorEnvelope(body: unknown): body is ErrorEnvelope {
  if (typeof body !== "object" || body === null) return false;
  const error = (body as { error?: unknown }).error;
  return (
    typeof error === "object" &&
    error !== null &&
    typeof (error as { code?: unknown }).code === "string" &&
    typeof (error as { message?: unknown }).message === "string"
  );
}

/**
 * `Retry-After` in seconds: delay-seconds or an HTTP date (RFC 9110); undefined when absent
 * or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}

/** The error a non-2xx `response` stands for; reads its body. */
export async function errorFromResponse(
  response: Response,
  request?: { method: string; url: string },
): Promise<BotSessionError> {
  let body: unknown;
  let text = "";
  try {
    text = await response.text();
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const info: ErrorInfo = isErrorEnvelope(body)
    ? body.error
    : {
        code: `http_${response.status}`,
        message: `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}${
          text ? `: ${text.slice(0, 200)}` : ""
        }`,
      };
  const options = { retryAfter: parseRetryAfter(response.headers.get("Retry-After")), ...(request ? { request } : {}) };
  return info.code === "events_expired"
    ? new EventsExpiredError(response.status, info, options)
    : new BotSessionError(response.status, info, options);
}
