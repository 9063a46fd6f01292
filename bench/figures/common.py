"""Helpers the figures share: interleaved sampling and rows against a baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.redis_baselines import Unavailable
from bench.stats import Row, Summary, Target

Sampler = Callable[[], float]
WARMUP = 3


def interleave(samplers: dict[str, Sampler], count: int, rounds: int = 4) -> dict[str, list[float]]:
    """``count`` samples from each system, taken in turns so drift hits all alike."""
    for sample in samplers.values():
        for _ in range(WARMUP):
            sample()
    samples: dict[str, list[float]] = {name: [] for name in samplers}
    rounds = max(1, min(rounds, count))
    for r in range(rounds):
        share = count * (r + 1) // rounds - count * r // rounds
        for name, sample in samplers.items():
            samples[name].extend(sample() for _ in range(share))
    return samples


def baselines(getters: dict[str, Callable[[], Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Start each baseline; those that cannot run come back as name -> reason."""
    ready: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name, get in getters.items():
        try:
            ready[name] = get()
        except Unavailable as exc:
            missing[name] = str(exc)
    return ready, missing


def latency_rows(
    figure: str,
    samples: dict[str, list[float]],
    targets: dict[str, Target | None],
    missing: dict[str, str],
) -> list[Row]:
    """One row per baseline: jobsup's percentiles in ms against the baseline's."""
    ours = Summary.of(samples["jobsup"], 1000)
    rows = []
    for name, target in targets.items():
        if name in missing:
            rows.append(
                Row(figure, "ms", ours, name, None, target, f"unavailable: {missing[name]}")
            )
            continue
        theirs = Summary.of(samples[name], 1000)
        extra = {"jobsup_s": samples["jobsup"], f"{name}_s": samples[name]}
        rows.append(Row(figure, "ms", ours, name, theirs, target, extra=extra))
    return rows
