"""The run summary reads a portable run's metrics as the job service reports them.

The end-to-end proof is on Flink (tests/test_lake_flink.py: a step's counter reported by
several fused stages, summed). Here a stand-in job service answers ``GetJobMetrics`` with
real MonitoringInfo protos (Beam's own constructors), so the summing and the read-until-
stable rule are checked on exact inputs; no runner exposes either on demand.
"""

from __future__ import annotations

from typing import Any

from apache_beam.metrics import monitoring_infos as mi
from apache_beam.portability.api import beam_job_api_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.summary import SETTLE_READS, counter_values, distribution_values


class _JobService:
    """Answers ``GetJobMetrics`` with the given MonitoringInfo lists, one per call (the
    last repeats), as Prism or Flink's job server would."""

    def __init__(self, answers: list[list[Any]]):
        self.answers = answers
        self.calls = 0

    def GetJobMetrics(self, request: Any) -> Any:  # the gRPC method's name
        assert request.job_id == "job-1"
        infos = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return beam_job_api_pb2.GetJobMetricsResponse(
            metrics=beam_job_api_pb2.MetricResults(committed=infos)
        )


class _Result:
    def __init__(self, service: _JobService):
        self._job_service = service
        self._job_id = "job-1"


def _counter(step: str, name: str, value: int) -> Any:
    return mi.int64_user_counter("connector.lake", name, value, ptransform=step)


@settings(max_examples=25, deadline=None)  # each read of a stable answer takes 0.2 s
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6))
def test_a_counter_reported_by_several_stages_is_their_sum(values: list[int]) -> None:
    # Flink: the same step and name once per fused stage that ran it (the last used to win).
    infos = [_counter("DeadLetters/Write", "dead_lettered", v) for v in values]
    infos.append(_counter("Deliver/ParDo(_DeliverBatch)", "delivered", 7))
    got = counter_values(_Result(_JobService([infos])))
    assert got[("connector.lake", "dead_lettered")] == sum(values)
    assert got[("connector.lake", "delivered")] == 7


def test_distributions_of_several_stages_combine() -> None:
    infos = [
        mi.int64_user_distribution("connector.lake", "events_per_write", d, ptransform="D")
        for d in (mi.DistributionData(100, 2, 40, 60), mi.DistributionData(5, 1, 5, 5))
    ]
    got = distribution_values(_Result(_JobService([infos])))
    assert got[("connector.lake", "events_per_write")] == (3, 105, 5, 60)


def test_the_metrics_are_read_until_two_answers_agree() -> None:
    # Prism once answered short counts right after the job ended, the right ones next.
    short = [_counter("Deliver", "delivered", 76)]
    right = [_counter("Deliver", "delivered", 112)]
    service = _JobService([short, right, right])
    assert counter_values(_Result(service)) == {("connector.lake", "delivered"): 112}
    assert service.calls == 3
    never = _JobService([[_counter("Deliver", "delivered", n)] for n in range(50)])
    counter_values(_Result(never))
    assert never.calls == SETTLE_READS  # bounded: a service that never settles is not waited on
