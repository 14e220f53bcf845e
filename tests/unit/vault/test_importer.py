"""Reading the old fleet's vault task files (vault/importer.py) on a real folder: both name styles,
missing keys, broken YAML, hostile text that must stay text, huge files, symlinks, FIFOs."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from lobwife.client import _builders
from lobwife.v1 import tasks_pb2
from lobwife_server.vault import importer, render
from lobwife_server.vault.importer import Found, PlannedTask
from tests.unit.vault.conftest import task

S = tasks_pb2.TaskStatus


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    for folder in ("active", "completed", "failed"):
        (root / "010-tasks" / folder).mkdir(parents=True)
    return root


def put(vault: Path, rel: str, text: str | bytes) -> Path:
    path = vault / "010-tasks" / rel
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def scan(vault: Path, **kw: int) -> dict[str, Found]:
    return {f.path.removeprefix("010-tasks/"): f for f in importer.scan(vault, **kw)}


def plan_of(vault: Path, rel: str, text: str) -> PlannedTask:
    put(vault, rel, text)
    found = scan(vault)[rel]
    assert found.plan is not None, found.problem
    return found.plan


def test_a_date_slug_file_with_every_key(vault: Path) -> None:
    plan = plan_of(
        vault,
        "completed/2026-01-15-fix-login-redirect.md",
        "---\n"
        "task_id: T42\n"
        "title: Fix the login redirect\n"
        "status: Done\n"
        "type: code\n"
        "priority: high\n"
        "model: claude-opus\n"
        "assigned_to: lobster-7\n"
        "repos: org/app, https://github.com/org/lib.git\n"
        "workflow: code-review\n"
        "requires_qa: 'yes'\n"
        "estimate_minutes: 12.5\n"
        "discord_thread_id: 1234567890123456789\n"
        "created: 2026-01-15T10:00:00+01:00\n"
        "completed_at: '2026-01-16 12:00:00'\n"
        "reviewer: alice\n"
        "---\n"
        "# Another heading\n",
    )
    req = plan.request
    assert req.name == "Fix the login redirect"
    assert req.slug == "fix-login-redirect"
    assert req.status == S.TASK_STATUS_COMPLETED
    assert (req.type, req.priority, req.model, req.assigned_to) == ("code", "high", "claude-opus", "lobster-7")
    assert list(req.repos) == ["org/app", "org/lib"]
    assert (req.workflow, req.requires_qa, req.estimate_minutes_exact) == ("code-review", True, 12.5)
    assert req.discord_thread_id == "1234567890123456789"
    assert req.request_id == "vault-import:2026-01-15-fix-login-redirect"
    assert req.actor == importer.ACTOR
    # A date-slug file is never "lobwife's own", whatever its task_id; the old id is recorded.
    assert plan.own_number is None and plan.old_task_id == "T42"
    assert json.loads(plan.event_detail()) == {
        "source": "010-tasks/completed/2026-01-15-fix-login-redirect.md",
        "request_id": "vault-import:2026-01-15-fix-login-redirect",
        "old_task_id": "T42",
        "created": "2026-01-15T09:00:00Z",
        "completed": "2026-01-16T12:00:00Z",
    }


def test_what_is_planned_is_what_the_client_sends(vault: Path) -> None:
    plan = plan_of(
        vault,
        "active/2026-02-01-x.md",
        "---\nname: X\nstatus: blocked\nrepos: [o/a]\nestimate_minutes: 30\nmodel: m\n---\n",
    )
    sent = _builders.create_task(**importer.create_kwargs(plan.request)).request
    assert sent == plan.request


def test_missing_keys_fall_back_to_the_heading_the_file_name_and_the_folder(vault: Path) -> None:
    put(vault, "active/2026-03-04-tidy-the_docs.md", "---\n---\nno heading here\n")
    put(vault, "completed/2026-03-05-with-heading.md", "---\nowner: bob\n---\n\n# Ship it  ##\n## not this\n")
    put(vault, "failed/T9.md", "---\n---\n")
    found = scan(vault)
    tidy = found["active/2026-03-04-tidy-the_docs.md"]
    assert tidy.plan is not None
    assert tidy.plan.request.name == "Tidy the docs"
    assert tidy.plan.request.status == S.TASK_STATUS_QUEUED  # active/ without a status: queued
    assert tidy.plan.created == "2026-03-04"  # from the file name
    assert tidy.plan.completed is None
    assert any("named after its file name" in n for n in tidy.notes)
    heading = found["completed/2026-03-05-with-heading.md"].plan
    assert heading is not None
    assert heading.request.name == "Ship it" and heading.request.status == S.TASK_STATUS_COMPLETED
    t9 = found["failed/T9.md"].plan
    assert t9 is not None
    assert t9.request.name == "T9" and t9.request.status == S.TASK_STATUS_FAILED
    assert not t9.request.HasField("slug") and not t9.request.repos
    assert t9.own_number is None and t9.old_task_id is None  # no task_id: not lobwife's own


def test_t_id_files_and_lobwifes_own(vault: Path) -> None:
    # What the vault sync itself writes reads back as lobwife's own file, under its name.
    own = task(7, "completed", name="Sync's own")
    text = render.new_document(render.task_frontmatter(own, 7, "completed"), render.new_task_body(7, own.name))
    put(vault, "completed/T7.md", text)
    put(vault, "active/T8.md", "---\ntask_id: T3\n---\n# T8 · Old fleet task\n")
    put(vault, "active/t0012.md", "---\nid: 12\nstatus: in progress\n---\n")
    found = scan(vault)
    seven = found["completed/T7.md"].plan
    assert seven is not None and seven.own_number == 7 and seven.request.name == "Sync's own"
    assert seven.request.repos == ["org/app"] and seven.created == "2026-02-13T16:26:47Z"
    eight = found["active/T8.md"].plan
    assert eight is not None and eight.own_number is None and eight.old_task_id == "T3"
    assert eight.request.name == "Old fleet task"  # lobwife's "T8 · " heading prefix is not the name
    twelve = found["active/t0012.md"].plan
    assert twelve is not None and twelve.own_number == 12 and twelve.request.status == S.TASK_STATUS_ACTIVE


def test_broken_frontmatter_is_reported_and_fails(vault: Path) -> None:
    put(vault, "active/2026-01-01-broken.md", "---\nname: [unclosed\n---\n")
    put(vault, "active/2026-01-02-unclosed.md", "---\nname: x\n")
    put(vault, "active/2026-01-03-none.md", "just text\n")
    put(vault, "active/2026-01-04-list.md", "---\n- a\n- b\n---\n")
    put(vault, "active/2026-01-05-latin1.md", b"---\nname: caf\xe9\n---\n")
    put(vault, "active/2026-01-06-no-such-day.md", "---\ncreated: 2026-02-30\n---\n")
    found = scan(vault)
    reasons = {rel: (f.problem, f.fails, f.plan) for rel, f in found.items()}
    assert all(fails and plan is None for _, fails, plan in reasons.values())
    assert "does not parse" in str(reasons["active/2026-01-01-broken.md"][0])
    assert "not closed" in str(reasons["active/2026-01-02-unclosed.md"][0])
    assert "no frontmatter" in str(reasons["active/2026-01-03-none.md"][0])
    assert "not a mapping" in str(reasons["active/2026-01-04-list.md"][0])
    assert "not UTF-8" in str(reasons["active/2026-01-05-latin1.md"][0])
    assert "day is out of range" in str(reasons["active/2026-01-06-no-such-day.md"][0])


def test_names_and_slugs_are_text_never_paths(vault: Path, tmp_path: Path) -> None:
    plan = plan_of(
        vault,
        "active/2026-01-01-...md",
        "---\nname: ../../outside/pwned\nslug: ../../../etc/passwd\nassigned_to: /tmp/x\n---\n",
    )
    assert plan.request.name == "../../outside/pwned"
    assert plan.request.slug == "../../../etc/passwd"
    assert plan.request.request_id == "vault-import:2026-01-01-.."
    assert plan.source == "010-tasks/active/2026-01-01-...md"
    # Reading wrote nothing anywhere.
    assert not (tmp_path / "outside").exists()
    assert sorted(p.name for p in (vault / "010-tasks" / "active").iterdir()) == ["2026-01-01-...md"]


def test_line_breaks_and_dashes_in_values_stay_in_their_value(vault: Path) -> None:
    plan = plan_of(
        vault,
        "active/2026-01-01-quoted.md",
        '---\nname: "first\\n---\\nstatus: completed"\nmodel: |\n  a\n  ---\n  b\n---\n',
    )
    assert plan.request.name == "first --- status: completed"  # one line, and not a key
    assert plan.request.status == S.TASK_STATUS_QUEUED
    assert plan.request.model == "a --- b"
    # A lone surrogate (PyYAML's pure loader makes one of "\\ud800"; libyaml refuses it): replaced,
    # so protobuf can hold the text.
    odd = importer.plan_task("x.md", "2026-01-03-x", "active", {"name": "a\ud800b\x00c"}, "", [])
    assert odd.request.name == "a\ufffdb c"
    # A bare --- line inside a quoted value ends the frontmatter: what is left does not parse.
    put(vault, "active/2026-01-02-raw.md", '---\nname: "first\n---\nstatus: completed"\n---\n')
    raw = scan(vault)["active/2026-01-02-raw.md"]
    assert raw.plan is None and raw.fails and "does not parse" in str(raw.problem)


def test_a_huge_file_is_reported_and_not_read(vault: Path) -> None:
    put(vault, "active/2026-01-01-huge.md", "---\nname: x\n---\n" + "y" * importer.MAX_FILE_BYTES)
    put(vault, "active/2026-01-02-small.md", "---\nname: x\n---\n" + "y" * 100)
    found = scan(vault)
    huge = found["active/2026-01-01-huge.md"]
    assert huge.plan is None and huge.fails and "larger than 1.0 MiB" in str(huge.problem)
    assert found["active/2026-01-02-small.md"].plan is not None
    tight = scan(vault, max_bytes=64)["active/2026-01-02-small.md"]
    assert tight.fails and "larger than 64 bytes" in str(tight.problem)


def test_symlinks_are_never_followed(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "2026-01-01-secret.md"
    secret.write_text("---\nname: outside the vault\n---\n")
    (vault / "010-tasks" / "active" / "2026-01-01-link.md").symlink_to(secret)
    # A whole status folder that points out of the vault.
    (vault / "010-tasks" / "failed").rmdir()
    (vault / "010-tasks" / "failed").symlink_to(outside)
    found = list(importer.scan(vault))
    by_path = {f.path: f for f in found}
    link = by_path["010-tasks/active/2026-01-01-link.md"]
    assert link.plan is None and link.fails and "symlink" in str(link.problem)
    folder = by_path["010-tasks/failed"]
    assert folder.plan is None and folder.fails and "symlink" in str(folder.problem)
    assert all(f.plan is None for f in found)  # nothing outside was read into a plan
    # The tasks folder itself a symlink: nothing to import from.
    other = tmp_path / "other"
    other.mkdir()
    (other / "010-tasks").symlink_to(vault / "010-tasks")
    with pytest.raises(importer.VaultImportError, match="symlink"):
        importer.scan(other)


def test_a_fifo_or_a_folder_named_md_is_skipped_without_blocking(vault: Path) -> None:
    os.mkfifo(vault / "010-tasks" / "active" / "2026-01-01-pipe.md")
    (vault / "010-tasks" / "active" / "T5.md").mkdir()
    result: list[dict[str, Found]] = []
    reader = threading.Thread(target=lambda: result.append(scan(vault)), daemon=True)
    reader.start()
    reader.join(5)
    assert result, "scan blocked on a FIFO"
    found = result[0]
    for rel in ("active/2026-01-01-pipe.md", "active/T5.md"):
        assert found[rel].problem == "not a regular file" and not found[rel].fails


def test_only_task_file_names_in_the_three_folders(vault: Path) -> None:
    put(vault, "active/meeting.md", "---\nname: a person's note\n---\n")
    put(vault, "active/.hidden.md", "---\nname: hidden\n---\n")
    put(vault, "active/2026-01-01-notes.txt", "---\nname: not markdown\n---\n")
    put(vault, "_overview.md", "---\ntotal: 0\n---\n")
    (vault / "010-tasks" / "active" / "sub").mkdir()
    put(vault, "active/sub/2026-01-01-deeper.md", "---\nname: deeper\n---\n")
    (vault / "elsewhere").mkdir()
    (vault / "elsewhere" / "2026-01-01-x.md").write_text("---\nname: x\n---\n")
    found = scan(vault)
    assert list(found) == ["active/meeting.md"]
    assert found["active/meeting.md"].problem is not None and not found["active/meeting.md"].fails


def test_finished_folders_are_read_first(vault: Path) -> None:
    for rel in ("active/2026-01-01-a.md", "failed/2026-01-01-a.md", "completed/2026-01-01-a.md"):
        put(vault, rel, "---\nname: a\n---\n")
    assert list(scan(vault)) == ["completed/2026-01-01-a.md", "failed/2026-01-01-a.md", "active/2026-01-01-a.md"]


def test_a_vault_without_a_tasks_folder(tmp_path: Path) -> None:
    with pytest.raises(importer.VaultImportError, match="no 010-tasks folder"):
        importer.scan(tmp_path)
    with pytest.raises(importer.VaultImportError, match="not a folder"):
        importer.scan(tmp_path / "missing")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status: completed", "completed"),
        ("status: In Progress", "active"),
        ("status: canceled", "cancelled"),
        ("status: todo", "queued"),
        ("status: on_hold", "blocked"),
        ("status: 7", "failed"),  # not a status: the folder's, with a note
        ("status: [a]", "failed"),
        ("status: null", "failed"),
    ],
)
def test_status_words(vault: Path, text: str, expected: str) -> None:
    put(vault, "failed/2026-01-01-s.md", f"---\n{text}\n---\n")
    found = scan(vault)["failed/2026-01-01-s.md"]
    assert found.plan is not None
    assert found.plan.request.status == S.Value(f"TASK_STATUS_{expected.upper()}")
    assert any("status" in n for n in found.notes) == (text == "status: 7")


@pytest.mark.parametrize(
    ("text", "repos", "qa", "estimate"),
    [
        ("repos: [org/a, org/a, 'git@github.com:org/b.git', 5]", ["org/a", "org/b", "5"], None, None),
        ("repos: 'org/a org/b,'\nrequires_qa: false\nestimate_minutes: 30 min", ["org/a", "org/b"], False, 30.0),
        ("repos: {a: b}\nrequires_qa: maybe\nestimate_minutes: soon", [], None, None),
        ("repos: [[nested]]\nrequires_qa: 1\nestimate_minutes: -5", [], True, -5.0),
    ],
)
def test_repos_booleans_and_estimates(
    vault: Path, text: str, repos: list[str], qa: bool | None, estimate: float | None
) -> None:
    plan = plan_of(vault, "active/2026-01-01-r.md", f"---\n{text}\n---\n")
    assert list(plan.request.repos) == repos
    assert plan.request.requires_qa is bool(qa)  # a bool without presence: false and unknown both send false
    assert (plan.request.estimate_minutes_exact if plan.request.HasField("estimate_minutes_exact") else None) == (
        estimate
    )


def test_times_in_many_forms(vault: Path) -> None:
    plan = plan_of(vault, "active/2026-01-01-t.md", "---\ncreated: 1768471200\ncompleted: someday\n---\n")
    assert plan.created == "2026-01-15T10:00:00Z"
    assert plan.completed == "someday"  # not a time: kept as written, with a note
    found = scan(vault)["active/2026-01-01-t.md"]
    assert any("not a time" in n for n in found.notes)
    dated = plan_of(vault, "active/2026-01-02-d.md", "---\ncreated_at: 2025-12-31\n---\n")
    assert dated.created == "2025-12-31"


def test_request_ids_are_deterministic_and_bounded() -> None:
    assert importer.request_id_for("T42") == "vault-import:T42"
    odd = importer.request_id_for("2026-01-01-café au lait")
    assert odd == importer.request_id_for("2026-01-01-café au lait")
    assert odd.startswith("vault-import:sha256:") and len(odd) <= 128
    long = importer.request_id_for("2026-01-01-" + "x" * 300)
    assert long.startswith("vault-import:sha256:") and len(long) <= 128
    assert importer.request_id_for("x\ny") != importer.request_id_for("x y")
    assert importer.request_id_for("bad\udcff").startswith("vault-import:sha256:")  # undecodable bytes


def test_a_file_name_that_is_not_utf8_fails_alone(vault: Path) -> None:
    folder = os.fsencode(vault / "010-tasks" / "active")
    with open(folder + b"/2026-01-01-caf\xe9.md", "wb") as f:
        f.write(b"---\nname: x\n---\n")
    put(vault, "active/2026-01-02-fine.md", "---\nname: fine\n---\n")
    found = list(importer.scan(vault))
    assert [(f.problem, f.fails) for f in found if f.plan is None] == [("the file name is not UTF-8", True)]
    assert [f.plan.request.name for f in found if f.plan is not None] == ["fine"]


def test_a_bom_and_crlf_are_read(vault: Path) -> None:
    plan = plan_of(vault, "active/2026-01-01-win.md", "\ufeff---\r\nname: Windows file\r\n---\r\nbody\r\n")
    assert plan.request.name == "Windows file"


def test_a_number_no_float_holds_fails_that_file_alone(vault: Path) -> None:
    put(vault, "active/2026-01-01-huge.md", "---\nname: Huge\nestimate_minutes: " + "9" * 400 + "\n---\n")
    put(vault, "active/2026-01-02-epoch.md", "---\nname: Epoch\ncreated: " + "9" * 400 + "\n---\n")
    put(vault, "active/2026-01-03-fine.md", "---\nname: Fine\n---\n")
    found = scan(vault)
    huge = found["active/2026-01-01-huge.md"]
    assert (huge.plan, huge.fails) == (None, True)
    assert huge.problem == "a value cannot be sent: estimate_minutes is too large (400 digits)"
    epoch = found["active/2026-01-02-epoch.md"].plan  # a created that is no time: kept as written, noted
    assert epoch is not None and epoch.created == "9" * 200
    assert any("is not a time" in n for n in found["active/2026-01-02-epoch.md"].notes)
    fine = found["active/2026-01-03-fine.md"].plan
    assert fine is not None and fine.file_name == "Fine"
