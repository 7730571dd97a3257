// A real OpenID Provider (panva/oidc-provider) for oidc-gateway's integration tests.
//
// Loopback only: it binds 127.0.0.1, accepts only loopback redirect URIs, and fetches only
// loopback http URLs (back-channel logout tokens, once a test has set a client's URI).
// Configuration (environment):
//   OP_PORT               required
//   OP_ISSUER             default http://127.0.0.1:$OP_PORT
//   OP_ACCESS_TOKEN_TTL   seconds, default 3600
//   OP_ID_TOKEN_TTL       seconds, default 3600
//   OP_JWKS_FILE          optional: a JSON JWK set of private signing keys ({"keys": [...]}). When the file
//                         exists its keys are used as they are (the first key of an alg signs; all are
//                         published); when it does not, fresh keys are generated and written there, so a
//                         restart with the same file keeps the keys. Unset: fresh keys on every start.
// Prints "oidc-provider listening on <issuer>" once it accepts connections; exits 0 on SIGTERM/SIGINT.
import { readFile, writeFile } from 'node:fs/promises';

import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const port = Number.parseInt(process.env.OP_PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('OP_PORT must be set to a TCP port');
  process.exit(2);
}
const issuer = process.env.OP_ISSUER || `http://127.0.0.1:${port}`;
const seconds = (name, fallback) => Number.parseInt(process.env[name] || `${fallback}`, 10);
const accessTokenTTL = seconds('OP_ACCESS_TOKEN_TTL', 3600);
const idTokenTTL = seconds('OP_ID_TOKEN_TTL', 3600);

// An audience for JWT access tokens: request it with `resource=urn:gateway:api` (RFC 8707).
const API_RESOURCE = 'urn:gateway:api';
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost']);
const CALLBACK_PATH = '/oauth2/callback';

const ACCOUNTS = new Map([
  ['alice', {
    password: 'alice-password',
    claims: {
      sub: 'alice', name: 'Alice Example', preferred_username: 'alice', email: 'alice@example.com',
      email_verified: true, groups: ['admins', 'staff'], phone_number: '+15550100',
    },
  }],
  ['bob', {
    password: 'bob-password',
    claims: {
      sub: 'bob', name: 'Bob Other', preferred_username: 'bob', email: 'bob@other.org',
      email_verified: true, groups: ['staff'],
    },
  }],
]);

function client(clientId, secret, authMethod, idTokenAlg) {
  return {
    client_id: clientId,
    ...(secret ? { client_secret: secret } : {}),
    token_endpoint_auth_method: authMethod,
    id_token_signed_response_alg: idTokenAlg,
    grant_types: ['authorization_code', 'refresh_token', 'implicit',
      ...(secret ? ['client_credentials'] : [])],
    response_types: ['code', 'code id_token', 'id_token'],
    // Placeholders: Client.prototype.redirectUriAllowed below accepts any loopback port.
    redirect_uris: [`http://127.0.0.1${CALLBACK_PATH}`],
    post_logout_redirect_uris: ['http://127.0.0.1/'],
  };
}

const CLIENTS = [
  client('gateway', 'gateway-secret-0123456789abcdef', 'client_secret_basic', 'RS256'),
  client('gateway-post', 'gateway-post-secret-0123456789ab', 'client_secret_post', 'RS256'),
  client('gateway-public', null, 'none', 'RS256'),
  client('gateway-hs', 'gateway-hs-secret-0123456789abcdef01', 'client_secret_basic', 'HS256'),
  client('gateway-es', 'gateway-es-secret-0123456789abcdef01', 'client_secret_basic', 'ES256'),
];

async function signingKey(alg, kid, options = {}) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...options });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

const html = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${html(title)}</title></head>
<body><h1>${html(title)}</h1>
${body}
</body></html>`;
}

function loginPage(uid, clientId, error) {
  return page('Sign in', `<p>to continue to ${html(clientId)}</p>
${error ? `<p class="error" role="alert">${html(error)}</p>` : ''}
<form method="post" action="/interaction/${html(uid)}/login">
  <label for="login">Username</label> <input id="login" name="login" autocomplete="username" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password">
  <button type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, clientId, details) {
  const scopes = [...(details.missingOIDCScope ?? [])];
  const items = scopes.map((scope) => `<li>${html(scope)}</li>`).join('');
  return page('Authorize', `<p>${html(clientId)} asks for:</p><ul>${items}</ul>
<form method="post" action="/interaction/${html(uid)}/confirm"><button type="submit">Allow</button></form>
<form method="post" action="/interaction/${html(uid)}/abort"><button type="submit">Deny</button></form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grants exactly what the consent prompt reported missing (oidc-provider's documented recipe).
async function grantConsent(provider, interaction) {
  const { prompt: { details }, params, session: { accountId } } = interaction;
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

// Koa middleware serving /interaction/:uid[/login|/confirm|/abort]; everything else goes to the OP.
function interactions(provider) {
  const route = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/;
  return async (ctx, next) => {
    const match = route.exec(ctx.path);
    if (!match) return next();
    const [, uid, action] = match;
    const interaction = await provider.interactionDetails(ctx.req, ctx.res);
    if (interaction.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const { prompt, params } = interaction;
    let result;
    if (!action && ctx.method === 'GET') {
      ctx.type = 'html';
      ctx.body = prompt.name === 'login'
        ? loginPage(uid, params.client_id)
        : consentPage(uid, params.client_id, prompt.details);
      return undefined;
    }
    if (ctx.method !== 'POST') ctx.throw(405);
    if (action === 'login') {
      const form = await readForm(ctx.req);
      const account = ACCOUNTS.get(form.get('login') ?? '');
      if (prompt.name !== 'login' || !account || account.password !== form.get('password')) {
        ctx.type = 'html';
        ctx.body = loginPage(uid, params.client_id, 'Invalid username or password.');
        return undefined;
      }
      result = { login: { accountId: account.claims.sub } };
    } else if (action === 'confirm') {
      if (prompt.name !== 'consent') ctx.throw(400, 'no consent prompt');
      result = { consent: { grantId: await grantConsent(provider, interaction) } };
    } else {
      result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: false,
    });
    ctx.status = 303;
    ctx.set('Location', returnTo);
    return undefined;
  };
}

// GET /__test/stats: {"success": {grant_type: n}, "error": {grant_type: n}}; POST /__test/reset zeroes them.
// GET /__test/hits: {path: n}, every request the OP received by path (test endpoints excluded); also reset.
// POST /__test/backchannel (form: client_id, uri, session_required=true|false) sets a client's
// backchannel_logout_uri (a loopback http URL; empty: none) at run time: gateways use random ports.
// With session_required=true the OP also puts `sid` in that client's ID and logout tokens.
function testEndpoints(provider) {
  let stats = { success: {}, error: {} };
  let hits = {};
  const count = (outcome) => (ctx) => {
    const grantType = ctx.oidc?.params?.grant_type ?? 'unknown';
    stats[outcome][grantType] = (stats[outcome][grantType] ?? 0) + 1;
  };
  provider.on('grant.success', count('success'));
  provider.on('grant.error', count('error'));
  return async (ctx, next) => {
    if (!ctx.path.startsWith('/__test/')) hits[ctx.path] = (hits[ctx.path] ?? 0) + 1;
    if (ctx.path === '/__test/stats' && ctx.method === 'GET') {
      ctx.body = stats;
    } else if (ctx.path === '/__test/hits' && ctx.method === 'GET') {
      ctx.body = hits;
    } else if (ctx.path === '/__test/reset' && ctx.method === 'POST') {
      stats = { success: {}, error: {} };
      hits = {};
      ctx.status = 204;
    } else if (ctx.path === '/__test/backchannel' && ctx.method === 'POST') {
      const form = await readForm(ctx.req);
      const uri = form.get('uri') || undefined;
      if (uri !== undefined && !isLoopbackHttp(uri)) ctx.throw(400, 'uri must be a loopback http URL');
      const client = await provider.Client.find(form.get('client_id') ?? '');
      if (!client) ctx.throw(404, 'unknown client');
      // Static clients are built once and cached: the change holds until the next call.
      client.backchannelLogoutUri = uri;
      client.backchannelLogoutSessionRequired = form.get('session_required') !== 'false';
      ctx.status = 204;
    } else {
      return next();
    }
    return undefined;
  };
}

function isLoopbackHttp(value) {
  const url = URL.parse(value);
  return url !== null && url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)
    && !url.username && !url.password && !url.hash;
}

async function generatedKeys() {
  return {
    keys: [await signingKey('RS256', 'rs256-1', { modulusLength: 2048 }), await signingKey('ES256', 'es256-1')],
  };
}

// Tests stop, restart and rotate the OP's keys through OP_JWKS_FILE (see the header).
async function loadKeys(file) {
  if (!file) return generatedKeys();
  try {
    return JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  const jwks = await generatedKeys();
  await writeFile(file, JSON.stringify(jwks), { mode: 0o600, flag: 'wx' });
  return jwks;
}

async function main() {
  const jwks = await loadKeys(process.env.OP_JWKS_FILE);
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    jwks,
    cookies: { keys: ['test-op-cookie-key-0123456789abcdef', 'test-op-cookie-key-previous-0123456'] },
    claims: {
      acr: null, sid: null, auth_time: null, iss: null,
      openid: ['sub'],
      profile: ['name', 'family_name', 'given_name', 'preferred_username', 'groups', 'updated_at'],
      email: ['email', 'email_verified'],
      phone: ['phone_number', 'phone_number_verified'],
    },
    scopes: ['openid', 'offline_access'],
    // Granted scope claims go into every ID token too, as Authing's do (oidc-provider's default, per
    // OIDC Core §5.4, keeps them for userinfo whenever an access token is issued).
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      const account = ACCOUNTS.get(sub);
      return account && { accountId: sub, claims: async () => ({ ...account.claims }) };
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // oidc-provider refuses to fetch special-use addresses (loopback too) unless it may use its own
    // fetch: the only requests it makes here are back-channel logout POSTs to a gateway on loopback.
    async fetch(url, { dispatcher, ...options }) {
      if (!isLoopbackHttp(String(url))) throw new Error(`test OP fetches loopback only, not ${url}`);
      return globalThis.fetch(url, options);
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      clientCredentials: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // One form with its buttons inside, so a script can submit `logout=yes` (the default uses form=).
        async logoutSource(ctx, form) {
          ctx.body = page('Sign out', form.replace('</form>', `
<button type="submit" name="logout" value="yes">Yes, sign me out</button>
<button type="submit">No, stay signed in</button></form>`));
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Signed out', '<p>You have been signed out.</p>');
        },
      },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, resource) {
          if (resource !== API_RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: 'api:read api:write', audience: API_RESOURCE, accessTokenTTL,
            accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['HS256', 'RS256', 'ES256'],
    },
    pkce: { required: (ctx, oidcClient) => oidcClient.clientAuthMethod === 'none' },
    clientBasedCORS: () => false,
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
      IdToken: idTokenTTL,
      AuthorizationCode: 60,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      const rows = Object.entries(out).map(([k, v]) => `<dt>${html(k)}</dt><dd>${html(v)}</dd>`).join('');
      ctx.body = page('Error', `<dl>${rows}</dl>`);
    },
  });
  provider.proxy = false;

  // Redirect URIs: any loopback http URL with path /oauth2/callback (tests use random ports);
  // post-logout: any loopback http URL.
  provider.Client.prototype.redirectUriAllowed = (value) => isLoopbackHttp(value)
    && URL.parse(value).pathname === CALLBACK_PATH;
  provider.Client.prototype.postLogoutRedirectUriAllowed = (value) => isLoopbackHttp(value);
  // Implicit/hybrid clients normally must register https, non-localhost URIs; the tests have neither.
  const { invalidate } = provider.Client.Schema.prototype;
  provider.Client.Schema.prototype.invalidate = function allowLoopback(message, code) {
    if (code === 'implicit-force-https' || code === 'implicit-forbid-localhost') return;
    invalidate.call(this, message, code);
  };

  provider.use(testEndpoints(provider));
  provider.use(interactions(provider));
  provider.on('server_error', (ctx, err) => console.error('server_error', err));

  const server = provider.listen(port, '127.0.0.1', () => {
    console.log(`oidc-provider listening on ${issuer}`);
  });
  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

await main();
