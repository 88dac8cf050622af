"""The validation report in three forms: full JSON, the operator's summary, a stdout table, a chart.

The headline tokens/s and speedup are those of the first concurrency level asked for (1 by
default, where Medusa's latency gain shows most); every level is in the full report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .accuracy import AccuracyResult, agreement
from .throughput import LevelStats, combine

REPORT_SCHEMA_VERSION = 1
SUMMARY_MAX_TOPICS = 12


@dataclass
class Measurements:
    levels: list[int]
    accuracy: AccuracyResult | None = None
    base_accuracy: AccuracyResult | None = None
    throughput: list[LevelStats] = field(default_factory=list)
    base_throughput: list[LevelStats] = field(default_factory=list)

    @property
    def headline_level(self) -> int | None:
        return self.levels[0] if self.levels and self.throughput else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _at_level(stats: list[LevelStats], level: int) -> list[LevelStats]:
    return [s for s in stats if s.concurrency == level]


def topic_rows(m: Measurements, level: int) -> list[dict]:
    base = {s.topic: s for s in _at_level(m.base_throughput, level)}
    rows = []
    for stats in _at_level(m.throughput, level):
        base_tps = base[stats.topic].tokens_per_second if stats.topic in base else None
        rows.append({"topic": stats.topic, "tokensPerSecond": stats.tokens_per_second,
                     "baseTokensPerSecond": base_tps, "speedup": ratio(stats.tokens_per_second, base_tps)})
    return rows


def level_overall(m: Measurements, level: int) -> dict:
    candidate = combine(_at_level(m.throughput, level))
    baseline = combine(_at_level(m.base_throughput, level)) if m.base_throughput else None
    return {"concurrency": level, "candidate": candidate, "baseline": baseline,
            "speedup": ratio(candidate["tokensPerSecond"], baseline["tokensPerSecond"] if baseline else None)}


def headline(m: Measurements) -> dict:
    """The numbers the verdict and the operator use."""
    out = {"accuracy": m.accuracy.accuracy if m.accuracy else None,
           "baseAccuracy": m.base_accuracy.accuracy if m.base_accuracy else None,
           "tokensPerSecond": None, "baseTokensPerSecond": None, "speedup": None, "meanAcceptedTokens": None,
           "concurrency": m.headline_level}
    if m.headline_level is not None:
        overall = level_overall(m, m.headline_level)
        out["tokensPerSecond"] = overall["candidate"]["tokensPerSecond"]
        out["meanAcceptedTokens"] = overall["candidate"]["meanAcceptedTokens"]
        if overall["baseline"]:
            out["baseTokensPerSecond"] = overall["baseline"]["tokensPerSecond"]
        out["speedup"] = overall["speedup"]
    return out


def _accuracy_doc(result: AccuracyResult) -> dict:
    return {"accuracy": result.accuracy, "macroAccuracy": result.macro_accuracy, "correct": result.correct,
            "total": result.total,
            "perSubject": [{"subject": s.subject, "accuracy": s.accuracy, "correct": s.correct, "total": s.total,
                            "unparsed": s.unparsed, "predictions": "".join(p or "-" for p in s.predictions)}
                           for s in result.subjects]}


def build_report(m: Measurements, *, failures: list[dict], thresholds: dict, candidate: dict,
                 baseline: dict | None, settings: dict, timing: dict) -> dict:
    accuracy = None
    if m.accuracy:
        accuracy = {"candidate": _accuracy_doc(m.accuracy),
                    "baseline": _accuracy_doc(m.base_accuracy) if m.base_accuracy else None,
                    "agreement": agreement(m.accuracy, m.base_accuracy) if m.base_accuracy else None}
    throughput = None
    if m.throughput:
        levels = []
        for level in m.levels:
            base = {s.topic: s for s in _at_level(m.base_throughput, level)}
            per_topic = [{"topic": s.topic, "candidate": s.to_dict(),
                          "baseline": base[s.topic].to_dict() if s.topic in base else None,
                          "speedup": ratio(s.tokens_per_second, base[s.topic].tokens_per_second
                                           if s.topic in base else None)}
                         for s in _at_level(m.throughput, level)]
            levels.append({**level_overall(m, level), "perTopic": per_topic})
        throughput = {"headlineConcurrency": m.headline_level, "levels": levels}
    return {"schemaVersion": REPORT_SCHEMA_VERSION, "passed": not failures, "failures": failures,
            "thresholds": thresholds, "headline": headline(m), "candidate": candidate, "baseline": baseline,
            "settings": settings, "accuracy": accuracy, "throughput": throughput, **timing}


def summary(report: dict, *, report_uri: str | None, chart_uri: str | None) -> dict:
    """The operator's result fields (camelCase, rounded, a bounded number of topics)."""
    head = report["headline"]
    rows = []
    if report["throughput"]:
        level = next(lv for lv in report["throughput"]["levels"]
                     if lv["concurrency"] == report["throughput"]["headlineConcurrency"])
        rows = [{"topic": t["topic"], "tokensPerSecond": _round(t["candidate"]["tokensPerSecond"], 2),
                 "baseTokensPerSecond": _round(t["baseline"]["tokensPerSecond"], 2) if t["baseline"] else None,
                 "speedup": _round(t["speedup"], 3)} for t in level["perTopic"]]
    out = {
        "passed": report["passed"],
        "accuracy": _round(head["accuracy"], 4),
        "baseAccuracy": _round(head["baseAccuracy"], 4),
        "tokensPerSecond": _round(head["tokensPerSecond"], 2),
        "baseTokensPerSecond": _round(head["baseTokensPerSecond"], 2),
        "speedup": _round(head["speedup"], 3),
        "meanAcceptedTokens": _round(head["meanAcceptedTokens"], 3),
        "concurrency": head["concurrency"],
        "perTopic": rows[:SUMMARY_MAX_TOPICS],
        "failures": [{**f, "message": f["message"][:300]} for f in report["failures"]],
        "reportUri": report_uri,
        "chartUri": chart_uri,
    }
    if len(rows) > SUMMARY_MAX_TOPICS:
        out["perTopicTruncated"] = True
    return out


# --- the stdout table ------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _ms(stats: dict | None) -> str:
    return "-" if not stats else f"{stats['mean'] * 1000:.0f}"


def render_table(report: dict) -> str:
    lines = []
    if report["accuracy"]:
        cand, base = report["accuracy"]["candidate"], report["accuracy"]["baseline"]
        base_by = {s["subject"]: s for s in base["perSubject"]} if base else {}
        width = max([len("overall")] + [len(s["subject"]) for s in cand["perSubject"]])
        lines.append(f"Accuracy{'':{width - 6}}  candidate  baseline  questions")
        for row in cand["perSubject"]:
            other = base_by.get(row["subject"])
            lines.append(f"  {row['subject']:<{width}}  {row['accuracy']:>9.3f}  "
                         f"{_fmt(other['accuracy'] if other else None, '>8.3f'):>8}  {row['total']:>9}")
        lines.append(f"  {'overall':<{width}}  {cand['accuracy']:>9.3f}  "
                     f"{_fmt(base['accuracy'] if base else None, '>8.3f'):>8}  {cand['total']:>9}")
        if report["accuracy"]["agreement"] is not None:
            lines.append(f"  same answer as the baseline: {report['accuracy']['agreement']:.1%}")
        lines.append("")
    if report["throughput"]:
        for level in report["throughput"]["levels"]:
            topics = level["perTopic"]
            width = max([len("overall")] + [len(t["topic"]) for t in topics])
            lines.append(f"Tokens/s at concurrency {level['concurrency']}")
            lines.append(f"  {'topic':<{width}}  candidate  baseline  speedup  ttft ms  itl ms  accepted/step")
            for t in topics:
                c = t["candidate"]
                lines.append(f"  {t['topic']:<{width}}  {c['tokensPerSecond']:>9.1f}  "
                             f"{_fmt(t['baseline']['tokensPerSecond'] if t['baseline'] else None, '>8.1f'):>8}  "
                             f"{_fmt(t['speedup'], '>6.2f'):>6}x  {_ms(c['ttftSeconds']):>7}  "
                             f"{_ms(c['itlSeconds']):>6}  {_fmt(c['meanAcceptedTokens'], '>13.2f'):>13}")
            base_tps = level["baseline"]["tokensPerSecond"] if level["baseline"] else None
            lines.append(f"  {'overall':<{width}}  {level['candidate']['tokensPerSecond']:>9.1f}  "
                         f"{_fmt(base_tps, '>8.1f'):>8}  {_fmt(level['speedup'], '>6.2f'):>6}x")
            lines.append("")
    lines.append(f"Verdict: {'PASS' if report['passed'] else 'FAIL'}")
    lines += [f"  - {f['threshold']}: {f['message']}" for f in report["failures"]]
    return "\n".join(lines)


# --- the chart -------------------------------------------------------------------------------


def render_chart(report: dict, path: str | Path) -> bool:
    """Tokens/s per topic, baseline beside candidate, one panel per concurrency level.

    Returns False (and writes nothing) when no throughput was measured.
    """
    if not report["throughput"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["throughput"]["levels"]
    fig, axes = plt.subplots(len(levels), 1, figsize=(max(6.0, 1.6 * len(levels[0]["perTopic"]) + 2),
                                                      3.6 * len(levels)), squeeze=False)
    for ax, level in zip(axes[:, 0], levels):
        topics = level["perTopic"]
        positions = range(len(topics))
        base = [t["baseline"]["tokensPerSecond"] if t["baseline"] else 0.0 for t in topics]
        cand = [t["candidate"]["tokensPerSecond"] for t in topics]
        ax.bar([p - 0.2 for p in positions], base, width=0.4, label="base", color="#9aa5b1")
        bars = ax.bar([p + 0.2 for p in positions], cand, width=0.4, label="Medusa", color="#2f7ed8")
        for bar, topic in zip(bars, topics):
            if topic["speedup"]:
                ax.annotate(f"{topic['speedup']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(positions))
        ax.set_xticklabels([t["topic"] for t in topics], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("output tokens/s")
        ax.set_title(f"concurrency {level['concurrency']}")
        ax.legend(fontsize=8)
    verdict = "PASS" if report["passed"] else "FAIL"
    fig.suptitle(f"Tokens/s per topic, base vs Medusa ({verdict})")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
