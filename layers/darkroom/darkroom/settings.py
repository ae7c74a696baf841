"""Configuration from the environment the template gives each function, read once on first use."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from typing import Any

from darkroom import routing


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    jobs_table: str
    api_keys_table: str
    idempotency_table: str
    jobs_queue_url: str
    jobs_dlq_arn: str
    outputs_bucket: str
    provider_secret_arn: str
    provider_base_url: str
    # Seconds one provider call may take; the worker also keeps it below the time its invocation has left.
    provider_timeout_s: float
    provider_max_attempts: int
    # Repeat a call that may have reached the provider and lost its answer (it may be billed twice): off by default.
    retry_ambiguous_provider_calls: bool
    retry_base_delay_s: int
    rate_limit_max_requeues: int
    presign_ttl_s: int
    # How long a job may sit in the sweep index before the sweeper acts: longer than the api function's timeout, so
    # the sweeper never races a submission still under way.
    sweep_grace_s: float
    allow_http_webhooks: bool
    # Let webhook URLs reach private addresses (the SSRF guard off): only the local stack, for receivers on 127.0.0.1.
    allow_private_webhooks: bool
    webhooks_table: str
    deliveries_table: str
    webhook_retry_queue_url: str
    webhook_retry_queue_arn: str
    # When each try of a webhook delivery is made, after the one before (the first entry is the first try), from
    # WEBHOOK_RETRY_SCHEDULE_S.
    webhook_retry_schedule: tuple[int, ...]
    # The API's public base URL, which events link jobs to.
    api_url: str
    # The KMS key that seals webhook signing secrets (its id or ARN).
    webhook_secrets_key: str
    # Which provider routes may be used, and each model's routes in order (darkroom.routing).
    routes: routing.RouteConfig
    # The `gateway` route: a second OpenAI-compatible endpoint and its key (no base URL: the route is off).
    gateway_base_url: str
    gateway_secret_arn: str
    wavespeed_base_url: str
    wavespeed_secret_arn: str
    poller_state_machine_arn: str
    # The poller's first wait after a submission: about the provider's typical render time, so a job that takes that
    # long is usually seen done at the first or second poll. Later waits start shorter and grow to poll_max_wait_s.
    async_first_poll_s: float
    poll_max_wait_s: float
    # How long a job may stay `polling` before it fails as provider_timeout.
    poll_timeout_s: float
    # Failed polls in a row (provider errors, unreachable outputs) before the job fails.
    poll_failures_tolerated: int
    # Let provider output URLs point at private addresses: only the local stack, whose emulator is on 127.0.0.1.
    allow_private_urls: bool
    # How long POST /v1/uploads' presigned POSTs are valid; the job waits a little longer for uploads under way.
    upload_ttl_s: int
    # How long outputs and edit inputs stay in S3 (its lifecycle rules): what a job's stored bytes cost is priced for.
    output_retention_days: int
    # How old a succeeded job may be and still serve the cache (darkroom.jobs.cache).
    cache_max_age_s: int
    uploads_queue_url: str
    # Provider routes' shared state (rate limits, breakers), and their configured limits ({route or "*": n}).
    routes_table: str
    images_per_minute: dict[str, int]
    requests_per_minute: dict[str, int]
    # A route's circuit breaker (darkroom.breakers): opened by this many failed calls in a row across jobs (0: never),
    # for this long before one probe call may test it.
    breaker_failures: int
    breaker_open_s: float
    # The moderation check before any image call: off, prompt, or prompt_and_images (darkroom.moderation).
    moderation_mode: str
    # Tenants' quotas and usage (darkroom.quotas), and the defaults for a tenant with no quotas of its own (0: none).
    tenants_table: str
    tenant_max_in_flight: int
    tenant_submits_per_minute: int
    tenant_monthly_budget_usd: Decimal | None
    # How many `Prefer: wait` requests one tenant may have waiting at once (darkroom.quotas.wait_slot); 0: none wait.
    waits_per_tenant: int
    # The batch tier (darkroom.batches): its records, its poller, how many jobs one batch takes and how long the
    # oldest waits before a smaller batch goes anyway, and the poller's first and longest waits.
    batches_table: str = ""
    batch_poller_state_machine_arn: str = ""
    batch_max_jobs: int = 100
    batch_max_wait_s: float = 600.0
    batch_first_poll_s: float = 300.0
    batch_max_poll_s: float = 1800.0

    def request_rules(self) -> dict[str, Any]:
        """What a request is judged against besides its own fields: the deployment's webhook and route settings."""
        return {
            "allow_http_webhooks": self.allow_http_webhooks,
            "allow_private_webhooks": self.allow_private_webhooks,
            "routes": self.routes,
        }

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        return cls(
            jobs_table=env.get("JOBS_TABLE", ""),
            api_keys_table=env.get("API_KEYS_TABLE", ""),
            idempotency_table=env.get("IDEMPOTENCY_TABLE", ""),
            jobs_queue_url=env.get("JOBS_QUEUE_URL", ""),
            jobs_dlq_arn=env.get("JOBS_DLQ_ARN", ""),
            outputs_bucket=env.get("OUTPUTS_BUCKET", ""),
            provider_secret_arn=env.get("PROVIDER_SECRET_ARN", ""),
            provider_base_url=env.get("PROVIDER_BASE_URL", "https://api.openai.com/v1").rstrip("/"),
            provider_timeout_s=float(env.get("PROVIDER_TIMEOUT_S", "480")),
            provider_max_attempts=int(env.get("PROVIDER_MAX_ATTEMPTS", "3")),
            retry_ambiguous_provider_calls=_flag(env.get("RETRY_AMBIGUOUS_PROVIDER_CALLS")),
            retry_base_delay_s=int(env.get("RETRY_BASE_DELAY_S", "5")),
            rate_limit_max_requeues=int(env.get("RATE_LIMIT_MAX_REQUEUES", "20")),
            presign_ttl_s=int(env.get("PRESIGN_TTL_S", "900")),
            sweep_grace_s=float(env.get("SWEEP_GRACE_S", "60")),
            allow_http_webhooks=_flag(env.get("ALLOW_HTTP_WEBHOOKS")),
            allow_private_webhooks=_flag(env.get("WEBHOOK_ALLOW_PRIVATE")),
            webhooks_table=env.get("WEBHOOKS_TABLE", ""),
            deliveries_table=env.get("DELIVERIES_TABLE", ""),
            webhook_retry_queue_url=env.get("WEBHOOK_RETRY_QUEUE_URL", ""),
            webhook_retry_queue_arn=env.get("WEBHOOK_RETRY_QUEUE_ARN", ""),
            webhook_retry_schedule=_schedule(env.get("WEBHOOK_RETRY_SCHEDULE_S", "")),
            api_url=env.get("API_URL", "").rstrip("/"),
            webhook_secrets_key=env.get("WEBHOOK_SECRETS_KEY", ""),
            routes=_routes(env),
            gateway_base_url=env.get("GATEWAY_BASE_URL", "").rstrip("/"),
            gateway_secret_arn=env.get("GATEWAY_SECRET_ARN", ""),
            wavespeed_base_url=env.get("WAVESPEED_BASE_URL", "https://api.wavespeed.ai").rstrip("/"),
            wavespeed_secret_arn=env.get("WAVESPEED_SECRET_ARN", ""),
            poller_state_machine_arn=env.get("POLLER_STATE_MACHINE_ARN", ""),
            async_first_poll_s=float(env.get("ASYNC_FIRST_POLL_S", "15")),
            poll_max_wait_s=float(env.get("POLL_MAX_WAIT_S", "30")),
            poll_timeout_s=float(env.get("POLL_TIMEOUT_S", "1800")),
            poll_failures_tolerated=int(env.get("POLL_FAILURES_TOLERATED", "5")),
            allow_private_urls=_flag(env.get("ALLOW_PRIVATE_URLS")),
            upload_ttl_s=int(env.get("UPLOAD_TTL_S", "900")),
            output_retention_days=int(env.get("OUTPUT_RETENTION_DAYS", "30")),
            cache_max_age_s=int(env.get("CACHE_MAX_AGE_S", "86400")),
            uploads_queue_url=env.get("UPLOADS_QUEUE_URL", ""),
            routes_table=env.get("ROUTES_TABLE", ""),
            images_per_minute=_per_minute(env.get("PROVIDER_IMAGES_PER_MINUTE", "")),
            requests_per_minute=_per_minute(env.get("PROVIDER_REQUESTS_PER_MINUTE", "")),
            breaker_failures=int(env.get("PROVIDER_BREAKER_FAILURES") or "5"),
            breaker_open_s=float(env.get("PROVIDER_BREAKER_OPEN_S") or "30"),
            moderation_mode=env.get("MODERATION_MODE", "off").strip().lower() or "off",
            tenants_table=env.get("TENANTS_TABLE", ""),
            tenant_max_in_flight=int(env.get("TENANT_MAX_IN_FLIGHT") or "0"),
            tenant_submits_per_minute=int(env.get("TENANT_SUBMITS_PER_MINUTE") or "0"),
            tenant_monthly_budget_usd=Decimal(env["TENANT_MONTHLY_BUDGET_USD"])
            if env.get("TENANT_MONTHLY_BUDGET_USD")
            else None,
            waits_per_tenant=int(env.get("WAITS_PER_TENANT") or "4"),
            batches_table=env.get("BATCHES_TABLE", ""),
            batch_poller_state_machine_arn=env.get("BATCH_POLLER_STATE_MACHINE_ARN", ""),
            batch_max_jobs=int(env.get("BATCH_MAX_JOBS") or "100"),
            batch_max_wait_s=float(env.get("BATCH_MAX_WAIT_S") or "600"),
            batch_first_poll_s=float(env.get("BATCH_FIRST_POLL_S") or "300"),
            batch_max_poll_s=float(env.get("BATCH_MAX_POLL_S") or "1800"),
        )


def _routes(env: dict[str, str]) -> routing.RouteConfig:
    enabled, chains = env.get("ENABLED_PROVIDER_ROUTES", "openai"), env.get("PROVIDER_ROUTES", "*=openai")
    config = routing.RouteConfig.parse(enabled, chains)
    if not env.get("GATEWAY_BASE_URL", "").strip():
        return replace(config, enabled=config.enabled - {"gateway"})  # nowhere to send its calls
    return config


def _schedule(text: str) -> tuple[int, ...]:
    from darkroom.webhooks.schedule import DEFAULT_SCHEDULE_S, parse_schedule

    return parse_schedule(text) if text else DEFAULT_SCHEDULE_S


def _per_minute(text: str) -> dict[str, int]:
    from darkroom.ratelimit import parse_per_minute

    return parse_per_minute(text)


@cache
def settings() -> Settings:
    return Settings.from_env()
