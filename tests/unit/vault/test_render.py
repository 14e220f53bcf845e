"""The file format on strings: owned keys, the folder rule, a person's edits kept, hostile text."""

from __future__ import annotations

import pytest
import yaml

from lobwife_server.vault import render
from lobwife_server.vault.render import OWNED_KEYS, FrontmatterError, TablePage
from tests.unit.vault.conftest import task


def owned_of(t: object, number: int = 1, status: str = "active") -> dict[str, object]:
    return render.task_frontmatter(t, number, status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "folder"),
    [
        ("queued", "active"),
        ("active", "active"),
        ("blocked", "active"),
        ("completed", "completed"),
        ("failed", "failed"),
        ("cancelled", "failed"),
    ],
)
def test_folder_rule(status: str, folder: str) -> None:
    t = task(42, status)
    word = render.status_word(t.status)
    assert word == status
    assert render.task_path(render.task_number(t) or 0, render.FOLDER_OF[word]) == f"010-tasks/{folder}/T42.md"


def test_unspecified_status_and_bad_number_have_no_file() -> None:
    assert render.status_word(0) is None
    assert render.status_word(99) is None
    assert render.task_number(task(0, task_id="../x")) is None
    assert render.task_number(task(0, task_id="T7")) == 7


def test_new_file_has_every_owned_key_in_order_and_explicit_times() -> None:
    t = task(42, "completed", model="opus", assigned_to="lobster-3", estimate_minutes_exact=2.5)
    owned = owned_of(t, 42, "completed")
    text = render.new_document(owned, render.new_task_body(42, t.name))
    doc = render.split_document(text)
    assert tuple(doc.data) == OWNED_KEYS
    assert doc.data["task_id"] == "T42"
    assert doc.data["status"] == "completed"
    assert doc.data["repos"] == ["org/app"]
    assert doc.data["estimate_minutes"] == 2.5
    assert doc.data["created"] == "2026-02-13T16:27:22Z"
    assert doc.data["completed"] == "2026-02-13T16:29:22Z"
    assert doc.data["slug"] is None  # unset optional fields are null, not missing
    assert doc.body.startswith("# T42 · Task 42\n")


PERSON_FILE = """---
# my reading notes
tags: [review, "q3"]
task_id: T1
status: queued
aliases:
  - the login bug   # see ticket
priority: low
updated: '2020-01-01T00:00:00Z'
...
# T1 · Task 1

Body the person wrote.
---
More after a rule.
"""


def test_rewrite_touches_owned_lines_only() -> None:
    owned = owned_of(task(1, "active"), 1, "active")
    out = render.update_document(PERSON_FILE, owned)
    head, body = out.split("...\n", 1)
    assert body == PERSON_FILE.split("...\n", 1)[1]  # the body, byte for byte
    lines = head.splitlines()
    # The person's lines are where they were, as they were (comments, flow list, nested list).
    assert lines[:3] == ["---", "# my reading notes", 'tags: [review, "q3"]']
    assert lines[3:5] == ["task_id: T1", "status: active"]
    assert lines[5:7] == ["aliases:", "  - the login bug   # see ticket"]
    assert lines[7] == "priority: high"
    data = render.split_document(out).data
    assert list(data)[:5] == ["tags", "task_id", "status", "aliases", "priority"]
    assert {k: data[k] for k in OWNED_KEYS} == owned
    # Rewriting again changes nothing (no commit for an unchanged task).
    assert render.update_document(out, owned) == out


def test_crlf_file_stays_crlf() -> None:
    text = PERSON_FILE.replace("\n", "\r\n")
    out = render.update_document(text, owned_of(task(1)))
    assert "\n" not in out.replace("\r\n", "")
    assert render.split_document(out).data["status"] == "active"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("# no frontmatter\n", "no frontmatter"),
        ("---\nstatus: active\n", "not closed"),
        ("---\nstatus: [active\n---\nbody\n", "does not parse"),
        ("---\n- a\n- b\n---\n", "not a mapping"),
        ("---\n{status: active}\n---\n", "one-line"),
        ("---\nname: &n x\nmine: *n\n---\n", "would break"),
    ],
)
def test_broken_frontmatter_is_refused(text: str, reason: str) -> None:
    with pytest.raises(FrontmatterError, match=reason):
        render.update_document(text, owned_of(task(1)))


HOSTILE = [
    "../../etc/passwd",
    "x\n---\nstatus: completed\nevil: true\n---\n# owned",
    "line\r\nbreak\u2028sep\u0085nel\x00nul",
    "name: injected",
    "'; rm -rf / #",
    "--- ",
    "[[T1]] {a: b} *alias &anchor !!python/object",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_one_value(name: str) -> None:
    t = task(5, name=name, assigned_to=name, repos=[name, "---"])
    owned = owned_of(t, 5)
    for text in (
        render.new_document(owned, render.new_task_body(5, name)),
        render.update_document(PERSON_FILE, owned),
    ):
        doc = render.split_document(text)
        assert doc.data["name"] == name and doc.data["assigned_to"] == name
        assert doc.data["repos"] == [name, "---"]
        assert "evil" not in doc.data
        # Every frontmatter line is a key, a list item or the person's own; none closes it early.
        assert all(ln.strip() not in ("---", "...") for ln in doc.frontmatter.splitlines())
    body = render.new_task_body(5, name)
    assert body.splitlines()[0].startswith("# T5 · ")
    assert "\n---\n" not in body and "\r" not in body and "\x00" not in body


def test_overview_counts_and_recent_completions() -> None:
    e = render.OverviewEntry
    entries = [
        e(1, "completed", "2026-01-03T00:00:00Z", "2026-01-03T00:00:00Z"),
        e(2, "completed", "2026-01-05T00:00:00Z", "2026-01-05T00:00:00Z"),
        e(3, "active", "2026-01-09T00:00:00Z", None),
        e(4, "cancelled", None, None),
    ]
    v = render.overview_values(entries, recent=1)
    assert tuple(v) == render.OVERVIEW_KEYS
    assert (v["total"], v["completed"], v["active"], v["cancelled"], v["queued"]) == (4, 2, 1, 1, 0)
    assert v["recent_completions"] == ["[[T2]]"]
    assert v["updated"] == "2026-01-09T00:00:00Z"
    text = render.new_document(v, render.overview_body())
    assert text.count("```dataview\n") == 4
    assert yaml.safe_load(render.split_document(text).frontmatter)["recent_completions"] == ["[[T2]]"]


def test_table_page_escapes_cells_and_keeps_the_rest() -> None:
    page = TablePage(
        "costs",
        "Costs",
        ["task", "model", "usd"],
        [["T1", "a|b <!-- lobwife:table:end -->\nc", 1.25], ["T2", None, 0.5]],
        summary={"total_usd": 1.75},
    )
    text = render.new_document(page.owned(), page.new_body())
    assert page.path == "010-tasks/_costs.md"
    assert "| T1 | a\\|b &lt;\\!-- lobwife:table:end --> c | 1.25 |" in text
    assert text.count(render.TABLE_END) == 1
    edited = text.replace("# Costs\n", "# Costs\n\nMy note above.\n") + "\nMy note below.\n"
    again = TablePage("costs", "Costs", ["task", "usd"], [["T3", 2.0]], summary={"total_usd": 2.0})
    out = again.update(edited)
    assert "My note above." in out and "My note below." in out
    assert "| T3 | 2 |" in out and "T1" not in out
    assert render.split_document(out).data == {"page": "costs", "rows": 1, "total_usd": 2.0}
    with pytest.raises(FrontmatterError, match="markers"):
        again.update(text.replace(render.TABLE_BEGIN, ""))


@pytest.mark.parametrize("name", ["../x", "Costs", "", "a/b", "_x"])
def test_table_page_name_is_never_a_path(name: str) -> None:
    with pytest.raises(ValueError, match="page name"):
        TablePage(name, "t", ["a"], [])


def test_a_cell_is_never_a_link_or_an_embed_but_a_task_link_is_one() -> None:
    hostile = "see ![x](https://tracker.example/p.png) and [[secrets]] or [y](javascript:alert(1)) `$= dv.x`"
    page = TablePage("audits", "Audits", ["title", "subject"], [[hostile, render.TaskLink(42)]])
    row = next(line for line in page.new_body().splitlines() if line.startswith("| see"))
    assert row == (
        "| see \\!\\[x\\](https://tracker.example/p.png) and \\[\\[secrets\\]\\]"
        " or \\[y\\](javascript:alert(1)) \\`$= dv.x\\` | [[T42]] |"
    )
    with pytest.raises(ValueError):
        render.TaskLink(-1)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({}, None),
        ({"task_id": "T42", "created": "2026-02-13T16:27:22Z"}, None),  # lobwife's own: created T0 + 42
        ({"task_id": "t042", "created": "2026-02-13T16:28:21Z"}, None),  # 59 s off: the old daemon's clock
        ({"created": "2026-02-13 16:26:30"}, None),  # the old daemon's form, no zone: UTC
        ({"created_at": 1_771_000_042}, None),  # its other key, as an epoch number
        ({"created": "2026-02-13"}, None),  # a day alone: the same day
        ({"created": "not a time"}, None),
        ({"created": int("9" * 400)}, None),  # no time, and no crash
        ({"task_id": None, "created": None}, None),
        ({"task_id": "T7"}, "its task_id is 'T7', not T42"),
        ({"task_id": True}, "its task_id is 'True', not T42"),
        ({"created": "2026-02-13T16:28:23Z"}, "it was created 2026-02-13T16:28:23Z, and task T42 was created"),
        ({"created": "2026-02-12"}, "it was created 2026-02-12, and task T42 was created 2026-02-13T16:27:22Z"),
    ],
)
def test_whose_file_a_task_file_is(data: dict[str, object], why: str | None) -> None:
    reason = render.other_task(data, 42, task(42).created_at)
    assert reason == why if why is None else (reason or "").startswith(why)
    # A task with no created time is told only by the task_id.
    assert render.other_task({"created": "2020-01-01T00:00:00Z"}, 42, task(42, created_at=0).created_at) is None
