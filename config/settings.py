"""Settings per environment, read from the process environment and the environment's env files.

Environment variables win over env files; later env files win over earlier ones.
"""

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from root import root_path

DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production"  # noqa: S105
PLACEHOLDER_SECRET_KEYS = {
    DEVELOPMENT_SECRET_KEY,
    "change-me",
    "changeme",
    "secret",
    "replace-me",
    "your-secret-key",
}
MIN_SECRET_KEY_LENGTH = 32
DEVELOPMENT_WEBHOOK_SECRET_KEY = "development-only-webhook-secret-key-never-in-production"  # noqa: S105


class SecretSources(BaseSettings):
    """Where the secrets are kept on AWS, and the credentials Lambda gives the function to read
    them. Read before the other settings, so that the secrets are fetched before the settings
    that need them are validated (`config.secrets`)."""

    # Built when first used: of the classes below, an environment uses one.
    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8", defer_build=True)

    # Secrets Manager secrets (ARN or name): SECRET_KEY as the secret's plain text; the database
    # user and password from an RDS secret's JSON (host, port and name stay in POSTGRES_*).
    secret_key_secret_id: str | None = None
    database_secret_id: str | None = None
    # WEBHOOK_SECRET_KEYS as the secret's plain text (comma-separated keys).
    webhook_secret_keys_secret_id: str | None = None
    aws_region: str | None = Field(default=None, validation_alias="AWS_REGION")
    aws_access_key_id: str | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias="AWS_SECRET_ACCESS_KEY"
    )
    aws_session_token: SecretStr | None = Field(default=None, validation_alias="AWS_SESSION_TOKEN")
    # Under SnapStart, Lambda gives no credentials in variables: an endpoint of its own serves
    # them (the AWS SDKs' container credential provider reads the same variables).
    aws_container_credentials_full_uri: str | None = Field(
        default=None, validation_alias="AWS_CONTAINER_CREDENTIALS_FULL_URI"
    )
    aws_container_authorization_token: SecretStr | None = Field(
        default=None, validation_alias="AWS_CONTAINER_AUTHORIZATION_TOKEN"
    )
    # The SDKs' own variable for another endpoint (a VPC endpoint's DNS name, or a test server).
    aws_endpoint_url_secrets_manager: str | None = Field(
        default=None, validation_alias="AWS_ENDPOINT_URL_SECRETS_MANAGER"
    )


class Settings(SecretSources):
    """Settings shared by every environment; each field is read from the env var of its name."""

    app_env: ClassVar[str]
    app_name: str = "Tracker"

    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET_KEY)

    # The database: DATABASE_URL, else the POSTGRES_* fields, else (development and test only)
    # an embedded PostgreSQL server under EMBEDDED_DATA_DIR.
    database_url: SecretStr | None = None
    postgres_host: str | None = None
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr | None = None
    postgres_db: str = "tracker"
    # libpq's sslmode for the POSTGRES_* database (`require` behind RDS Proxy, which needs TLS).
    postgres_sslmode: (
        Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None
    ) = None
    embedded_database: bool = True
    embedded_data_dir: Path = root_path(".data/postgres")
    embedded_database_name: str = "tracker_dev"

    # Connection handling. On Lambda an instance serves one request at a time: one connection,
    # or none kept at all (NullPool) when RDS Proxy pools for us.
    lambda_mode: bool | None = None
    aws_lambda_function_name: str | None = Field(
        default=None, validation_alias="AWS_LAMBDA_FUNCTION_NAME"
    )
    db_null_pool: bool = False
    # Outside Lambda: as many connections as requests may use the database at once. Connections
    # opened beyond the pool's size are closed again after each use: under load, that was a new
    # PostgreSQL session for one request in sixteen. Requests beyond it wait for a connection.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # A pooled connection idle longer than this is checked with a ping before use (a thawed
    # Lambda instance, a quiet night); a busy one is not, which saves a round trip per request.
    # 0 pings before every use.
    db_ping_after_idle_seconds: float = Field(default=10, ge=0)
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)
    db_connect_timeout_s: int = Field(default=5, ge=1)
    # Send the time zone, JIT and statement timeout settings with each connection. RDS Proxy
    # refuses connections that carry any: behind it, false, and the deploy's migration function
    # makes them the database's defaults instead.
    db_connection_options: bool = True

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # The `Service` dimension of every metric the app emits (app/internal/metrics.py): the
    # deployment's name, so that two deployments in one account keep their metrics apart.
    metrics_service: str = Field(default="tracker", min_length=1, max_length=250)

    docs_enabled: bool = True
    # Behind an API Gateway custom domain whose API mapping has a path (api.example.com/v1),
    # that path: requests arrive with it and the app is served under it. A named stage of the
    # execute-api URL needs no setting: it is read from each event.
    api_base_path: str = ""
    # Bodies above this answer 413 before they are read whole (a full batch of 1,000 plain events
    # is about 150 KB).
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    cors_origins: Annotated[list[str], NoDecode] = []

    # Accounts and sessions.
    signup_enabled: bool = True
    access_token_ttl_minutes: int = Field(default=60, ge=1)
    session_ttl_hours: int = Field(default=24 * 7, ge=1)
    secure_cookies: bool = False
    # Failed logins per account and client address, then per account from every address.
    login_max_failures: int = Field(default=5, ge=1)
    login_account_max_failures: int = Field(default=50, ge=1)
    login_failure_window_minutes: int = Field(default=15, ge=1)
    # Proxies in front of the app whose X-Forwarded-For entries are believed (0: none; on Lambda
    # the event names the client).
    trusted_proxy_hops: int = Field(default=0, ge=0)
    # Argon2id cost; the defaults are argon2-cffi's recommended ones.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=65536, ge=8)
    # last_used_at / last_seen_at are written at most this often per key or session.
    activity_write_interval_seconds: int = Field(default=60, ge=0)
    # A verified API key is trusted this long by the process that verified it, without a query;
    # a revocation, expiry or deactivation elsewhere takes effect within it. 0: check every time.
    api_key_cache_seconds: int = Field(default=10, ge=0, le=30)

    # Scheduled tasks work in transactions of at most this many rows, and at most this many of
    # them a run (what is left waits for the next run).
    task_batch_size: int = Field(default=1000, ge=1, le=100_000)
    task_max_batches: int = Field(default=100, ge=1)

    # Raw events received more than this many days ago are deleted by the prune_events task
    # (never an unresolved error; the job rows and the per-step tables stay). None keeps all.
    event_retention_days: int | None = Field(default=None, ge=1)
    # Each run of a scheduled task is recorded (the system status reads them) and kept this
    # many days; the auth_cleanup task deletes older ones.
    task_run_retention_days: int = Field(default=30, ge=1)

    # Deadlines learnt from history, where a configuration version sets no step timeout: the
    # wait for a step is this quantile of its recorded durations times the factor, at least the
    # floor, once the step has this many samples (the ETA needs as many).
    deadline_step_quantile: float = Field(default=0.99, gt=0, lt=1)
    deadline_step_factor: float = Field(default=2.0, ge=1, le=100)
    deadline_step_floor_seconds: float = Field(default=60, ge=1)
    deadline_min_samples: int = Field(default=20, ge=2)

    # Webhooks. Plain http URLs, and URLs resolving to private, loopback or link-local
    # addresses, are refused unless allowed (development and test allow them).
    webhook_allow_http: bool = False
    webhook_allow_private_addresses: bool = False
    # The ports webhook URLs may name (comma-separated); None (`*`, and the default in
    # development and test) allows any. The template's security group lets the worker out to
    # the same ports.
    webhook_allowed_ports: Annotated[list[int] | None, NoDecode] = [443]
    # The deadline of one delivery attempt, the whole exchange: connect, TLS, send the
    # notification, read the answer's status and headers. Past it the attempt has failed.
    webhook_timeout_seconds: float = Field(default=5, gt=0, le=30)
    # Keys that encrypt signing secrets at rest (comma-separated, each at least 32 characters):
    # the first encrypts, every one decrypts; the reencrypt_webhook_secrets task moves every
    # secret to the first. On AWS a Secrets Manager secret the template generates.
    webhook_secret_keys: Annotated[list[SecretStr], NoDecode] = [
        SecretStr(DEVELOPMENT_WEBHOOK_SECRET_KEY)
    ]
    # After a secret is rotated, deliveries are signed with the old one too for this long.
    webhook_secret_overlap_hours: float = Field(default=24, ge=0, le=24 * 30)
    # Retries wait base * 2^(failures - 1), at most the maximum, for the retry window; an
    # endpoint failing continuously for the disable window is disabled.
    webhook_retry_base_seconds: int = Field(default=30, ge=1)
    webhook_retry_max_delay_seconds: int = Field(default=6 * 3600, ge=1)
    webhook_retry_window_hours: int = Field(default=72, ge=24)
    webhook_disable_after_hours: int = Field(default=120, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("event_retention_days", mode="before")
    @classmethod
    def _empty_means_keep_everything(cls, value: object) -> object:
        # An empty variable (a deploy parameter left blank) is the default, not a bad number.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_allowed_ports", mode="before")
    @classmethod
    def _split_ports(cls, value: object) -> object:
        # Any port only when said in so many words: an empty variable (a deploy parameter left
        # blank) is the environment's default, which is 443 in production.
        if not isinstance(value, str):
            return value
        if value.strip() == "*":
            return None
        ports = [port.strip() for port in value.split(",") if port.strip()]
        return ports or cls.model_fields["webhook_allowed_ports"].get_default()

    @field_validator("webhook_allowed_ports")
    @classmethod
    def _ports_in_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not all(0 < port < 65536 for port in value):
            raise ValueError("a port is a number from 1 to 65535")
        return value

    @field_validator("webhook_secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("webhook_secret_keys")
    @classmethod
    def _keys_long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        if not value:
            raise ValueError("at least one key is needed")
        if any(len(key.get_secret_value()) < MIN_SECRET_KEY_LENGTH for key in value):
            raise ValueError(f"each key is at least {MIN_SECRET_KEY_LENGTH} characters")
        return value

    @field_validator("api_base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        path = value.strip().strip("/")
        if any(character in path for character in "?#% ") or "//" in path:
            raise ValueError("a base path is plain path segments, such as /v1 or /tracker/api")
        return f"/{path}" if path else ""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @property
    def is_lambda(self) -> bool:
        if self.lambda_mode is not None:
            return self.lambda_mode
        return self.aws_lambda_function_name is not None

    def configured_database_url(self) -> URL | None:
        """The database the settings name, or None when none is configured."""
        if self.database_url is not None:
            return normalise_database_url(self.database_url.get_secret_value())
        if self.postgres_host:
            password = self.postgres_password.get_secret_value() if self.postgres_password else None
            return URL.create(
                "postgresql+psycopg2",
                username=self.postgres_user,
                password=password,
                host=self.postgres_host,
                port=self.postgres_port,
                database=self.postgres_db,
                query={"sslmode": self.postgres_sslmode} if self.postgres_sslmode else {},
            )
        return None


class LocalSettings(Settings):
    app_env: ClassVar[str] = "development"
    model_config = SettingsConfigDict(env_file=root_path(".env.local"))

    # Receivers on this machine, on any port, over plain http.
    webhook_allow_http: bool = True
    webhook_allow_private_addresses: bool = True
    webhook_allowed_ports: Annotated[list[int] | None, NoDecode] = None


class TestSettings(Settings):
    __test__ = False  # not a pytest test class, whatever its name says

    app_env: ClassVar[str] = "test"
    model_config = SettingsConfigDict(env_file=root_path(".env.test"))

    embedded_database_name: str = "tracker_test"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    # The suite hashes many passwords; full-strength Argon2 would only make it slow.
    password_hash_time_cost: int = Field(default=1, ge=1)
    password_hash_memory_kib: int = Field(default=1024, ge=8)
    # Tests change keys, users and customers behind the app's back and expect the next request
    # to see it; the key cache's own tests turn it on.
    api_key_cache_seconds: int = Field(default=0, ge=0, le=30)
    # The tests' receivers listen on 127.0.0.1, on ports of their own, over plain http.
    webhook_allow_http: bool = True
    webhook_allow_private_addresses: bool = True
    webhook_allowed_ports: Annotated[list[int] | None, NoDecode] = None


class ProdSettings(Settings):
    app_env: ClassVar[str] = "production"
    model_config = SettingsConfigDict(env_file=(root_path(".env"), root_path(".env.prod")))

    secret_key: SecretStr | None = None  # type: ignore[assignment]
    embedded_database: bool = False
    log_format: Literal["text", "json"] = "json"
    secure_cookies: bool = True

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "ProdSettings":
        problems = []
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        if not secret:
            problems.append("SECRET_KEY is not set")
        elif secret.lower() in PLACEHOLDER_SECRET_KEYS or len(secret) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"SECRET_KEY is a placeholder or shorter than {MIN_SECRET_KEY_LENGTH} characters"
            )
        keys = [key.get_secret_value() for key in self.webhook_secret_keys]
        if DEVELOPMENT_WEBHOOK_SECRET_KEY in keys:
            problems.append(
                "WEBHOOK_SECRET_KEYS is not set, or holds the development key (which cannot "
                "encrypt in production)"
            )
        if self.configured_database_url() is None:
            problems.append("no database is configured (set DATABASE_URL or POSTGRES_HOST)")
        if self.embedded_database:
            problems.append("EMBEDDED_DATABASE cannot be used in production")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self


SETTINGS_BY_ENV: dict[str, type[Settings]] = {
    cls.app_env: cls for cls in (LocalSettings, TestSettings, ProdSettings)
}


def normalise_database_url(raw: str) -> URL:
    """Accept the URL forms hosting providers hand out and pin the driver we ship."""
    url = make_url(raw)
    if url.drivername in {"postgres", "postgresql"}:
        url = url.set(drivername="postgresql+psycopg2")
    return url


class TaskInputs(BaseSettings):
    """What `tasks.py` takes from the environment besides the settings: the password of the user
    tasks, for scripts that cannot answer a prompt (`TRACKER_PASSWORD`)."""

    model_config = SettingsConfigDict(extra="ignore")

    tracker_password: SecretStr | None = None
