"""The verdict, the operator summary, the stdout table and the chart."""

import json

import pytest

from medusa_builder.validation.accuracy import score
from medusa_builder.validation.dataset import Question, SubjectSet
from medusa_builder.validation.report import Measurements, build_report, render_chart, render_table, summary
from medusa_builder.validation.throughput import Sample, summarize
from medusa_builder.validation.verdict import Thresholds, evaluate


def test_each_failed_threshold_is_named_with_measured_and_required_values():
    failures = evaluate(Thresholds(min_score=0.6, max_drop_vs_base=0.01, min_speedup=1.5),
                        accuracy=0.5, base_accuracy=0.55, speedup=1.2)
    by_name = {f["threshold"]: f for f in failures}
    assert list(by_name) == ["minScore", "maxDropVsBase", "minSpeedup"]
    assert by_name["minScore"]["measured"] == 0.5 and by_name["minScore"]["required"] == 0.6
    assert by_name["maxDropVsBase"]["measured"] == pytest.approx(0.05)
    assert "0.550 -> 0.500" in by_name["maxDropVsBase"]["message"]
    assert by_name["minSpeedup"]["message"] == "speedup 1.20x is below the required 1.50x"


def test_thresholds_met_exactly_pass_and_unset_thresholds_are_not_checked():
    assert evaluate(Thresholds(min_score=0.5, max_drop_vs_base=0.0, min_speedup=2.0),
                    accuracy=0.5, base_accuracy=0.5, speedup=2.0) == []
    assert evaluate(Thresholds(), accuracy=0.0, base_accuracy=1.0, speedup=0.1) == []
    # A better candidate than the baseline is no drop.
    assert evaluate(Thresholds(max_drop_vs_base=0.0), accuracy=0.9, base_accuracy=0.8, speedup=None) == []


def test_a_threshold_that_was_not_measured_fails_instead_of_passing():
    failures = evaluate(Thresholds(min_score=0.1, min_speedup=1.0), accuracy=None, base_accuracy=None, speedup=None)
    assert [f["threshold"] for f in failures] == ["minScore", "minSpeedup"]
    assert all(f["measured"] is None for f in failures)


def _measurements() -> Measurements:
    questions = [Question("geo", f"q{i}", ("a", "b", "c", "d"), "ABCD"[i % 4]) for i in range(4)]
    sets = [SubjectSet("geo", dev=[], test=questions)]
    m = Measurements(levels=[1, 4])
    m.accuracy = score(sets, [" A", " B", " D", "no idea"])
    m.base_accuracy = score(sets, [" A", " B", " C", " A"])
    for level, factor in ((1, 1.0), (4, 3.0)):
        for topic, tokens in (("math", 100), ("prose", 60)):
            m.throughput.append(summarize(topic, level, [Sample(int(tokens * factor), 0, 1,
                                                                accepted_draft_tokens=tokens // 2)]))
            m.base_throughput.append(summarize(topic, level, [Sample(int(tokens * factor), 0, 2)]))
    return m


def _report(m: Measurements, failures=()) -> dict:
    return build_report(m, failures=list(failures), thresholds=Thresholds(min_speedup=1.5).to_dict(),
                        candidate={"url": "http://c:8000", "model": "ensemble"},
                        baseline={"url": "http://b:8000", "model": "ensemble"}, settings={}, timing={})


def test_summary_carries_the_operator_fields_at_the_first_concurrency_level():
    report = _report(_measurements())
    result = summary(report, report_uri="s3://r/report.json", chart_uri="s3://r/report.png")
    assert result["passed"] is True
    assert result["accuracy"] == 0.5 and result["baseAccuracy"] == 0.75
    # The topics run one after the other: 160 tokens in 2 s against 160 tokens in 4 s.
    assert result["tokensPerSecond"] == 80.0 and result["baseTokensPerSecond"] == 40.0
    assert result["speedup"] == 2.0 and result["concurrency"] == 1
    assert result["meanAcceptedTokens"] == 2.0
    assert result["perTopic"] == [
        {"topic": "math", "tokensPerSecond": 100.0, "baseTokensPerSecond": 50.0, "speedup": 2.0},
        {"topic": "prose", "tokensPerSecond": 60.0, "baseTokensPerSecond": 30.0, "speedup": 2.0}]
    assert result["reportUri"] == "s3://r/report.json" and result["failures"] == []
    assert report["accuracy"]["agreement"] == 0.5
    assert report["accuracy"]["candidate"]["perSubject"][0]["predictions"] == "ABD-"
    json.dumps(report, allow_nan=False)


def test_summary_stays_small_with_many_topics():
    m = Measurements(levels=[1])
    for i in range(200):
        m.throughput.append(summarize(f"topic-number-{i}", 1, [Sample(10, 0, 1)]))
        m.base_throughput.append(summarize(f"topic-number-{i}", 1, [Sample(5, 0, 1)]))
    failures = [{"threshold": "minSpeedup", "measured": 2.0, "required": 3.0, "message": "x" * 5000}]
    result = summary(_report(m, failures), report_uri="s3://r/report.json", chart_uri=None)
    assert len(result["perTopic"]) == 12 and result["perTopicTruncated"] is True
    assert len(json.dumps(result)) < 3000


def test_table_names_every_subject_topic_level_and_the_verdict():
    failures = [{"threshold": "minSpeedup", "measured": 1.2, "required": 1.5, "message": "speedup 1.20x is low"}]
    table = render_table(_report(_measurements(), failures))
    assert "geo" in table and "same answer as the baseline: 50.0%" in table
    assert "Tokens/s at concurrency 1" in table and "Tokens/s at concurrency 4" in table
    assert "math" in table and "2.00x" in table
    assert table.endswith("Verdict: FAIL\n  - minSpeedup: speedup 1.20x is low")


def test_chart_is_a_png_and_is_skipped_without_throughput(tmp_path):
    assert render_chart(_report(_measurements()), tmp_path / "chart.png") is True
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    m = _measurements()
    m.throughput, m.base_throughput = [], []
    assert render_chart(_report(m), tmp_path / "none.png") is False
    assert not (tmp_path / "none.png").exists()
