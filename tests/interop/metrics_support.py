"""Reading Tidewater's /metrics with Prometheus' own parser (`prometheus_client`), so the page is
checked by an implementation nobody here wrote: a malformed line fails the parse."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

# How long a test waits for a series to reach what it expects (metrics are read live, but the
# components that feed them act asynchronously: a group commits, a job checkpoints).
METRICS_TIMEOUT_S = 30.0


class Scrape:
    """One scrape: every sample by name and labels."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def get(self, name: str, **labels: str) -> float:
        """A sample's value, 0 when the series does not exist yet (a counter not yet touched)."""
        value = self.value(name, **labels)
        return 0.0 if value is None else value

    def series(self, name: str) -> dict[frozenset, float]:
        """Every sample named `name`, by its labels."""
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}


def http_get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, str, dict]:
    """(status, body, headers with lower-case names) of a request to the admin listener; 4xx and
    5xx are returned, not raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), {name.lower(): value for name, value in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), {name.lower(): value for name, value in error.headers.items()}


def scrape(port: int, headers: dict[str, str] | None = None) -> Scrape:
    status, body, response_headers = http_get(port, "/metrics", headers)
    assert status == 200, f"/metrics answered {status}: {body}"
    assert response_headers.get("content-type", "").startswith("text/plain; version=0.0.4"), response_headers
    return Scrape(body)


def wait_for_scrape(port: int, condition: Callable[[Scrape], bool], what: str,
                    timeout_s: float = METRICS_TIMEOUT_S) -> Scrape:
    """Scrapes until `condition` holds; fails with the last page's tidewater lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = scrape(port)
        if condition(page):
            return page
        if time.monotonic() >= deadline:
            relevant = "\n".join(line for line in page.text.splitlines() if not line.startswith("#"))
            raise AssertionError(f"/metrics never showed {what} within {timeout_s}s:\n{relevant[-4000:]}")
        time.sleep(0.2)
