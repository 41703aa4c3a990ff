"""common/sync_merge.py: local changes and the merge of a remote version with version vectors."""

from __future__ import annotations

from common.collection import Entry
from common.manifest import sha256
from common.sync_merge import expire_tombstones, local_change, local_deletion, reconcile
from common.sync_rules import is_conflict_copy

A = b"A" * 8
B = b"B" * 8
S = 10**9


def _new(path: str, content: bytes, me: bytes, *, previous: Entry | None = None, when: int = 1000 * S) -> Entry:
    return local_change(previous, path, size=len(content), file_id=sha256(content), mode=0o644, mtime_ns=when, me=me)


def test_local_changes_bump_this_node() -> None:
    first = _new("a.txt", b"1", A)
    assert first.version == ((A, 1),) and first.modified_by == A
    second = _new("a.txt", b"2", B, previous=first)
    assert second.version == ((A, 1), (B, 1))
    gone = local_deletion(second, me=A, now_ns=5 * S)
    assert gone.deleted and gone.version == ((A, 2), (B, 1)) and gone.mtime_ns == 5 * S


def test_new_changed_and_equal() -> None:
    base = _new("same.txt", b"s", A)
    theirs_new = _new("new.txt", b"n", B)
    mine_new = _new("mine.txt", b"m", A)
    changed_there = _new("same.txt", b"s2", B, previous=base)
    plan = reconcile({"same.txt": base, "mine.txt": mine_new}, {"mine.txt"}, {"same.txt": changed_there, "new.txt": theirs_new}, A)
    assert plan.take == (theirs_new, changed_there)
    assert plan.publish == (mine_new,)
    assert not plan.set_aside and not plan.drop and not plan.conflicts
    assert reconcile({"same.txt": base}, set(), {"same.txt": base}, A) == reconcile({}, set(), {}, A)


def test_deletion_while_offline_does_not_come_back() -> None:
    base = _new("f.txt", b"f", A)
    tombstone = local_deletion(base, me=B, now_ns=2000 * S)
    # The node that was offline still has base (unchanged): the tombstone dominates it.
    plan = reconcile({"f.txt": base}, set(), {"f.txt": tombstone}, A)
    assert plan.take == (tombstone,) and not plan.publish
    # The tombstone has expired: the path is simply absent; the unchanged copy goes too, a new local file is published.
    assert expire_tombstones([tombstone], now_ns=2000 * S + 31 * 24 * 3600 * S) == []
    plan = reconcile({"f.txt": base, "g.txt": _new("g.txt", b"g", A)}, {"g.txt"}, {}, A)
    assert plan.drop == ("f.txt",) and [e.path for e in plan.publish] == ["g.txt"]


def test_concurrent_edits_make_a_conflict_copy() -> None:
    base = _new("doc.txt", b"v1", A)
    mine = _new("doc.txt", b"mine", A, previous=base, when=3000 * S)
    theirs = _new("doc.txt", b"theirs", B, previous=base, when=4000 * S)  # newer: keeps the name
    plan = reconcile({"doc.txt": mine}, {"doc.txt"}, {"doc.txt": theirs}, A)
    ((path, copy_path),) = plan.set_aside
    assert path == "doc.txt" and is_conflict_copy(copy_path) and copy_path.endswith(".txt")
    winner = next(e for e in plan.publish if e.path == "doc.txt")
    copy = next(e for e in plan.publish if e.path == copy_path)
    assert winner.file_id == theirs.file_id and winner in plan.take
    assert copy.file_id == mine.file_id and copy.version == ((A, 1),)
    # The resolution dominates both sides: the other node takes it without a second conflict.
    assert set(reconcile({"doc.txt": theirs}, set(), {"doc.txt": winner, copy_path: copy}, B).take) == {winner, copy}
    # Seen from the other side (its edit is the older one): its own content goes to the copy, the name keeps ours.
    plan = reconcile({"doc.txt": theirs}, {"doc.txt"}, {"doc.txt": mine}, B)
    assert not plan.set_aside
    kept = next(e for e in plan.publish if e.path == "doc.txt")
    assert kept.file_id == theirs.file_id
    (copy,) = [e for e in plan.take if e.path != "doc.txt"]
    assert copy.file_id == mine.file_id and is_conflict_copy(copy.path)


def test_modification_beats_a_concurrent_deletion() -> None:
    base = _new("f.txt", b"f", A)
    edited = _new("f.txt", b"edited", A, previous=base, when=1 * S)
    deleted = local_deletion(base, me=B, now_ns=9000 * S)
    plan = reconcile({"f.txt": edited}, {"f.txt"}, {"f.txt": deleted}, A)
    assert not plan.take and not plan.set_aside
    (kept,) = plan.publish
    assert kept.file_id == edited.file_id and kept.version == ((A, 3), (B, 1))
    plan = reconcile({"f.txt": deleted}, {"f.txt"}, {"f.txt": edited}, B)
    assert not plan.set_aside and plan.take[0].file_id == edited.file_id
