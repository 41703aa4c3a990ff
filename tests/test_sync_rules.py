"""common/sync_rules.py: which paths a synced folder accepts, ignore patterns, conflict names."""

from __future__ import annotations

import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ValidationError
from common.sync_rules import (
    IGNORE_FILE,
    IgnoreRules,
    case_collisions,
    check_relative_path,
    conflict_name,
    is_conflict_copy,
    portability_problems,
    short_node,
)
from peer.sync.scan import scan_folder


@pytest.mark.parametrize("path", ["a.txt", "docs/a.txt", "a/b/c/d.bin", ".profile", "x..y", "ünï/cödé"])
def test_accepted_paths(path: str) -> None:
    assert check_relative_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "./a", "..", "C:/x", "c:x", "a\\..\\b", "a\x00b", "a\nb",
     ".chunkswarm/index", ".chunkswarm", "x" * 5000],
)
def test_refused_paths(path: str) -> None:
    with pytest.raises(ValidationError):
        check_relative_path(path)


def test_portability_is_reported_not_mangled() -> None:
    assert portability_problems("docs/a.txt") == []
    assert any("reserved" in p for p in portability_problems("dir/CON.txt"))
    assert any("Windows" in p for p in portability_problems("a:b"))
    assert any("dot or space" in p for p in portability_problems("name."))
    assert case_collisions(["README", "a/b", "readme", "A/B", "c"]) == [("README", "readme"), ("a/b", "A/B")]


def test_ignore_rules() -> None:
    rules = IgnoreRules.parse("""
# editor files
*.tmp
build/
/top.txt
docs/**/*.pdf
cache
""")
    assert rules.ignored("x.tmp") and rules.ignored("deep/er/x.tmp")
    assert rules.ignored("build/out.o") and not rules.ignored("build")  # a file named build is not a folder
    assert rules.ignored("build", is_dir=True)
    assert rules.ignored("top.txt") and not rules.ignored("sub/top.txt")
    assert rules.ignored("docs/a.pdf") and rules.ignored("docs/x/y/a.pdf") and not rules.ignored("other/a.pdf")
    assert rules.ignored("cache") and rules.ignored("a/cache/b.txt")
    assert not rules.ignored("keep.txt") and not rules.ignored("x.tmpl")
    assert rules.ignored(".chunkswarm/index")  # the state folder always is
    assert not IgnoreRules.parse("").ignored("anything")


def test_conflict_names_as_syncthing_writes_them() -> None:
    node = bytes.fromhex("0011223344556677")
    when = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC
    assert conflict_name("docs/report.txt", when, node) == f"docs/report.sync-conflict-20231114-221320-{short_node(node)}.txt"
    assert conflict_name("Makefile", when, node) == f"Makefile.sync-conflict-20231114-221320-{short_node(node)}"
    assert conflict_name(".profile", when, node).startswith(".profile.sync-conflict-")
    assert conflict_name("a.tar.gz", when, node).startswith("a.tar.sync-conflict-") and conflict_name("a.tar.gz", when, node).endswith(".gz")
    assert is_conflict_copy(conflict_name("docs/report.txt", when, node)) and not is_conflict_copy("docs/report.txt")
    assert len(short_node(node)) == 7


_RULES = "*.tmp\nbuild/\n/top.txt\ndocs/**/*.pdf\ncache\n"
_SEGMENTS = ["a", "b", "build", "cache", "docs", "x.tmp", "top.txt", "k.pdf"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4), min_size=1, max_size=12))
def test_a_scan_keeps_exactly_the_files_not_ignored(tmp_path: pathlib.Path, trees: list[list[str]]) -> None:
    # The scan tests each entry alone (its folders were tested as it walked into them): the same answer as
    # IgnoreRules.ignored over the whole path, for every file of a random tree.
    root = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    (root / IGNORE_FILE).write_text(_RULES)
    rules = IgnoreRules.parse(_RULES)
    written = set()
    for segments in trees:
        path = "/".join(segments)
        if any(other == path or other.startswith(path + "/") or path.startswith(other + "/") for other in written):
            continue  # a file where a folder is, or the reverse
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")
        written.add(path)
    expected = {path for path in written if not rules.ignored(path)} | {IGNORE_FILE}
    assert set(scan_folder(root).files) == expected
