"""Reading Prometheus text the way Prometheus does (prometheus-client's parser), for the metrics tests."""

from __future__ import annotations

import ssl

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def check(response: httpx.Response) -> Samples:
    """The samples of a `/metrics` answer, which must be 200 and Prometheus text."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def scrape(url: str, verify: ssl.SSLContext | bool = True) -> Samples:
    """GET a `/metrics` URL (no proxy from the environment: lab traffic stays local); `verify` for HTTPS."""
    return check(httpx.get(url, timeout=5, trust_env=False, verify=verify))


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent (counters not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
