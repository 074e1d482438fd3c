"""IMBUE settings: one module, read from the environment.

Every variable is listed with its meaning in `.env.example`. With nothing set, the product runs on
the embedded PostgreSQL and Redis that `imbue.devservices` starts (their addresses are written to
`.local/services.json`, so any `manage.py` command in another terminal reaches the same servers).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from imbue.gcfreeze import configured_spec, parse_thresholds

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("IMBUE_LOCAL_DIR", BASE_DIR / ".local"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _embedded_services() -> dict[str, str]:
    """Addresses written by `python -m imbue.devservices` when it started embedded servers."""
    path = LOCAL_DIR / "services.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in .local/ (ignored)."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = LOCAL_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except OSError:
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


EMBEDDED = _embedded_services()

SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
# IMBUE_DEPLOY=1 turns on the HTTPS-only settings of a real deployment (see README, "Deploying").
DEPLOY = env_bool("IMBUE_DEPLOY", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "django_htmx",
    "template_partials",
    "imbue",
    "simulations",
    "feedback",
    "study",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "imbue.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "imbue.security.FormInputGuardMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "imbue.security.MethodNotAllowedPageMiddleware",
    "imbue.security.DatabaseUnavailableMiddleware",
    "imbue.views.TooManyRequestsMiddleware",
]

ROOT_URLCONF = "imbue.urls"
ASGI_APPLICATION = "imbue.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "imbue.context_processors.product",
            ],
        },
    },
]

# --- PostgreSQL through psycopg 3 ---------------------------------------------------------------
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
else:
    DATABASES = {
        "default": {
            "NAME": "imbue",
            "USER": "postgres",
            "PASSWORD": "",
            # The embedded server listens on a Unix socket only; its folder is recorded at start-up.
            "HOST": EMBEDDED.get("pg_socket_dir", str(LOCAL_DIR / "pgdata")),
            "PORT": EMBEDDED.get("pg_port", ""),
        }
    }
if os.environ.get("DATABASE_NAME"):
    # Lets a worker or server started by the tests use the test database.
    DATABASES["default"]["NAME"] = os.environ["DATABASE_NAME"]
DATABASES["default"]["CONN_MAX_AGE"] = 0
# Django's PostgreSQL backend, whose pool checks a connection with no round trip (see there).
DATABASES["default"]["ENGINE"] = "imbue.postgres"
# With the pool, each connection is then checked as it leaves the pool: one that died with the
# network (PostgreSQL restarted, a failover) is replaced instead of failing the next request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})
prepare_threshold = env_int("DB_PREPARE_THRESHOLD", 2)
if prepare_threshold > 0:
    # Parameters bound by PostgreSQL, and a query prepared once a connection has run it this
    # many times: PostgreSQL then skips planning it, which is most of a short query's time (the
    # conversation's locking read: 0.67 ms planning, 0.15 ms running). Behind a pooler in
    # transaction mode that cannot keep prepared statements, set DB_PREPARE_THRESHOLD=0.
    DATABASES["default"]["OPTIONS"].update(
        server_side_binding=True, prepare_threshold=prepare_threshold
    )
if env_bool("DB_POOL", True):
    # psycopg's pool; one per process (ASGI worker, Celery child). Sized by DB_POOL_MAX.
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": env_int("DB_POOL_MAX", 10),
        # A request waits this long for a connection before its 503 page; all sync code of a
        # process shares one thread, so a long wait holds up every other request too.
        "timeout": env_float("DB_POOL_TIMEOUT", 3.0),
    }
DATABASES["default"]["TEST"] = {
    "NAME": "test_" + DATABASES["default"]["NAME"] + os.environ.get("TEST_DB_SUFFIX", "")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# How long a busy thread keeps the GIL before a waiting one may take it: Python's own 5 ms. 0.5 ms
# (sessions 3-17) let a database thread whose answer came go on sooner, but at 1000 learners the
# more frequent hand-overs left the first token's tail no better, and at 100 no different
# (bench/README.md, "Session 18"); kept as a setting for such measurements.
sys.setswitchinterval(env_float("PYTHON_SWITCH_INTERVAL_MS", 5.0) / 1000)

# The collector's thresholds, applied by the web and worker processes once they have started
# (imbue/gcfreeze.py); checked here, so a bad value stops every process at start, the Celery
# worker included (its thresholds are applied in a background thread, where an error would
# only be logged).
parse_thresholds(configured_spec())

# --- Redis: channel layer and Celery broker -----------------------------------------------------


def redis_retry(*, asynchronous: bool) -> dict:
    """Connection options that reconnect and retry a command once Redis is back after a restart.
    A command that timed out is not tried again (as `simulations.services._reconnecting`): Redis
    is not answering, each try would wait its whole timeout again (four tries of a publish held
    its caller a minute), and one it did late would be done twice; `imbue.redis_quiet` hears of
    the timeout from the channel layer."""
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    backoff = ExponentialBackoff(cap=1.0, base=0.05)
    retried = (RedisConnectionError,)
    return {
        "retry": (AsyncRetry if asynchronous else Retry)(backoff, 3, supported_errors=retried),
        "retry_on_error": list(retried),
    }


REDIS_URL = os.environ.get("REDIS_URL") or EMBEDDED.get(
    "redis_url", f"redis://127.0.0.1:{env_int('IMBUE_EMBEDDED_REDIS_PORT', 6390)}/0"
)
# Redis pub/sub: one PUBLISH per group message, and one subscription per process that hands each
# message to the process's sockets. The default layer (channels_redis.core) made every group
# message four round trips and a Lua script, and every socket poll Redis: measured 2.4-2.6 ms CPU
# per delivered message against 0.4 ms (bench/README.md), with ~45 messages per learner turn.
# Nothing is stored: a socket that is not listening misses the message, as the pages expect (on
# connect they read the state, and a gap in a streamed reply makes them read the partial text).
# Pub/sub channels ignore the database number, so the prefix names it: two setups sharing one
# Redis server on different databases (tests, benchmarks) must not hear each other.
_REDIS_DB = (urlsplit(REDIS_URL).path.strip("/") or "0").split("/")[0]
CHANNEL_LAYERS = {
    "default": {
        # channels-redis's pub/sub layer, publishing concurrently across conversations
        # (imbue/channel_layer.py says why).
        "BACKEND": "imbue.channel_layer.PubSubChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 15,
                    "socket_connect_timeout": 5,
                    # After a Redis restart every pooled connection is dead, and redis-py's default
                    # is not to retry: the first command on each would fail (a reply not started,
                    # a feedback panel not announced). One reconnect-and-retry covers it, and the
                    # subscription is made again on the new connection.
                    **redis_retry(asynchronous=True),
                }
            ],
            "prefix": f"imbue{_REDIS_DB}",
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
# No result backend: Celery's stand-in stores nothing, so one instance can serve every thread.
# Without this Celery builds it again in each new thread, and Django gives every HTTP request
# its own thread: a quarter of each feedback request's `.delay()` (bench/README.md, session 9).
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "imbue"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # An unacknowledged task (worker killed mid-task) is redelivered after this many seconds.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 120),
    # kombu looks for such tasks every interval x throttle seconds (10 x 10 by default): without
    # this, a worker restarted within the visibility timeout leaves the task for 100 s more.
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
    "global_keyprefix": os.environ.get("CELERY_KEY_PREFIX", ""),
    # kombu waits for Redis without limit by default: a Redis that accepts connections but does
    # not answer (stopped, a dead network path) held a feedback request's publish, and the
    # learner's "Get feedback", for as long as it stayed silent. Each try now gives up after
    # this, and a feedback request's publish is not tried again after a timeout (a dropped
    # connection is: the retries below); the request is then answered with its offline rating
    # (feedback.services._enqueue). Usually the rate limit's own 2 s timeout comes first, and
    # the publish is then not tried at all (imbue.redis_quiet): 2.0 s after the click in
    # tests/faults (12.7 s with the four tries).
    "socket_timeout": env_float("CELERY_REDIS_TIMEOUT", 2.0),
    "socket_connect_timeout": env_float("CELERY_REDIS_TIMEOUT", 2.0),
}
# Celery's own default, written out: the publish is tried four times in all (a Redis restart
# leaves every pooled connection dead, and the retry reconnects).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 1,
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The worker's CPU priority (a nice increment, 0-19) against the web processes on a shared
# machine: the partner's streamed reply is what a learner watches, the feedback rating runs
# behind it. Applied once at the worker's start (imbue.celery); it changes nothing when the
# worker has a machine of its own.
WORKER_NICE = env_int("WORKER_NICE", 0)

# --- Language models (imbue/llm.py is the only caller) -----------------------------------------
_LLM_PURPOSES = ("partner", "persona", "suggestion", "feedback")
_LLM_DEFAULT_TEMPERATURE = {"partner": 0.8, "persona": 0.7, "suggestion": 0.2, "feedback": 0.0}
_LLM_DEFAULT_MAX_TOKENS = {"partner": 400, "persona": 500, "suggestion": 200, "feedback": 1800}
LLM = {
    "base_url": os.environ.get("LLM_BASE_URL") or None,
    "api_key": os.environ.get("LLM_API_KEY", ""),
    "provider": os.environ.get("LLM_PROVIDER", "openai"),
    "api_version": os.environ.get("LLM_API_VERSION", "2024-10-21"),
    "timeout_s": env_float("LLM_TIMEOUT", 30.0),
    "max_retries": env_int("LLM_MAX_RETRIES", 2),
    "backoff_s": env_float("LLM_BACKOFF", 0.5),
    # The SDK's HTTP transport: "aiohttp" (its C parser reads a streamed reply for about half the
    # CPU, bench/README.md session 9) or "httpx" (the SDK's own default).
    "http_client": os.environ.get("LLM_HTTP_CLIENT", "aiohttp"),
    "purposes": {
        purpose: {
            "model": os.environ.get(f"LLM_{purpose.upper()}_MODEL")
            or os.environ.get("LLM_MODEL", "gpt-4o-mini"),
            "temperature": env_float(
                f"LLM_{purpose.upper()}_TEMPERATURE", _LLM_DEFAULT_TEMPERATURE[purpose]
            ),
            "max_tokens": env_int(
                f"LLM_{purpose.upper()}_MAX_TOKENS", _LLM_DEFAULT_MAX_TOKENS[purpose]
            ),
        }
        for purpose in _LLM_PURPOSES
    },
}

# --- Product defaults (a study can override the conversation ones per arm) ---------------------
IMBUE = {
    "max_messages": env_int("IMBUE_MAX_MESSAGES", 10),
    "max_message_chars": env_int("IMBUE_MAX_MESSAGE_CHARS", 2000),
    "messages_per_minute": env_int("IMBUE_MESSAGES_PER_MINUTE", 12),
    "feedback_per_minute": env_int("IMBUE_FEEDBACK_PER_MINUTE", 20),
    # "Suggest a skill", per learner (a model call each); 0: no limit.
    "suggestions_per_minute": env_int("IMBUE_SUGGESTIONS_PER_MINUTE", 10),
    # New conversations per browser and per client address in an hour (each stores rows and, with
    # a model, asks it for the partner's brief); 0: no limit. See imbue.ratelimit.try_start.
    "starts_per_hour": env_int("IMBUE_STARTS_PER_HOUR", 30),
    "starts_per_hour_per_address": env_int("IMBUE_STARTS_PER_HOUR_PER_ADDRESS", 200),
    # New learners (a browser's first practice visit) and study enrolments per client address in
    # an hour (each stores rows); 0: no limit. See imbue.ratelimit.try_new_learner, try_enrol.
    "new_learners_per_hour_per_address": env_int("IMBUE_NEW_LEARNERS_PER_HOUR_PER_ADDRESS", 200),
    "enrolments_per_hour_per_address": env_int("IMBUE_ENROLMENTS_PER_HOUR_PER_ADDRESS", 100),
    "conversation_token_budget": env_int("IMBUE_CONVERSATION_TOKEN_BUDGET", 60000),
    # A reply's first words go out at once; after that, what the model streams is sent at most
    # once per this many milliseconds (0: every piece as it comes). Each piece is a Redis append,
    # a publish and a frame to every tab: 100 ms took 10-16% of the web CPU off a turn against
    # 50 ms (bench/README.md, session 9).
    "stream_flush_ms": env_int("IMBUE_STREAM_FLUSH_MS", 100),
    # Per web process, all replies together (0: no limit); see simulations.services._Pusher.
    # 30: up to three replies at once keep ten pieces a second each; at 1000 learners' busiest
    # moments (some 13 at once per process) each gets about two (bench/README.md, session 11).
    "stream_pieces_per_s": env_float("IMBUE_STREAM_PIECES_PER_S", 30.0),
}

# --- /healthz (imbue/views.py): the public answer is only "ok"; the per-component report needs
# staff sign-in or this token (`Authorization: Bearer <token>`). Both come from one check of the
# database, Redis and the worker run at most once per HEALTHZ_CACHE_SECONDS in each process.
HEALTHZ_TOKEN = os.environ.get("HEALTHZ_TOKEN", "")
HEALTHZ_CACHE_SECONDS = env_float("HEALTHZ_CACHE_SECONDS", 5.0)

# --- Sessions, security (see imbue/security.py for the headers and README "Deploying") ---------
# Django's database sessions, the read compiled once (imbue/sessions.py).
SESSION_ENGINE = "imbue.sessions"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 90
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
CSRF_FAILURE_VIEW = "imbue.views.csrf_failure"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Form posts may also go to these origins (CSP form-action), e.g. a recruitment platform's
# completion page when a study redirects there straight after a form is submitted.
CSP_FORM_ACTION_EXTRA = env_list("CSP_FORM_ACTION_EXTRA", "https://app.prolific.com")
# Shown when a message suggests someone may be at risk; staff replace it (a study may override it).
SUPPORT_RESOURCES_FILE = Path(
    os.environ.get("IMBUE_SUPPORT_RESOURCES_FILE")
    or BASE_DIR / "simulations" / "data" / "support_resources.txt"
)
if DEPLOY:
    if not os.environ.get("SECRET_KEY"):
        raise ImproperlyConfigured("IMBUE_DEPLOY=1 needs SECRET_KEY in the environment.")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # The __Host- prefix makes browsers refuse these cookies unless set over HTTPS for this host.
    SESSION_COOKIE_NAME = "__Host-imbue_session"
    CSRF_COOKIE_NAME = "__Host-imbue_csrf"
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # probes inside the cluster speak plain HTTP
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The SDK's HTTP client logs every request at INFO; each call is an LLMCall row already.
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
