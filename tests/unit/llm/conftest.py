"""Fixtures of the LLM tests: the fake server, and providers on both SDK transports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.llm import Provider
from service.settings import ProviderSettings
from tests import fake_llm as f

MakeProvider = Callable[..., Provider]


@pytest.fixture
async def fake() -> AsyncIterator[f.FakeLLM]:
    async with f.FakeLLM() as server:
        yield server


@pytest.fixture(params=["aiohttp", "httpx"])
async def make_provider(
    fake: f.FakeLLM, request: pytest.FixtureRequest
) -> AsyncIterator[MakeProvider]:
    """Providers on each of the SDK's HTTP transports: every behaviour holds on both."""
    made: list[Provider] = []

    def make(**overrides: Any) -> Provider:
        cfg: dict[str, Any] = {
            "http_client": request.param,
            "model": "qwen3-vl",
            "base_url": fake.base_url,
            "api_key": "sk-test-secret-1234",
            "timeout_s": 2.0,
            "connect_timeout_s": 1.0,
            "max_retries": 2,
        }
        cfg.update(overrides)
        provider = Provider("local", ProviderSettings(**cfg), retry_base_s=0.01)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
