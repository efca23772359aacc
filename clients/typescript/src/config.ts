/**
 * Where the client sends events and how hard it tries. Process-wide, like the seed's module-level
 * graph manager: set once with {@link configure}, or through the environment.
 *
 * Each setting resolves, on every call, to the value given to {@link configure}, else the
 * environment variable (for `url` and `token`), else the documented default.
 *
 * @module config
 */

/** `RUNTALLY_URL`'s default: `runtally serve`'s default listen address. */
export const DEFAULT_URL = 'http://127.0.0.1:4319';
/** Default time allowed for one HTTP attempt, response body included, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Default attempts per call, the first included. */
export const DEFAULT_MAX_ATTEMPTS = 6;

/** Settings for {@link configure}; a key left out keeps its current value. */
export interface RuntallyClientOptions {
  /**
   * Base URL of `runtally serve` (`http:` or `https:`); events go to `${url}/v1/events`.
   * Default: env `RUNTALLY_URL`, else {@link DEFAULT_URL}.
   */
  url?: string | undefined;
  /**
   * Bearer token (`Authorization: Bearer …`). `null` sends none even if `RUNTALLY_TOKEN` is set.
   * Default: env `RUNTALLY_TOKEN`, else none.
   */
  token?: string | null | undefined;
  /** Time allowed for one attempt, in milliseconds. Default {@link DEFAULT_TIMEOUT_MS}. */
  timeoutMs?: number | undefined;
  /**
   * Attempts per call, the first included (1 = never retry). Default {@link DEFAULT_MAX_ATTEMPTS}.
   */
  maxAttempts?: number | undefined;
  /**
   * Print the seed's own log lines (`💾 Created execution node: …`, and `⚠️ Failed to …` on
   * `console.error` before a rejection). Default `true`, as the seed does.
   */
  log?: boolean | undefined;
}

/** The settings in force for one call. */
export interface ResolvedConfig {
  /** Base URL, without a trailing slash. */
  url: string;
  token: string | null;
  timeoutMs: number;
  maxAttempts: number;
  log: boolean;
}

let overrides: RuntallyClientOptions = {};

function checkUrl(url: string, from: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`${from} is not a valid URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(`${from} must be an http: or https: URL, not ${JSON.stringify(url)}`);
  }
  return url.replace(/\/+$/, '');
}

/**
 * Sets the client's configuration for the whole process. Keys left out keep their value; a key
 * given as `undefined` goes back to its environment variable or default.
 *
 * @throws {TypeError} If `url` is not an http(s) URL or `token`/`log` has the wrong type.
 * @throws {RangeError} If `timeoutMs` is not a positive finite number or `maxAttempts` not an
 *   integer of at least 1.
 *
 * @example
 * configure({ url: 'http://127.0.0.1:4319', token: process.env.MY_TOKEN, maxAttempts: 8 });
 */
export function configure(options: RuntallyClientOptions): void {
  const next: RuntallyClientOptions = { ...overrides };
  if ('url' in options) {
    if (options.url !== undefined && typeof options.url !== 'string') {
      throw new TypeError('configure: url must be a string');
    }
    next.url = options.url === undefined ? undefined : checkUrl(options.url, 'configure: url');
  }
  if ('token' in options) {
    const token = options.token;
    if (token !== undefined && token !== null && typeof token !== 'string') {
      throw new TypeError('configure: token must be a string or null');
    }
    next.token = token;
  }
  if ('timeoutMs' in options) {
    const ms = options.timeoutMs;
    if (ms !== undefined && !(typeof ms === 'number' && Number.isFinite(ms) && ms > 0)) {
      throw new RangeError(`configure: timeoutMs must be a positive number of milliseconds, not ${String(ms)}`);
    }
    next.timeoutMs = ms;
  }
  if ('maxAttempts' in options) {
    const n = options.maxAttempts;
    if (n !== undefined && !(Number.isInteger(n) && (n as number) >= 1)) {
      throw new RangeError(`configure: maxAttempts must be an integer of at least 1, not ${String(n)}`);
    }
    next.maxAttempts = n;
  }
  if ('log' in options) {
    if (options.log !== undefined && typeof options.log !== 'boolean') {
      throw new TypeError('configure: log must be a boolean');
    }
    next.log = options.log;
  }
  overrides = next;
}

/** Forgets everything {@link configure} set: the environment and defaults apply again. */
export function resetConfiguration(): void {
  overrides = {};
}

/**
 * The settings in force now.
 *
 * @throws {TypeError} If `RUNTALLY_URL` is set to something that is not an http(s) URL.
 * @internal
 */
export function resolveConfig(env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const envUrl = env['RUNTALLY_URL'] || undefined;
  const envToken = env['RUNTALLY_TOKEN'] || undefined;
  return {
    url: overrides.url ?? (envUrl !== undefined ? checkUrl(envUrl, 'RUNTALLY_URL') : DEFAULT_URL),
    token: overrides.token !== undefined ? overrides.token : (envToken ?? null),
    timeoutMs: overrides.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    maxAttempts: overrides.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    log: overrides.log ?? true,
  };
}
