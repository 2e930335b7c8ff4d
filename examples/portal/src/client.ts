// The portal's one way to the API: fetch() with the member's token, naming each operation by the
// hash GraphQL Code Generator gave it (`documentId`, as Code Generator's persisted documents guide
// sends it). tihuo runs a document of its trusted manifest (TIHUO_TRUSTED_DOCUMENTS, the
// persisted-documents.json of this build) from the hash alone; a server without that manifest
// answers PersistedQueryNotFound, and the text is sent instead. Queries go as GET (a catalog read
// may then be cached briefly), mutations as POST.
import type { TypedDocumentString } from "./gql/graphql.js";

export interface Api {
  /** e.g. https://cards.example.com/graphql */
  url: string;
  /** the token from signIn(); absent before signing in */
  token?: string;
  language?: "zh-CN" | "en";
}

interface Answer {
  data?: unknown;
  errors?: { message: string; extensions?: { code?: string } }[];
}

/** A top-level error: UNAUTHENTICATED, FORBIDDEN, a refused request (business errors are data). */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Variables<V> = V extends Record<string, never> ? [] : [variables: V];

export async function execute<R, V>(
  api: Api,
  document: TypedDocumentString<R, V>,
  ...[variables]: Variables<V>
): Promise<R> {
  const documentId: unknown = document.__meta__?.hash;
  if (typeof documentId !== "string") {
    throw new Error("a document without its hash: run `npm run codegen`");
  }
  const text = document.toString();
  const overGet = /^\s*query\b/.test(text);
  let answer = await send(api, { documentId, variables: variables ?? {} }, overGet);
  if (answer.errors?.some((error) => error.extensions?.code === "PERSISTED_QUERY_NOT_FOUND")) {
    answer = await send(api, { query: text, variables: variables ?? {} }, false);
  }
  const [first] = answer.errors ?? [];
  if (first !== undefined) {
    throw new ApiError(first.extensions?.code ?? "UNKNOWN", first.message);
  }
  return answer.data as R;
}

async function send(api: Api, request: Record<string, unknown>, overGet: boolean): Promise<Answer> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (api.token !== undefined) headers.Authorization = `Bearer ${api.token}`;
  if (api.language !== undefined) headers["Accept-Language"] = api.language;
  let response: Response;
  if (overGet) {
    const url = new URL(api.url);
    for (const [name, value] of Object.entries(request)) {
      url.searchParams.set(name, typeof value === "string" ? value : JSON.stringify(value));
    }
    response = await fetch(url, { headers });
  } else {
    headers["Content-Type"] = "application/json";
    response = await fetch(api.url, { method: "POST", headers, body: JSON.stringify(request) });
  }
  return (await response.json()) as Answer;
}
