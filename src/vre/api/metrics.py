"""``/metrics`` in Prometheus' text format (admin token, as Prometheus' bearer_token)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from vre.api.deps import Caller, unit
from vre.lake import metrics

router = APIRouter(tags=["metrics"])


class _Snapshot(Collector):
    """A one-shot collector over a database snapshot."""

    def __init__(self, snap: metrics.Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        queue = GaugeMetricFamily("vre_transfers", "Transfer requests by state", labels=["state"])
        for state, count in snap.transfers_by_state.items():
            queue.add_metric([state], count)
        yield queue
        yield CounterMetricFamily(
            "vre_transfer_bytes", "Bytes copied by transfers", value=snap.transfer_bytes
        )
        yield CounterMetricFamily(
            "vre_transfer_failures", "Transfer attempts that failed", value=snap.transfer_failures
        )
        buckets = [(str(b), c) for b, c in snap.duration_buckets]
        buckets.append(("+Inf", snap.duration_count))
        yield HistogramMetricFamily(
            "vre_transfer_duration_seconds",
            "Duration of done transfers",
            buckets=buckets,
            sum_value=snap.duration_sum,
        )
        rules = GaugeMetricFamily("vre_rules", "Replication rules by state", labels=["state"])
        for state, count in snap.rules_by_state.items():
            rules.add_metric([state], count)
        yield rules
        replicas = GaugeMetricFamily("vre_replicas", "Replicas by state", labels=["state"])
        for state, count in snap.replicas_by_state.items():
            replicas.add_metric([state], count)
        yield replicas


@router.get("/metrics", response_class=Response)
def prometheus(caller: Caller, request: Request) -> Response:
    with unit(request) as session:
        snap = metrics.snapshot(session, caller)
    registry = CollectorRegistry()
    registry.register(_Snapshot(snap))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
