"""Every setting the gateway reads, parsed strictly from one mapping.

Both tiers (the Flask web app and the RQ workers) build a `Settings` with
`load_settings(os.environ)` at their entry point; tests pass a plain dict instead
of touching `os.environ`. A bad value raises `SettingsError` naming the key, so a
misconfigured deploy stops at start-up with a clear message instead of failing on
the first request.

Each key is documented where it is parsed, in the `# NAME: meaning` comment above its
`read`; docs/configuration.md is generated from those comments (`python -m
service.settings_doc --write`) and a unit test keeps the two equal. This module is that
list of keys; the fields and their defaults are `settings_fields`, the value grammar
`settings_parsers`, and what is refused as a whole `settings_checks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from service.accounts.groups import split_static_key
from service.models import parse_aliases
from service.runtime import settings_parsers as parse
from service.runtime.settings_checks import refuse_combinations, refuse_placeholders
from service.runtime.settings_fields import SentinelConfig, Settings, SettingsError
from service.runtime.settings_parsers import read

__all__ = ["SentinelConfig", "Settings", "SettingsError", "load_settings"]

UPSTREAMS = ("copilot", "bing")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from an environment-like mapping, failing loudly on bad values."""
    d = Settings()
    settings = Settings(
        # PORT: TCP port the web server listens on.
        port=read(environ, "PORT", parse.port, d.port),
        # REDIS_URL: Redis for jobs, pub/sub and conversations; unset = `deploy/start` runs a private,
        # password-protected, persistent redis-server on loopback (and `deploy/admin` finds it).
        # With REDIS_SENTINELS only its password, username, db and scheme (rediss = TLS) are used.
        redis_url=read(environ, "REDIS_URL", parse.redis_url, d.redis_url),
        # API_KEYS: comma-separated bearer keys clients must send (`Authorization: Bearer …` or
        # `api-key: …`); empty (and no ADMIN_KEY) = open, any key accepted, and the web tier
        # listens on 127.0.0.1 only. With keys, managed keys (docs/operating.md) are accepted too.
        # `key@group` puts a key's turns on that account group's accounts only (default: `default`).
        api_keys=tuple(
            split_static_key(entry)[0] for entry in read(environ, "API_KEYS", parse.csv, d.api_keys)
        ),
        api_key_groups=tuple(
            pair
            for entry in read(environ, "API_KEYS", parse.csv, d.api_keys)
            if (pair := split_static_key(entry))[0] != entry
        ),
        # ALLOW_OPEN: 1 = serve without API_KEYS on every interface (an open relay of the account,
        # on purpose).
        allow_open=read(environ, "ALLOW_OPEN", parse.flag, d.allow_open),
        # CORS_ALLOW_ORIGINS: comma-separated origins browsers may call from (or *); unset = * when keyed,
        # none when open.
        cors_allow_origins=read(environ, "CORS_ALLOW_ORIGINS", parse.csv, d.cors_allow_origins),
        # SECRET_KEY: server secret (16+ characters): keys the HMAC owner tags of API keys and seals
        # account cookies and tokens in Redis. Required with API_KEYS, UPSTREAM_COOKIES,
        # COPILOT_ACCESS_TOKEN or ADMIN_KEY; `deploy/start` generates one in DATA_DIR and keeps it.
        # Changing it orphans existing conversations and makes stored accounts unreadable.
        secret_key=read(environ, "SECRET_KEY", parse.secret, d.secret_key),
        # DATA_DIR: where `deploy/start` keeps Redis data, its password, the generated SECRET_KEY and
        # redis.json (how `deploy/admin` finds that Redis); unset = .data/ of the project.
        data_dir=read(environ, "DATA_DIR", parse.text, d.data_dir),
        # UPSTREAM: which upstream dialect the workers speak: `copilot` (/c/api/chat, 2024–) or `bing`
        # (ChatHub, 2023–2024).
        upstream=read(environ, "UPSTREAM", parse.choice(*UPSTREAMS), d.upstream),
        # BING_CREATE_URL: ChatHub conversation-create endpoint (HTTP GET).
        bing_create_url=read(environ, "BING_CREATE_URL", parse.url("http", "https"), d.bing_create_url),
        # BING_CHATHUB_URL: ChatHub websocket endpoint.
        bing_chathub_url=read(environ, "BING_CHATHUB_URL", parse.url("ws", "wss"), d.bing_chathub_url),
        # COPILOT_URL: Copilot's base URL; REST calls go here, the websocket to /c/api/chat on it.
        copilot_url=read(environ, "COPILOT_URL", parse.url("http", "https"), d.copilot_url).rstrip("/"),
        # COPILOT_ACCESS_TOKEN: optional signed-in MSAL access token (sent as accessToken on the socket).
        copilot_access_token=read(environ, "COPILOT_ACCESS_TOKEN", parse.text, d.copilot_access_token),
        # UPSTREAM_COOKIES: the accounts' Cookie header strings, one per line, seeding the account pool
        # as env-1, env-2, … (docs/accounts.md); empty = one anonymous account. Never logged.
        upstream_cookies=read(environ, "UPSTREAM_COOKIES", parse.lines, d.upstream_cookies),
        # UPSTREAM_TRANSPORT: "browser" (curl_cffi: each account's browser TLS fingerprint, headers and
        # proxy) or "plain" (requests + websocket-client, for upstreams that need no impersonation).
        upstream_transport=read(
            environ, "UPSTREAM_TRANSPORT", parse.choice("browser", "plain"), d.upstream_transport
        ),
        # UPSTREAM_CA_BUNDLE: PEM file of extra CAs the upstream transport trusts (never disables checks).
        upstream_ca_bundle=read(environ, "UPSTREAM_CA_BUNDLE", parse.pem_file, d.upstream_ca_bundle),
        # RQ_QUEUE: name of the RQ queue turns are enqueued on.
        queue_name=read(environ, "RQ_QUEUE", parse.text, d.queue_name) or d.queue_name,
        # WORKER_CONCURRENCY: turns one worker process runs at once (gevent greenlets).
        worker_concurrency=read(environ, "WORKER_CONCURRENCY", parse.positive_int, d.worker_concurrency),
        # JOB_TIMEOUT: seconds a turn may run (waiting for an account included) before the worker kills
        # it (504).
        job_timeout=read(environ, "JOB_TIMEOUT", parse.positive_int, d.job_timeout),
        # UPSTREAM_CONNECT_TIMEOUT: seconds for the create call and the websocket handshake.
        upstream_connect_timeout=read(
            environ, "UPSTREAM_CONNECT_TIMEOUT", parse.positive_float, d.upstream_connect_timeout
        ),
        # UPSTREAM_FIRST_TOKEN_TIMEOUT: seconds to wait for the upstream's first frame of an answer.
        upstream_first_token_timeout=read(
            environ, "UPSTREAM_FIRST_TOKEN_TIMEOUT", parse.positive_float, d.upstream_first_token_timeout
        ),
        # UPSTREAM_IDLE_TIMEOUT: seconds of upstream silence mid-answer before the turn fails.
        upstream_idle_timeout=read(
            environ, "UPSTREAM_IDLE_TIMEOUT", parse.positive_float, d.upstream_idle_timeout
        ),
        # QUEUE_WAIT_TIMEOUT: seconds a request waits for a worker to pick its turn up (then 503).
        queue_wait_timeout=read(environ, "QUEUE_WAIT_TIMEOUT", parse.positive_float, d.queue_wait_timeout),
        # WORKER_LEASE_SECONDS: a running turn's liveness lease; a dead worker is noticed after it.
        worker_lease_seconds=read(
            environ, "WORKER_LEASE_SECONDS", parse.positive_int, d.worker_lease_seconds
        ),
        # SSE_HEARTBEAT_SECONDS: longest silence on an SSE stream before a comment heartbeat.
        sse_heartbeat_seconds=read(
            environ, "SSE_HEARTBEAT_SECONDS", parse.positive_float, d.sse_heartbeat_seconds
        ),
        # STREAM_HOLD_SECONDS: how long a stream waits for the first event before committing 200.
        stream_hold_seconds=read(
            environ, "STREAM_HOLD_SECONDS", parse.non_negative_float, d.stream_hold_seconds
        ),
        # STREAM_RESUME_GRACE_SECONDS: how long a stream with `store: true` or an Idempotency-Key
        # keeps its turn running after the client disconnects, for it to resume (0: cancel at once).
        stream_resume_grace_seconds=read(
            environ, "STREAM_RESUME_GRACE_SECONDS", parse.non_negative_float, d.stream_resume_grace_seconds
        ),
        # STREAM_COALESCE_MS: window in which text deltas after the first are merged into one message.
        coalesce_ms=read(environ, "STREAM_COALESCE_MS", parse.non_negative_float, d.coalesce_ms),
        # REPLAY_TTL: seconds a completion's replay log (and its Idempotency-Key) is kept.
        replay_ttl=read(environ, "REPLAY_TTL", parse.positive_int, d.replay_ttl),
        # CONVERSATION_TTL: seconds a conversation is kept after its last turn.
        conversation_ttl=read(environ, "CONVERSATION_TTL", parse.positive_int, d.conversation_ttl),
        # UPSTREAM_HANDLE_TTL: seconds an upstream conversation is reused (capped by its own expiry).
        upstream_handle_ttl=read(environ, "UPSTREAM_HANDLE_TTL", parse.positive_int, d.upstream_handle_ttl),
        # CONTEXT_MAX_CHARS: cap on history injected into a new upstream conversation.
        context_max_chars=read(environ, "CONTEXT_MAX_CHARS", parse.positive_int, d.context_max_chars),
        # MAX_REQUEST_BYTES: largest request body accepted (413 above it), chunked bodies included.
        max_request_bytes=read(environ, "MAX_REQUEST_BYTES", parse.positive_int, d.max_request_bytes),
        # MAX_MESSAGES: most messages one request may carry (400 naming `messages` above it).
        max_messages=read(environ, "MAX_MESSAGES", parse.positive_int, d.max_messages),
        # MAX_INPUT_CHARS: most characters of message text one request may carry (400 above it).
        max_input_chars=read(environ, "MAX_INPUT_CHARS", parse.positive_int, d.max_input_chars),
        # LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL.
        log_level=read(environ, "LOG_LEVEL", parse.log_level, d.log_level),
        # LOG_FORMAT: "text" (key=value lines) or "json" (one JSON object per line, for log pipelines).
        log_format=read(environ, "LOG_FORMAT", parse.choice("text", "json"), d.log_format),
        # WORKER_METRICS_PORT: port each worker process serves Prometheus metrics on; 0 = off.
        worker_metrics_port=read(environ, "WORKER_METRICS_PORT", parse.port_or_off, d.worker_metrics_port),
        # ADMIN_KEY: bearer key (16+ characters) of the /admin/ API; unset = no admin API at all (404).
        # Setting it turns auth on (managed keys are accepted even with no API_KEYS).
        admin_key=read(environ, "ADMIN_KEY", parse.secret, d.admin_key),
        # ACCOUNT_MAX_CONCURRENT: turns in flight per upstream account (all workers together; overridable
        # per account). `deploy/start --demo` sets 50 unless given.
        account_max_concurrent=read(
            environ, "ACCOUNT_MAX_CONCURRENT", parse.positive_int, d.account_max_concurrent
        ),
        # ACCOUNT_RPM: turns started per upstream account per sliding minute (all workers together;
        # overridable per account). `deploy/start --demo` sets 10000 unless given.
        account_rpm=read(environ, "ACCOUNT_RPM", parse.positive_int, d.account_rpm),
        # ACCOUNT_PROBE_SECONDS: how often one worker probes accounts that need attention or are
        # unreachable (a cheap REST call, never a chat turn).
        account_probe_seconds=read(
            environ, "ACCOUNT_PROBE_SECONDS", parse.positive_float, d.account_probe_seconds
        ),
        # ACCOUNT_HEALTH: on = account errors cool or park the account; off = pass them through
        # (one-off injected faults in tests must not park the only account).
        account_health=read(environ, "ACCOUNT_HEALTH", parse.flag, d.account_health),
        # QUEUE_MAX_WAIT_SECONDS: expected wait for an account slot above which a request gets 429 at once.
        queue_max_wait_seconds=read(
            environ, "QUEUE_MAX_WAIT_SECONDS", parse.positive_float, d.queue_max_wait_seconds
        ),
        # UPSTREAM_MAX_TURN_CHARS: most text one upstream turn carries; more is primed over several turns.
        upstream_max_turn_chars=read(
            environ, "UPSTREAM_MAX_TURN_CHARS", parse.positive_int, d.upstream_max_turn_chars
        ),
        # MAX_UPSTREAM_TURNS_PER_REQUEST: most upstream turns one request may cause (priming parts, the
        # turn, one repair); a request needing more is a 400 context_length_exceeded before it is enqueued.
        max_upstream_turns_per_request=read(
            environ, "MAX_UPSTREAM_TURNS_PER_REQUEST", parse.positive_int, d.max_upstream_turns_per_request
        ),
        # MODEL_ALIASES: `glob=model,…` (e.g. `claude-*=copilot,o3=think-deeper`) mapping client model names
        # onto catalog models, before the built-in defaults (docs/api.md#models).
        model_aliases=read(environ, "MODEL_ALIASES", parse_aliases, d.model_aliases),
        # KEY_DEFAULT_RPM: turns per sliding minute per key, for static keys and managed keys without
        # their own; 0 = no limit.
        key_default_rpm=read(environ, "KEY_DEFAULT_RPM", parse.count, d.key_default_rpm),
        # KEY_DEFAULT_CONCURRENT: turns in flight at once per key (all web processes together); 0 = no limit.
        key_default_concurrent=read(environ, "KEY_DEFAULT_CONCURRENT", parse.count, d.key_default_concurrent),
        # KEY_DEFAULT_TOKENS_PER_DAY: input+output tokens per key per UTC day; 0 = no limit.
        key_default_tokens_per_day=read(
            environ, "KEY_DEFAULT_TOKENS_PER_DAY", parse.count, d.key_default_tokens_per_day
        ),
        # KEY_DEFAULT_MODELS: comma-separated model names or globs a key may use; empty = all.
        key_default_models=read(environ, "KEY_DEFAULT_MODELS", parse.csv, d.key_default_models),
        # REDIS_SENTINELS: comma-separated host:port of Redis Sentinels; set = find the primary through them.
        redis_sentinels=read(environ, "REDIS_SENTINELS", parse.host_ports, d.redis_sentinels),
        # REDIS_SENTINEL_MASTER: the master name the Sentinels monitor (required with REDIS_SENTINELS).
        redis_sentinel_master=read(environ, "REDIS_SENTINEL_MASTER", parse.text, d.redis_sentinel_master),
        # REDIS_SENTINEL_PASSWORD: password of the Sentinels themselves (Redis's own is in REDIS_URL).
        redis_sentinel_password=read(
            environ, "REDIS_SENTINEL_PASSWORD", parse.text, d.redis_sentinel_password
        ),
        # IMAGE_MAX_BYTES: largest image input accepted (decoded bytes; 400 naming the part above it).
        image_max_bytes=read(environ, "IMAGE_MAX_BYTES", parse.positive_int, d.image_max_bytes),
        # IMAGE_MAX_PER_MESSAGE: most image parts one message may carry (400 naming the part above it).
        image_max_per_message=read(
            environ, "IMAGE_MAX_PER_MESSAGE", parse.positive_int, d.image_max_per_message
        ),
        # IMAGE_URL_FETCH: on = http(s) image URLs are fetched by the worker (SSRF-checked); off = 400.
        image_url_fetch=read(environ, "IMAGE_URL_FETCH", parse.flag, d.image_url_fetch),
        # IMAGE_URL_ALLOW_PRIVATE: UNSAFE, tests only: let image fetches reach loopback/private addresses.
        image_url_allow_private=read(
            environ, "IMAGE_URL_ALLOW_PRIVATE", parse.flag, d.image_url_allow_private
        ),
        # IMAGE_FETCH_TIMEOUT: seconds an image URL fetch may take in all (every redirect hop included).
        image_fetch_timeout=read(environ, "IMAGE_FETCH_TIMEOUT", parse.positive_float, d.image_fetch_timeout),
        # TOOL_EMULATION: on = `tools` are emulated by prompting (docs/tools-and-images.md); off = a
        # request that lets the model call tools gets a 400 naming `tools` (never silently ignored).
        tool_emulation=read(environ, "TOOL_EMULATION", parse.choice("on", "off"), "on") == "on",
        # REQUIRE_AUTH: 1 = refuse to start without API_KEYS or ADMIN_KEY (the k8s manifests set it).
        require_auth=read(environ, "REQUIRE_AUTH", parse.flag, d.require_auth),
        # KEY_MAX_CONVERSATIONS: conversations one key may keep stored at once (429 above); 0 = no limit.
        key_max_conversations=read(environ, "KEY_MAX_CONVERSATIONS", parse.count, d.key_max_conversations),
        # REDIS_MAXMEMORY: memory limit of the embedded redis-server (deploy/start without REDIS_URL).
        redis_maxmemory=read(environ, "REDIS_MAXMEMORY", parse.memory, d.redis_maxmemory),
        # KEY_SLOT_LEASE_SECONDS: a key's turn slot is renewed this often ×3 while its response is
        # open; a web process that dies frees its slots within about twice this.
        key_slot_lease_seconds=read(
            environ, "KEY_SLOT_LEASE_SECONDS", parse.positive_float, d.key_slot_lease_seconds
        ),
        # PLAYGROUND: on = the chat playground page at `/` (docs/console.md); off = `/` is a 404.
        playground=read(environ, "PLAYGROUND", parse.choice("on", "off"), "on") == "on",
        # TRACE_REQUESTS: 1 = a turn sent with `X-Gateway-Trace: 1` keeps its per-phase trace
        # (service.runtime.trace) for ten minutes; the benchmark's --trace sets it.
        trace_requests=read(environ, "TRACE_REQUESTS", parse.flag, d.trace_requests),
        # UPSTREAM_SPARE_CONVERSATIONS: 1 = keep one upstream conversation created ahead of need per
        # account, so a new conversation's first turn pays no create (workers/spare_conversations.py).
        # On by default for Copilot (no documented conversation expiry, creates are not turns); off
        # by default for ChatHub (UPSTREAM=bing), whose conversations open their own sockets anyway.
        upstream_spare_conversations=read(
            environ, "UPSTREAM_SPARE_CONVERSATIONS", parse.flag, d.upstream_spare_conversations
        ),
        # UPSTREAM_KEEP_SOCKETS: on = a Copilot account's websocket stays open between turns, one idle
        # socket per account per worker process, as a browser tab keeps one (workers/upstream/socket_park.py);
        # off = a socket per turn.
        upstream_keep_sockets=read(environ, "UPSTREAM_KEEP_SOCKETS", parse.flag, d.upstream_keep_sockets),
        # UPSTREAM_SOCKET_IDLE_SECONDS: an idle upstream socket kept longer than this is closed.
        upstream_socket_idle_seconds=read(
            environ, "UPSTREAM_SOCKET_IDLE_SECONDS", parse.positive_float, d.upstream_socket_idle_seconds
        ),
    )
    if settings.upstream == "bing" and "UPSTREAM_SPARE_CONVERSATIONS" not in environ:
        settings = dataclasses.replace(settings, upstream_spare_conversations=False)
    refuse_placeholders(environ)
    refuse_combinations(settings)
    return settings
