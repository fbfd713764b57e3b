"""The tests mirror the package: ``test/<sub-package>/`` holds the tests of ``kdbts_ros/<sub-package>/``.

Besides them, ``test/ros/node/`` holds the node's behaviour in one place and ``test/package/`` the checks of
the whole package; shared fixtures and helpers are in ``test/conftest.py``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TEST = Path(__file__).resolve().parents[1]
PACKAGE = TEST.parent / "kdbts_ros"
GENERATED = Path("msg")  # rosidl output of tools/build_msgs.sh, not ours
OWN_FOLDERS = {Path("ros/node"), Path("package")}


def test_every_test_file_is_in_the_folder_of_a_sub_package():
    sub_packages = {p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py")} - {Path("."), GENERATED}
    assert {Path("core"), Path("core/model"), Path("ros"), Path("commands")} <= sub_packages
    misplaced = sorted(
        str(f.relative_to(TEST))
        for f in TEST.rglob("test_*.py")
        if f.parent.relative_to(TEST) not in sub_packages | OWN_FOLDERS
    )
    assert not misplaced, f"tests outside the folders that mirror kdbts_ros: {misplaced}"


def test_test_file_names_are_unique():
    # pytest's default import mode imports each test file by its name (no __init__.py: test/ would shadow the
    # standard library's package of that name), so two files of one name cannot both be collected
    names = Counter(f.name for f in TEST.rglob("test_*.py"))
    assert not [name for name, n in names.items() if n > 1]
