/**
 * `POST /v1/events` with bounded retries.
 *
 * Retrying is safe because the server is idempotent: a task result is keyed by executionId and
 * taskId (a resent one replaces, never adds), and a repeated `run_started` of a live or recently
 * ended run is a no-op. So a request whose answer was lost, or that was refused with 429 after
 * part of it was applied, is simply sent again whole.
 *
 * @module transport
 */

import { setTimeout as sleep } from 'node:timers/promises';

import type { ResolvedConfig } from './config.js';
import { RuntallyError, type Rejection, type RuntallyErrorCode } from './errors.js';
import { describeEvent, type RuntallyEvent } from './events.js';

/** First backoff delay after a failed attempt without `Retry-After`, in milliseconds. */
export const BACKOFF_BASE_MS = 100;
/** Longest backoff delay, in milliseconds. */
export const BACKOFF_MAX_MS = 5_000;
/** Longest `Retry-After` honoured, in milliseconds: a larger one is cut to this. */
export const RETRY_AFTER_MAX_MS = 60_000;

const USER_AGENT = 'runtally-ts-client/0.1.0';

/**
 * A `Retry-After` value in milliseconds: delta-seconds (what `runtally serve` sends) or an
 * HTTP date; `null` when absent or unreadable.
 *
 * @internal Exported for tests.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.min(Number(text) * 1000, RETRY_AFTER_MAX_MS);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return null;
  return Math.min(Math.max(date - now, 0), RETRY_AFTER_MAX_MS);
}

/**
 * How long to wait after failed attempt number `attempt` (1-based): the server's `Retry-After`
 * when it gave one, else exponential backoff from {@link BACKOFF_BASE_MS} up to
 * {@link BACKOFF_MAX_MS} with "equal jitter" (half fixed, half random) so that many clients
 * refused at once do not all come back at once.
 *
 * @internal Exported for tests.
 */
export function retryDelayMs(attempt: number, retryAfter: string | null, random: () => number = Math.random): number {
  const told = parseRetryAfter(retryAfter);
  if (told !== null) return told;
  const ceiling = Math.min(BACKOFF_BASE_MS * 2 ** (attempt - 1), BACKOFF_MAX_MS);
  return ceiling / 2 + random() * (ceiling / 2);
}

/** What a successful request returned. */
export interface Delivery {
  accepted: number;
  attempts: number;
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function field<T>(body: unknown, name: string, check: (v: unknown) => v is T): T | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const value = (body as Record<string, unknown>)[name];
  return check(value) ? value : undefined;
}

const isNumber = (v: unknown): v is number => typeof v === 'number';
const isString = (v: unknown): v is string => typeof v === 'string';
const isRejections = (v: unknown): v is Rejection[] => Array.isArray(v);

function serverSays(body: unknown): string {
  const message = field(body, 'message', isString) ?? field(body, 'error', isString);
  if (message !== undefined) return `: ${message}`;
  if (typeof body === 'string' && body.trim() !== '') return `: ${body.trim().slice(0, 200)}`;
  return '';
}

function rejectionsText(rejected: Rejection[], events: RuntallyEvent[]): string {
  return rejected
    .map((r) => `#${r.index} ${describeEvent(events[r.index])}: ${r.reason}`)
    .join('; ');
}

const STATUS_CODES: Record<number, RuntallyErrorCode> = {
  400: 'rejected',
  401: 'unauthorized',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'full',
  503: 'unavailable',
};

function httpError(
  status: number,
  body: unknown,
  events: RuntallyEvent[],
  endpoint: string,
  attempts: number,
  code: RuntallyErrorCode = STATUS_CODES[status] ?? 'http',
): RuntallyError {
  const rejected = field(body, 'rejected', isRejections) ?? [];
  const accepted = field(body, 'accepted', isNumber) ?? 0;
  const tries = attempts > 1 ? ` (${attempts} attempts)` : '';
  let message: string;
  switch (code) {
    case 'rejected':
      message = rejected.length
        ? `runtally serve rejected ${rejected.length} of ${events.length} event(s): ${rejectionsText(rejected, events)}`
        : `runtally serve answered 400 to ${endpoint}${serverSays(body)}`;
      break;
    case 'unauthorized':
      message = `runtally serve answered 401 unauthorized${serverSays(body)} (set RUNTALLY_TOKEN or configure({token}) to the server's --token)`;
      break;
    case 'payload_too_large':
      message = `runtally serve answered 413: the request (${describeEvent(events[0])}) is larger than its --max-body-bytes`;
      break;
    case 'unsupported_media_type':
      message = `runtally serve answered 415 to a JSON request${serverSays(body)}`;
      break;
    case 'full':
      message = `runtally serve stayed full (429)${tries}${serverSays(body)}`;
      break;
    case 'unavailable':
      message = `runtally serve is unavailable (503)${tries}${serverSays(body)}`;
      break;
    default:
      message = `runtally serve answered ${status} to ${endpoint}${tries}${serverSays(body)}`;
  }
  return new RuntallyError(message, { status, code, rejected, accepted, attempts, body });
}

function transportError(error: unknown, endpoint: string, attempts: number, timeoutMs: number): RuntallyError {
  const name = error instanceof Error ? error.name : '';
  if (name === 'TimeoutError') {
    return new RuntallyError(
      `runtally serve at ${endpoint} did not answer within ${timeoutMs} ms (${attempts} attempt(s))`,
      { status: null, code: 'timeout', attempts, cause: error },
    );
  }
  // fetch wraps the socket error: TypeError('fetch failed', { cause: Error{code:'ECONNREFUSED'} }).
  const cause = error instanceof Error ? (error.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  const detail = String(cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : error));
  return new RuntallyError(`cannot reach runtally serve at ${endpoint} (${detail}) after ${attempts} attempt(s)`, {
    status: null,
    code: 'network',
    attempts,
    cause: error,
  });
}

/**
 * Sends `events` as one JSON array and resolves once the server has accepted all of them.
 * Retries network errors, timeouts, 429 and 503 up to `maxAttempts` attempts in all; rejects at
 * once on any other non-2xx answer. An empty list sends nothing.
 *
 * @throws {RuntallyError} On a refusal, or when the attempts run out.
 */
export async function postEvents(events: RuntallyEvent[], config: ResolvedConfig): Promise<Delivery> {
  if (events.length === 0) return { accepted: 0, attempts: 0 };
  const endpoint = `${config.url}/v1/events`;
  const body = JSON.stringify(events);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json',
    'user-agent': USER_AGENT,
  };
  if (config.token !== null) headers['authorization'] = `Bearer ${config.token}`;

  for (let attempt = 1; ; attempt++) {
    let status: number;
    let retryAfter: string | null;
    let answer: unknown;
    try {
      // One deadline for the whole attempt, the body of the answer included.
      const response = await fetch(endpoint, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(config.timeoutMs),
      });
      status = response.status;
      retryAfter = response.headers.get('retry-after');
      answer = parseBody(await response.text());
    } catch (error) {
      if (attempt >= config.maxAttempts) throw transportError(error, endpoint, attempt, config.timeoutMs);
      await sleep(retryDelayMs(attempt, null));
      continue;
    }

    if (status >= 200 && status < 300) {
      const rejected = field(answer, 'rejected', isRejections) ?? [];
      // The contract answers 200 only with nothing rejected; anything else is still a refusal.
      if (rejected.length > 0) throw httpError(status, answer, events, endpoint, attempt, 'rejected');
      return { accepted: field(answer, 'accepted', isNumber) ?? events.length, attempts: attempt };
    }
    if ((status === 429 || status === 503) && attempt < config.maxAttempts) {
      await sleep(retryDelayMs(attempt, retryAfter));
      continue;
    }
    throw httpError(status, answer, events, endpoint, attempt);
  }
}
