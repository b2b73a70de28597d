"""The benchmarks' own bookkeeping: what their results files record."""

from __future__ import annotations

from benchmarks import bench_router, real_overhead


def test_client_benchmarks_record_the_transport_the_router_uses() -> None:
    """The router's requests go through the openai SDK over httpx2/httpcore2, not httpx."""
    for names in (bench_router.versions(), real_overhead.versions(None)):
        assert {"openai", "httpx2", "httpcore2"} <= set(names)
