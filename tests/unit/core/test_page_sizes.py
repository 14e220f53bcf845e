"""Page sizes: one table (core.validation.PAGE_SIZES) for every built list, and docs/http.md says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lobwife.v1 import jobs_pb2, tasks_pb2
from lobwife.v1.services import SERVICES
from lobwife_server.app import NOT_BUILT
from lobwife_server.core.errors import ApiError
from lobwife_server.core.validation import PAGE_SIZES, request_page_size

DOCS = Path(__file__).resolve().parents[3] / "docs" / "http.md"


def _built_lists() -> set[str]:
    out = set()
    for svc in SERVICES:
        for m in svc.methods:
            built = svc.full_name not in NOT_BUILT and f"/{svc.full_name}/{m.name}" not in NOT_BUILT
            if built and "page_size" in m.input_type.fields_by_name:
                out.add(m.input_type.full_name)
    return out


def test_every_built_list_has_its_row_and_no_row_is_stale() -> None:
    assert set(PAGE_SIZES) == _built_lists()
    for bounds in PAGE_SIZES.values():
        assert 0 < bounds.default <= bounds.maximum


def test_docs_list_the_same_bounds() -> None:
    rows = re.findall(r"^\| [^|]+ \| `(\w+)` \| (\d+) \| (\d+) \|$", DOCS.read_text(), re.M)
    assert {f"lobwife.v1.{name}": (int(d), int(m)) for name, d, m in rows} == {
        k: (b.default, b.maximum) for k, b in PAGE_SIZES.items()
    }


@pytest.mark.parametrize(
    ("req", "default", "maximum"),
    [
        (tasks_pb2.ListTasksRequest, 100, 500),
        (tasks_pb2.ListTaskEventsRequest, 100, 1000),
        (jobs_pb2.ListJobsRequest, 100, 1000),
        (jobs_pb2.ListJobRunsRequest, 50, 500),
    ],
)
def test_each_request_type_gets_its_bounds(req: type, default: int, maximum: int) -> None:
    assert request_page_size(req()) == default
    assert request_page_size(req(page_size=7)) == 7
    assert request_page_size(req(page_size=maximum + 1)) == maximum
    with pytest.raises(ApiError, match=r"^page_size: must not be negative"):
        request_page_size(req(page_size=-1))
