"""Sidecar configuration and the pod-level knobs, validated with pydantic (errors name field and rule)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trimtab.collectors.names import latency_buckets_s


class ControlSettings(BaseModel):
    """The knobs the controller sets through the control API; all are in force at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency_limit: int = Field(8, ge=1, le=100_000)
    max_batch_size: int = Field(8, ge=1, le=65_536)
    batch_timeout_ms: float = Field(5.0, ge=0, le=60_000)
    # Longest wait for admission before a 503; None: the proxy's --queue-timeout-s. The
    # controller lowers it to what still leaves time to meet the SLO, so an overload sheds
    # the requests that would be late anyway instead of making every later one late too.
    queue_timeout_s: float | None = Field(None, gt=0, le=3600)

    @field_validator("concurrency_limit", "max_batch_size", mode="before")
    @classmethod
    def _strict_int(cls, value: object) -> object:
        # JSON 3.5 or true must not silently become 3 or 1.
        # Nor may the JSON string "4" or " 7 " pass for a number: a knob is a JSON integer.
        if isinstance(value, (bool, str)) or (isinstance(value, float)
                                              and not value.is_integer()):
            raise ValueError("must be an integer")
        return value

    @field_validator("batch_timeout_ms", "queue_timeout_s", mode="before")
    @classmethod
    def _number(cls, value: object, info: Any) -> object:
        if value is None and info.field_name == "queue_timeout_s":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        return value


class ProxyLimits(BaseModel):
    """Admission proxy limits: queue, timeouts and request size bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queue_length: int = Field(256, ge=0)
    queue_timeout_s: float = Field(5.0, gt=0)
    upstream_timeout_s: float = Field(300.0, gt=0)
    upstream_connect_timeout_s: float = Field(5.0, gt=0)
    max_header_bytes: int = Field(16_384, ge=1024)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)
    retry_after_s: int = Field(1, ge=0)
    body_timeout_s: float = Field(30.0, gt=0)   # slow request bodies are cut off with 408
    # Client connections (collectors/connguard.py): a complete request head within this long
    # of its first byte, an idle keep-alive connection closed after this long (nginx's
    # keepalive_timeout default), and at most this many open at once.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    keepalive_idle_s: float = Field(75.0, gt=0, le=86_400)
    max_connections: int = Field(4096, ge=1, le=1_000_000)


class SidecarConfig(BaseModel):
    """Everything `trimtab sidecar` needs; the CLI fills it from its options."""

    model_config = ConfigDict(extra="forbid")

    upstream: str
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9400, ge=0, le=65535)
    proxy: bool = False
    adapter: str | None = None              # triton | vllm | sglang | prometheus
    adapter_metrics_url: str | None = None  # default: upstream + /metrics
    adapter_mapping_file: str | None = None
    adapter_interval_s: float = Field(5.0, gt=0)
    gpu: str = "auto"                       # auto | off | fake
    fake_gpu_config: str | None = None
    gpu_poll_s: float = Field(1.0, gt=0)
    models: tuple[str, ...] = ("default",)
    slo_latency_s: tuple[float, ...] = ()
    control_token: str | None = None
    triton_model_control: bool = False
    triton_apply_min_interval_s: float = Field(30.0, ge=0)
    initial: ControlSettings = ControlSettings()
    limits: ProxyLimits = ProxyLimits()

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, value: str | None) -> str | None:
        if value not in (None, "triton", "vllm", "sglang", "prometheus"):
            raise ValueError("must be one of triton, vllm, sglang, prometheus")
        return value

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, value: str) -> str:
        if value not in ("auto", "off", "fake"):
            raise ValueError("must be one of auto, off, fake")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one model name is needed")
        if "other" in value:
            raise ValueError("'other' is reserved for requests to unlisted models")
        return tuple(dict.fromkeys(value))

    @field_validator("slo_latency_s")
    @classmethod
    def _slo(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        latency_buckets_s(value)   # raises with the threshold named
        return value

    @property
    def default_model(self) -> str:
        return self.models[0]

    @property
    def buckets_s(self) -> tuple[float, ...]:
        return latency_buckets_s(self.slo_latency_s)
