"""Django settings for OOT HUD, read from the environment.

The defaults run on a fresh clone: SQLite, DynamoDB Local on 127.0.0.1:8411,
an embedded chdb store under var/, and Redis on 127.0.0.1:6379.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from hud.env import database_from_url, env_bool, env_float, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("OOT_VAR_DIR", str(BASE_DIR / "var")))
# Local state (SQLite file, chdb directory, logs) lives here; create it so a
# fresh clone can run any command first.
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me-in-production")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in env_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "oot_ingest",
    "replicator",
    "oot_views",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "oot_views.middleware.ContentSecurityPolicyMiddleware",
    # Serves POST /api/oot/results itself, because the middleware below is needed only by pages and admin.
    "oot_ingest.middleware.CallbackApiMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "hud.urls"
WSGI_APPLICATION = "hud.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The replicator thread and request threads share the file: wait for the
    # write lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "hud.cache.OneTripIncrRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("OOT_CACHE_PREFIX", "oot"),
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    },
    "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}

# DynamoDB: AWS when DYNAMODB_ENDPOINT is empty, otherwise DynamoDB Local.
DYNAMODB_ENDPOINT = env_str("DYNAMODB_ENDPOINT", "http://127.0.0.1:8411")
DYNAMODB_TABLE = env_str("DYNAMODB_TABLE", "torchci-oot-workflow-job")
AWS_REGION = env_str("AWS_REGION", "us-east-1")

# ClickHouse: chdb:///<path> runs the embedded engine in this process;
# http(s)://user:password@host:port talks to a server.
CLICKHOUSE_URL = env_str("CLICKHOUSE_URL", f"chdb://{VAR_DIR / 'chdb'}")
CLICKHOUSE_DATABASE = env_str("CLICKHOUSE_DATABASE", "default")
CLICKHOUSE_QUERY_TIMEOUT = env_float("CLICKHOUSE_QUERY_TIMEOUT", 5.0)
CLICKHOUSE_TABLE_ENGINE = env_str("CLICKHOUSE_TABLE_ENGINE", "")

# Ingestion.
OOT_RELAY_TOKEN = env_str("OOT_RELAY_TOKEN", "")
OOT_MAX_BODY_BYTES = 2 * 1024 * 1024
OOT_UPSTREAM_REPO = env_str("OOT_UPSTREAM_REPO", "pytorch/pytorch")
# Callbacks a minute per repository when the repository has no rate limit of
# its own in admin. Development and benchmark runs raise it explicitly.
OOT_DEFAULT_RATE_LIMIT = env_int("OOT_DEFAULT_RATE_LIMIT", 100, minimum=1)
# django-ratelimit counts callbacks in the Redis cache. There is deliberately
# no variable to turn it off: raise OOT_DEFAULT_RATE_LIMIT instead. The system
# checks oot_ingest.E001-E004 report a disabled or unusable configuration.
RATELIMIT_ENABLE = True
RATELIMIT_USE_CACHE = "default"
# Days the rejection log keeps an entry; `manage.py prune_rejections` deletes older ones.
OOT_REJECTION_RETENTION_DAYS = env_int("OOT_REJECTION_RETENTION_DAYS", 30, minimum=1)

# Replication.
REPLICATOR_INTERVAL_SECONDS = env_float("REPLICATOR_INTERVAL_SECONDS", 1.0)
REPLICATOR_EMBEDDED = env_bool("REPLICATOR_EMBEDDED", CLICKHOUSE_URL.startswith("chdb:"))

# Pages.
OOT_NOT_REPORTING_HOURS = env_int("OOT_NOT_REPORTING_HOURS", 24, minimum=1)
# Saved-query results are reused while the ClickHouse table is unchanged, for
# at most this many seconds (0 turns the cache off); while one request
# recomputes a result, others may get one up to the stale limit old.
OOT_QUERY_CACHE_SECONDS = env_float("OOT_QUERY_CACHE_SECONDS", 60.0)
OOT_QUERY_CACHE_STALE_SECONDS = env_float("OOT_QUERY_CACHE_STALE_SECONDS", 30.0)
OOT_ORPHAN_HOURS = env_float("OOT_ORPHAN_HOURS", 6.0)
# Seconds between orphan sweeps (Celery beat, or the serving process in embedded mode).
OOT_SWEEP_INTERVAL_SECONDS = env_float("OOT_SWEEP_INTERVAL_SECONDS", 300.0)

# Callback tokens minted for the relay. An empty secret means a key derived
# from SECRET_KEY, so tokens survive restarts as long as SECRET_KEY does.
OOT_CALLBACK_TOKEN_SECRET = env_str("OOT_CALLBACK_TOKEN_SECRET", "")
if OOT_CALLBACK_TOKEN_SECRET and len(OOT_CALLBACK_TOKEN_SECRET) < 32:
    raise ImproperlyConfigured("OOT_CALLBACK_TOKEN_SECRET must be at least 32 characters long")
OOT_CALLBACK_TOKEN_LIFETIME_SECONDS = env_int("OOT_CALLBACK_TOKEN_LIFETIME_SECONDS", 3 * 24 * 3600, minimum=60)

# Direct reporting: downstream workflows authenticate with a GitHub Actions
# OIDC token instead of going through the relay. Off unless enabled.
OOT_DIRECT_REPORTING = env_bool("OOT_DIRECT_REPORTING", False)
OOT_OIDC_ISSUER = env_str("OOT_OIDC_ISSUER", "https://token.actions.githubusercontent.com")
# The audience the workflow requests its token for; it names this deployment.
OOT_OIDC_AUDIENCE = env_str("OOT_OIDC_AUDIENCE", "")
# Empty: read jwks_uri from the issuer's /.well-known/openid-configuration.
OOT_OIDC_JWKS_URL = env_str("OOT_OIDC_JWKS_URL", "")
if OOT_DIRECT_REPORTING and not OOT_OIDC_AUDIENCE:
    raise ImproperlyConfigured("OOT_DIRECT_REPORTING=true needs OOT_OIDC_AUDIENCE, the audience of accepted tokens")

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_SOFT_TIME_LIMIT = 50
CELERY_TASK_TIME_LIMIT = 60
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
