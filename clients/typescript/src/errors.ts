/**
 * The one error type the client rejects with (configuration mistakes aside, which are
 * `TypeError`/`RangeError` from {@link configure}).
 *
 * @module errors
 */

/** One event the server refused: its index in the request and why. */
export interface Rejection {
  index: number;
  reason: string;
}

/** What went wrong, independent of the message text. */
export type RuntallyErrorCode =
  /** 400: the server refused an event (see {@link RuntallyError.rejected}). */
  | 'rejected'
  /** 401: missing or wrong token (`RUNTALLY_TOKEN`). */
  | 'unauthorized'
  /** 413: the request is larger than the server's `--max-body-bytes`. */
  | 'payload_too_large'
  /** 415: the server did not accept the content type. */
  | 'unsupported_media_type'
  /** 429 on every attempt: the server's queue stayed full. */
  | 'full'
  /** 503 on every attempt: the server is shutting down. */
  | 'unavailable'
  /** No HTTP answer on any attempt: connection refused or reset, DNS, TLS. */
  | 'network'
  /** No complete answer within `timeoutMs` on any attempt. */
  | 'timeout'
  /** Any other HTTP status (not retried). */
  | 'http';

/** Details of a {@link RuntallyError}. */
export interface RuntallyErrorDetails {
  status: number | null;
  code: RuntallyErrorCode;
  rejected?: Rejection[];
  accepted?: number;
  attempts: number;
  body?: unknown;
  cause?: unknown;
}

/**
 * A call to `runtally serve` failed. `status` is the HTTP status of the last answer (`null` when
 * none came), `code` says what it means, `rejected` lists the refused events of a 400.
 *
 * @example
 * try {
 *   await persistTaskExecutionToNeo4j(gm, executionId, taskId, result, task);
 * } catch (e) {
 *   if (e instanceof RuntallyError && e.status === 400) console.error(e.rejected);
 * }
 */
export class RuntallyError extends Error {
  override readonly name = 'RuntallyError';
  /** HTTP status of the last answer, or `null` if no answer came (network error, timeout). */
  readonly status: number | null;
  /** What went wrong. */
  readonly code: RuntallyErrorCode;
  /** For a 400 (and a 429): the events the server refused, by index in the request. */
  readonly rejected: Rejection[];
  /** Events the server applied from the last request. */
  readonly accepted: number;
  /** Attempts made, the first included. */
  readonly attempts: number;
  /** The last answer's body, parsed as JSON when it was JSON. */
  readonly body: unknown;

  constructor(message: string, details: RuntallyErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.status = details.status;
    this.code = details.code;
    this.rejected = details.rejected ?? [];
    this.accepted = details.accepted ?? 0;
    this.attempts = details.attempts;
    this.body = details.body;
  }
}
