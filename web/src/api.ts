// The console's one client of dict.v1.CoreDictService: gRPC-Web (binary
// protobuf) to the origin that served the page, with the signed-in token.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { CoreDictService } from "./gen/dict/v1/dict_pb";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb";

const tokenKey = "core-dict.console.token";

/** The signed-in session: the bearer token and what it says about the caller. */
export interface Session {
  token: string;
  participant: string;
  subject: string;
  scopes: string[];
  /** Expiry, ms since the epoch; 0 when the token names none. */
  expires: number;
}

/** Reads a JWT's claims without checking it (the server checks every call). */
export function parseToken(token: string): Session | undefined {
  const parts = token.trim().split(".");
  if (parts.length !== 3) {
    return undefined;
  }
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const c = JSON.parse(json) as Record<string, unknown>;
    return {
      token: token.trim(),
      participant: typeof c.ispb === "string" ? c.ispb : "",
      subject: typeof c.sub === "string" ? c.sub : "",
      scopes: typeof c.scope === "string" ? c.scope.split(" ").filter(Boolean) : [],
      expires: typeof c.exp === "number" ? c.exp * 1000 : 0,
    };
  } catch {
    return undefined;
  }
}

let session: Session | undefined = (() => {
  const t = sessionStorage.getItem(tokenKey);
  return t ? parseToken(t) : undefined;
})();

export function currentSession(): Session | undefined {
  return session;
}

export function signIn(s: Session): void {
  session = s;
  sessionStorage.setItem(tokenKey, s.token);
}

export function signOut(): void {
  session = undefined;
  sessionStorage.removeItem(tokenKey);
}

const bearer: Interceptor = (next) => async (req) => {
  if (session) {
    req.header.set("Authorization", "Bearer " + session.token);
  }
  return next(req);
};

export const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const dict: Client<typeof CoreDictService> = createClient(CoreDictService, transport);

/** A call's failure as the console shows it: the server's own words. */
export interface Failure {
  code: Code;
  /** The message the server sent (never the code's name alone). */
  message: string;
  /** ErrorInfo's reason, e.g. EntryInvalid. */
  reason: string;
  /** BadRequest's violations: field path (owner.tax_id) to description. */
  fields: Map<string, string>;
  /** RetryInfo's delay in ms, when the server sent one. */
  retryAfterMs?: number;
}

export function failure(err: unknown): Failure {
  const ce = ConnectError.from(err);
  const out: Failure = { code: ce.code, message: ce.rawMessage, reason: "", fields: new Map() };
  for (const info of ce.findDetails(ErrorInfoSchema)) {
    out.reason ||= info.reason;
  }
  for (const br of ce.findDetails(BadRequestSchema)) {
    for (const v of br.fieldViolations) {
      if (!out.fields.has(v.field)) {
        out.fields.set(v.field, v.description);
      }
    }
  }
  for (const ri of ce.findDetails(RetryInfoSchema)) {
    if (ri.retryDelay) {
      out.retryAfterMs = Number(ri.retryDelay.seconds) * 1000 + Math.round(ri.retryDelay.nanos / 1e6);
    }
  }
  if (!out.message) {
    // The server always sends a message; a transport failure may not.
    out.message =
      ce.code === Code.Unavailable || ce.code === Code.Unknown
        ? "The service could not be reached; check the connection and try again."
        : "The request failed.";
  }
  return out;
}

/** A fresh UUID v4 (crypto.randomUUID needs a secure context; this does not). */
export function uuid(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** An end-to-end id for a lookup: E + ISPB + yyyyMMddHHmm (UTC) + 11 characters. */
export function endToEndId(ispb: string, now = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const stamp =
    p(now.getUTCFullYear(), 4) + p(now.getUTCMonth() + 1) + p(now.getUTCDate()) + p(now.getUTCHours()) + p(now.getUTCMinutes());
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const r = crypto.getRandomValues(new Uint8Array(11));
  return "E" + ispb + stamp + Array.from(r, (x) => alphabet[x % alphabet.length]).join("");
}
