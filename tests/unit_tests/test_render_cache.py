"""The render cache is bounded in entries and in bytes, keeps no oversized render, and keeps
nothing of a call the backends refused (issue 27, "Resources")."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from langchain_glimprouter.core.prompts import RenderCache, cache_key
from langchain_glimprouter.errors import ContextLengthExceededError
from tests.support.proxy import QUESTION, proxy_router


def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = RenderCache(3, max_bytes=10_000, max_entry_bytes=4_000)
    for n in range(5):
        cache.put(str(n), "x" * 10)
    assert len(cache) == 3
    assert cache.get("0") is None
    assert cache.get("4") is not None
    for n in range(5):
        cache.put(f"big{n}", "y" * 3_000)
    assert cache.nbytes <= 10_000
    assert len(cache) == 3
    assert cache.nbytes == sum(sys.getsizeof(cache.get(k) or "") for k in ("big2", "big3", "big4"))


def test_a_render_over_the_entry_cap_is_not_kept() -> None:
    cache = RenderCache(max_bytes=10_000, max_entry_bytes=1_000)
    cache.put("small", "a")
    cache.put("huge", "b" * 2_000)
    assert cache.get("huge") is None
    assert cache.get("small") == "a"


def test_a_replaced_render_is_counted_once() -> None:
    cache = RenderCache()
    cache.put("k", "a" * 100)
    cache.put("k", "b" * 100)
    assert len(cache) == 1
    assert cache.nbytes == sys.getsizeof("b" * 100)


def test_keys_are_digests_not_the_conversation() -> None:
    key = cache_key("http://s/v1", "m", [{"role": "user", "content": "x" * 1_000_000}])
    assert len(key) == 64


def test_staged_renders_reach_the_cache_only_on_commit() -> None:
    cache = RenderCache()
    staged = cache.staged()
    staged.put("k", "text")
    assert staged.get("k") == "text"
    assert cache.get("k") is None
    staged.commit()
    assert cache.get("k") == "text"


def test_a_refused_call_caches_nothing(servers: Any) -> None:
    small, large = servers(max_model_len=30)
    router = proxy_router(small, large)
    with pytest.raises(ContextLengthExceededError):
        router.run(QUESTION * 10)
    assert len(router.facts.renders) == 0


def test_an_answered_call_caches_its_renders(servers: Any) -> None:
    small, large = servers()
    router = proxy_router(small, large)
    router.run(QUESTION)
    assert len(router.facts.renders) == 2  # the small and the large backend's prompt
    router.run(QUESTION)
    assert len(router.facts.renders) == 2  # the second call found both
