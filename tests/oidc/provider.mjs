// A real OpenID provider (the certified `oidc-provider` package) for tihuo's portal sign-in tests,
// started by tests/oidc_provider.py on a free loopback port. It prints one JSON line,
// {"issuer": ..., "port": ...}, once it listens.
//
// It issues JWT access tokens for the resource `urn:tihuo` (audience from AUDIENCE) to the client
// `tihuo-tests` by the client-credentials grant. A test names the member the token stands for in
// the form field `tihuo_claims` (JSON: sub, phone_number, roles, name, id_verified, auth_time),
// which a JWT customizer copies into the token: the portal's own login is not what is tested.
//
// A few control routes (never in a real provider) let the tests act on it:
//   POST /control/rotate?alg=RS256|ES256|EdDSA  a new signing key, published first in the JWKS
//                                               (the older keys stay published, as in a rotation)
//   GET  /control/keys                          the private keys, to craft bad tokens with
//   GET  /control/stats                         how often the JWKS was fetched
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const AUDIENCE = process.env.AUDIENCE || 'urn:tihuo';
const CLIENT = {
  client_id: 'tihuo-tests',
  client_secret: 'tests-only-client-secret',
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_post',
};
const CURVES = { RS256: ['rsa', { modulusLength: 2048 }], ES256: ['ec', { namedCurve: 'P-256' }], EdDSA: ['ed25519', {}] };

const keys = [];
let signingAlg = 'RS256';
let jwksRequests = 0;
let provider;
let issuer;

function newKey(alg) {
  const [type, options] = CURVES[alg];
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg, use: 'sig' };
}

function build() {
  const made = new Provider(issuer, {
    clients: [CLIENT],
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'tihuo',
          audience: AUDIENCE,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: signingAlg } },
        }),
      },
    },
    formats: {
      customizers: {
        jwt(ctx, _token, jwt) {
          const asked = ctx?.oidc?.body?.tihuo_claims;
          if (asked) Object.assign(jwt.payload, JSON.parse(asked));
        },
      },
    },
  });
  made.proxy = false;
  return made;
}

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/control/rotate' && req.method === 'POST') {
    signingAlg = url.searchParams.get('alg') || 'RS256';
    keys.unshift(newKey(signingAlg));
    provider = build();
    return answer(res, 200, { kid: keys[0].kid, alg: signingAlg });
  }
  if (url.pathname === '/control/keys') return answer(res, 200, { keys });
  if (url.pathname === '/control/stats') return answer(res, 200, { jwksRequests });
  if (url.pathname === '/jwks') jwksRequests += 1;
  return provider.callback()(req, res);
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  keys.push(newKey('RS256'));
  provider = build();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
