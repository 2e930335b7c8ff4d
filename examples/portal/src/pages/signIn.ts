// The sign-in page: username and password for a token.
import { graphql } from "../gql/index.js";
import { type Api, execute } from "../client.js";

export const SignIn = graphql(`
  mutation SignIn($username: String!, $password: String!) {
    login(input: { username: $username, password: $password }) {
      __typename
      ... on LoginSuccess {
        token
        expiresAt
        viewer {
          id
          username
          role
        }
      }
      ... on Error {
        code
        message
      }
      ... on RateLimitedError {
        retryAfterSeconds
      }
    }
  }
`);

export type SignedIn = { token: string; expiresAt: string; username: string };
export type Refused = { code: string; message: string; retryAfterSeconds?: number };

export async function signIn(api: Api, username: string, password: string): Promise<SignedIn | Refused> {
  const { login } = await execute(api, SignIn, { username, password });
  switch (login.__typename) {
    case "LoginSuccess":
      if (login.viewer.role !== "MEMBER") {
        return { code: "FORBIDDEN", message: "the portal is for members" };
      }
      return { token: login.token, expiresAt: login.expiresAt, username: login.viewer.username };
    case "RateLimitedError":
      return { code: login.code, message: login.message, retryAfterSeconds: login.retryAfterSeconds };
    case "WrongPasswordError":
      return { code: login.code, message: login.message };
  }
}
