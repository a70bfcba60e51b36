// @botsession/client: the botsession API's TypeScript client (docs in README.md).
export { type BotSessionClient, type BotSessionClientOptions, createBotSessionClient, unwrap } from "./client.js";
export {
  BotSessionError,
  type ErrorDetails,
  type ErrorEnvelope,
  type ErrorInfo,
  errorFromResponse,
  EventsExpiredError,
  isErrorEnvelope,
  parseRetryAfter,
} from "./errors.js";
export {
  type EventSourceConstructor,
  type EventSourceLike,
  type EventSourceOptions,
  onSessionEvent,
  openEventSource,
  type Phase,
  type Reason,
  type RemovedEvent,
  type SessionEvent,
  sessionEvents,
  type SessionEventsOptions,
  streamTicket,
  type TransitionEvent,
} from "./events.js";
export {
  authMiddleware,
  errorMiddleware,
  type RetryOptions,
  retryAfterMiddleware,
  type TokenSource,
} from "./middleware.js";
export type { components, operations, paths } from "./schema.js";
export { type SseFrame, parseEventStream } from "./sse.js";

import type { components } from "./schema.js";

/** The API's schemas by name, e.g. `Schemas["StatusResponse"]`. */
export type Schemas = components["schemas"];
