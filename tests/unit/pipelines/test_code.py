"""Flow code archives: packed deterministically, checked on upload, unpacked only inside their directory."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from selfserve.errors import InvalidInput, PayloadTooLarge
from selfserve.pipelines import code

LIMIT = 10 * 2**20


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "flow.py").write_text("from pkg.helpers import x\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helpers.py").write_text("x = 1\n")
    for skipped in (".git", "__pycache__", ".venv", "pkg/__pycache__"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "junk.py").write_text("junk\n")
    (root / "pkg" / "helpers.cpython-311.pyc").write_bytes(b"\0")
    return root


def _zip(members: dict[str, bytes], *, links: tuple[str, ...] = (), dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d), b"")
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, b"/etc/passwd")
    return buf.getvalue()


# -- pack -------------------------------------------------------------------------------------------


def test_pack_skips_vcs_caches_and_environments(tmp_path: Path) -> None:
    data = code.pack(_tree(tmp_path / "src"), max_bytes=LIMIT)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["flow.py", "pkg/__init__.py", "pkg/helpers.py"]


def test_pack_is_deterministic(tmp_path: Path) -> None:
    first = code.pack(_tree(tmp_path / "a"), max_bytes=LIMIT)
    later = _tree(tmp_path / "b")
    os.utime(later / "flow.py", (1_000_000, 1_000_000))  # other times, other place: the same bytes
    assert code.pack(later, max_bytes=LIMIT) == first
    assert code.sha256(code.pack(later, max_bytes=LIMIT)) == code.sha256(first)


def test_pack_of_one_file(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("x = 1\n")
    data = code.pack(tmp_path / "one.py", max_bytes=LIMIT)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["one.py"]


def test_pack_follows_a_link_inside_the_directory(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    (root / "alias.py").symlink_to(root / "pkg" / "helpers.py")
    data = code.pack(root, max_bytes=LIMIT)
    assert zipfile.ZipFile(io.BytesIO(data)).read("alias.py") == b"x = 1\n"


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_pack_refuses_a_link_that_escapes(tmp_path: Path, kind: str) -> None:
    root = _tree(tmp_path / "src")
    outside = tmp_path / "secret"
    if kind == "file":
        outside.write_text("secret\n")
    else:
        outside.mkdir()
        (outside / "key").write_text("secret\n")
    (root / "escape").symlink_to(outside)
    with pytest.raises(InvalidInput, match="points outside"):
        code.pack(root, max_bytes=LIMIT)


def test_pack_refuses_a_dangling_link(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    (root / "gone.py").symlink_to(root / "missing.py")
    with pytest.raises(InvalidInput, match="link to nothing"):
        code.pack(root, max_bytes=LIMIT)


def test_pack_skips_what_is_not_a_file(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    os.mkfifo(root / "pipe")  # reading it would block for ever
    names = zipfile.ZipFile(io.BytesIO(code.pack(root, max_bytes=LIMIT))).namelist()
    assert "pipe" not in names


def test_pack_refuses_nothing_too_many_and_too_big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        code.pack(tmp_path / "nowhere", max_bytes=LIMIT)
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / ".git" / "HEAD").write_text("x")
    with pytest.raises(InvalidInput, match="holds no files"):
        code.pack(tmp_path / "empty", max_bytes=LIMIT)
    root = _tree(tmp_path / "src")
    monkeypatch.setattr(code, "MAX_FILES", 2)
    with pytest.raises(InvalidInput, match="more than 2 files"):
        code.pack(root, max_bytes=LIMIT)
    monkeypatch.undo()
    (root / "big.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(PayloadTooLarge):
        code.pack(root, max_bytes=100_000)


# -- check_zip --------------------------------------------------------------------------------------


def test_check_zip_accepts_a_packed_tree_and_names_its_files(tmp_path: Path) -> None:
    data = code.pack(_tree(tmp_path / "src"), max_bytes=LIMIT)
    assert code.check_zip(data, max_bytes=LIMIT) == ["flow.py", "pkg/__init__.py", "pkg/helpers.py"]
    assert code.check_zip(_zip({"a/b.py": b""}, dirs=("a/",)), max_bytes=LIMIT) == ["a/b.py"]


@pytest.mark.parametrize(
    "name",
    ["/etc/cron.d/x", "\\\\server\\share.py", "../up.py", "a/../../up.py", "a\\..\\up.py", "C:/x.py"],
)
def test_check_zip_refuses_paths_that_are_not_plain_and_relative(name: str) -> None:
    with pytest.raises(InvalidInput, match="not a plain relative path"):
        code.check_zip(_zip({"ok.py": b"", name: b"x"}), max_bytes=LIMIT)


def test_check_zip_refuses_symlink_members() -> None:
    with pytest.raises(InvalidInput, match="symbolic link"):
        code.check_zip(_zip({"ok.py": b""}, links=("passwd",)), max_bytes=LIMIT)


def test_check_zip_refuses_a_name_twice_or_as_file_and_directory() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.py", b"1")
        zf.writestr("a.py", b"2")
    with pytest.raises(InvalidInput, match="twice"):
        code.check_zip(buf.getvalue(), max_bytes=LIMIT)
    with pytest.raises(InvalidInput, match="both a file and a directory"):
        code.check_zip(_zip({"pkg": b"", "pkg/mod.py": b""}), max_bytes=LIMIT)


def test_check_zip_refuses_too_many_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code, "MAX_FILES", 3)
    with pytest.raises(InvalidInput, match="4 files"):
        code.check_zip(_zip({f"m{i}.py": b"" for i in range(4)}), max_bytes=LIMIT)


def test_check_zip_refuses_over_size_packed_and_unpacked(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip({"a.py": b"x" * 50_000})
    with pytest.raises(PayloadTooLarge):
        code.check_zip(data, max_bytes=len(data) - 1)
    monkeypatch.setattr(code, "MAX_UNPACKED_BYTES", 40_000)  # 50 kB that pack down to far less
    with pytest.raises(PayloadTooLarge, match="unpacks to more"):
        code.check_zip(data, max_bytes=LIMIT)


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x05\x06" + b"\0" * 18])
def test_check_zip_refuses_what_is_not_a_zip_or_empty(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        code.check_zip(data, max_bytes=LIMIT)


def test_check_zip_refuses_encrypted_members() -> None:
    data = bytearray(_zip({"a.py": b"x = 1\n"}))
    # Set the "encrypted" flag in the central directory entry, as a password-protected zip has it.
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 0x1
    with pytest.raises(InvalidInput, match="encrypted"):
        code.check_zip(bytes(data), max_bytes=LIMIT)


# -- unpack -----------------------------------------------------------------------------------------


def test_unpack_round_trips(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    code.unpack(code.pack(root, max_bytes=LIMIT), tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "helpers.py").read_text() == "x = 1\n"
    assert not (tmp_path / "out" / ".git").exists()


@pytest.mark.parametrize("name", ["../escaped.py", "a/../../escaped.py", "/tmp/escaped-abs.py"])
def test_unpack_never_writes_outside_dest(tmp_path: Path, name: str) -> None:
    """Even a zip that skipped check_zip cannot put a file outside its directory."""
    if name.startswith("/"):
        name = str(tmp_path / "escaped.py")
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(InvalidInput, match="leaves its directory"):
        code.unpack(_zip({"ok.py": b"", name: b"x"}), dest)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["ok.py"]


def test_unpack_writes_a_link_member_as_a_plain_file(tmp_path: Path) -> None:
    code.unpack(_zip({}, links=("passwd",)), tmp_path / "out")
    target = tmp_path / "out" / "passwd"
    assert not target.is_symlink() and target.read_bytes() == b"/etc/passwd"


@pytest.mark.parametrize("inside", [False, True])
def test_unpack_does_not_follow_a_link_already_in_dest(tmp_path: Path, inside: bool) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    victim = (dest if inside else tmp_path) / "victim.py"
    (dest / "flow.py").symlink_to(victim)
    with pytest.raises(InvalidInput, match="does not unpack"):
        code.unpack(_zip({"flow.py": b"x"}), dest)
    assert not victim.exists()


def test_unpack_refuses_a_corrupt_member(tmp_path: Path) -> None:
    data = bytearray(_zip({"a.py": b"x = 1\n" * 100}))
    data[data.find(b"a.py") + 4 + 3] ^= 0xFF  # a byte of the compressed data, after the local header
    with pytest.raises(InvalidInput, match="does not unpack"):
        code.unpack(bytes(data), tmp_path / "out")


def test_materialize_checks_the_hash(tmp_path: Path) -> None:
    from selfserve.data.objectstore import LocalObjectStore

    store = LocalObjectStore(tmp_path / "objects")
    data = code.pack(_tree(tmp_path / "src"), max_bytes=LIMIT)
    sha = code.store_code(store, "demo", data)
    assert sha == code.sha256(data) and code.code_key("demo", sha).endswith(f"flows/code/{sha}.zip")
    code.materialize(store, "demo", sha, tmp_path / "run")
    assert (tmp_path / "run" / "flow.py").exists()
    store.put_bytes(code.code_key("demo", sha), _zip({"evil.py": b""}))
    with pytest.raises(InvalidInput, match="does not match its hash"):
        code.materialize(store, "demo", sha, tmp_path / "run2")
