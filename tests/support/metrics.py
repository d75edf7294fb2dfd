"""Read a Prometheus text exposition in tests: samples by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# /metrics on the public port needs METRICS_TOKEN (private by default): tests set it and send this header.
METRICS_TOKEN = "test-metrics-token-" + "m" * 32
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@dataclass(frozen=True)
class Scrape:
    """Every sample of one exposition, as (name, sorted labels) -> value."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def parse(cls, text: str | bytes) -> Scrape:
        if isinstance(text, bytes):
            text = text.decode()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(samples)

    def value(self, name: str, /, **labels: str) -> float | None:
        """The value of the sample with exactly these labels, or None when there is none."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def series(self, name: str, /) -> list[dict[str, str]]:
        """The label sets of every sample named `name`."""
        return [dict(labels) for (sample_name, labels) in self.samples if sample_name == name]

    def names(self) -> set[str]:
        """Every sample name (with _bucket/_sum/_count/_total suffixes as exposed)."""
        return {name for name, _ in self.samples}

    def label_names(self) -> set[str]:
        return {key for _, labels in self.samples for key, _ in labels}
