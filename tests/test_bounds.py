"""Counts with bounds that follow from the machine (issue 23, item 4): threads and processes against the
usable CPUs, and upper limits on passes, repeats and runs. Was: `--threads 10000` on 2 CPUs ran and
exited 0, `--nproc 1000` started that many ranks, `--passes 1000000000` hung building its schedule.
"""

from __future__ import annotations

import pytest

from bench.analysis.health import health
from bench.cli.args import MAX_COUNTS, cpu_share_warnings, whole_usable_cpus
from bench.core.errors import UsageError
from bench.core.keys import CaseKey
from bench.core.results import CaseResult
from tests.conftest import make_run, run_cli

QUICK = ("--quick", "--dataset", "synthetic", "--workloads", "forward")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--threads", "10000"), "is far above the"),
        (("--nproc", "16", "--workloads", "train_step"), "more processes than the"),
        (("--nproc", "1000", "--workloads", "train_step", "--oversubscribe"), "between 1 and 256"),
        (("--passes", "1000000000"), "--passes 1000000000 must be at most 100"),
        (("--epoch-repeats", "101"), "must be at most 100"),
        (("--train-runs", "0"), "must be at least 1"),
    ],
)
def test_counts_beyond_the_machine_or_the_limits_are_refused_at_once(tmp_path, extra, said) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    result = run_cli("run", *QUICK, "--out", str(out), *extra, timeout=60)
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.output, (
        result.output
    )
    assert not out.exists()


def test_threads_above_the_cpus_warn_and_far_above_need_the_flag() -> None:
    cpus = 2
    assert cpu_share_warnings((None,), 1, True, cpus, False) == []
    assert "marked oversubscribed" in cpu_share_warnings((1, 4), 1, True, cpus, False)[0]
    with pytest.raises(UsageError, match="far above"):
        cpu_share_warnings((9,), 1, True, cpus, False)
    assert cpu_share_warnings((9,), 1, True, cpus, True)  # allowed, and warned
    assert cpu_share_warnings((9,), 1, False, cpus, False) == []  # no CPU case: threads do not matter
    with pytest.raises(UsageError, match="between 1 and 256"):
        cpu_share_warnings((None,), 1000, True, cpus, True)
    assert MAX_COUNTS["passes"] == 100 and whole_usable_cpus() >= 1


def test_an_oversubscribed_case_is_marked() -> None:
    case = CaseResult.failure(CaseKey("forward", "cpu", 64, threads=8), "skipped", "not run")  # type: ignore[arg-type]
    fitting = CaseResult.failure(CaseKey("forward", "cpu", 64, threads=2), "skipped", "not run")  # type: ignore[arg-type]
    run = make_run(case, fitting)
    run.env = {"cpu": {"usable_cpus": 2}}
    assert "oversubscribed" in health(run, case, None) and "oversubscribed" not in health(run, fitting, None)
