"""Flow code in platform storage: checked zips, addressed by their SHA-256, unpacked where runs need them.

A deployment names its code by hash, so it never depends on the directory it was deployed from,
and equal code is stored once per project.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from selfserve.data.objectstore import ObjectStore, project_prefix
from selfserve.errors import InvalidInput, PayloadTooLarge

MAX_FILES = 2000
MAX_UNPACKED_BYTES = 200 * 2**20
SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
# What zipfile unpacks: no encryption, no method it would refuse at run time.
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


def code_key(project: str, sha: str) -> str:
    return f"{project_prefix(project)}flows/code/{sha}.zip"


def pack(root: Path, *, max_bytes: int) -> bytes:
    """Zip ``root`` (a file or a directory) deterministically, skipping VCS and cache directories.

    Symbolic links inside the directory are packed as the files they point to; links to
    directories are not followed.

    Raises:
        InvalidInput: nothing to pack, too many files, or a symlink that leaves the directory or
            points nowhere.
        PayloadTooLarge: the zip would exceed ``max_bytes``.
    """
    root = root.resolve()
    files: list[tuple[Path, str]] = []
    if root.is_file():
        files.append((root, root.name))
    elif root.is_dir():
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                if not (Path(dirpath) / d).resolve().is_relative_to(root):
                    raise InvalidInput(f"{Path(dirpath) / d} points outside {root}; flow code must be self-contained")
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / name
                real = path.resolve()
                if not real.is_relative_to(root):
                    raise InvalidInput(f"{path} points outside {root}; flow code must be self-contained")
                if not real.exists():
                    raise InvalidInput(f"{path} is a link to nothing")
                if not stat.S_ISREG(real.stat().st_mode):
                    continue  # a socket, a pipe or a device: nothing to deploy
                files.append((real, path.relative_to(root).as_posix()))
                if len(files) > MAX_FILES:
                    raise InvalidInput(f"{root} holds more than {MAX_FILES} files, the most flow code may hold")
    else:
        raise InvalidInput(f"{root} does not exist")
    if not files:
        raise InvalidInput(f"{root} holds no files")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, arcname in files:
            info = zipfile.ZipInfo(arcname, date_time=(2000, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
            if buf.tell() > max_bytes:
                raise PayloadTooLarge(f"flow code from {root} is over the {max_bytes // 2**20} MiB limit")
    return buf.getvalue()


def check_zip(data: bytes, *, max_bytes: int) -> list[str]:
    """Validate an uploaded code zip; returns its member names.

    Raises:
        PayloadTooLarge: over ``max_bytes`` packed or the unpacked limit.
        InvalidInput: not a zip, too many members, or a member that is absolute, climbs out with
            ``..``, is a link, is encrypted, is named twice, or is a file and a directory at once.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"flow code is {len(data)} bytes; the limit is {max_bytes}")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidInput("flow code must be a zip archive") from None
    if not infos:
        raise InvalidInput("the flow code archive is empty")
    if len(infos) > MAX_FILES:
        raise InvalidInput(f"flow code holds {len(infos)} files; {MAX_FILES} at most")
    total = 0
    names = []
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    for info in infos:
        name = info.filename
        path = PurePosixPath(name)
        if (
            name.startswith(("/", "\\"))
            or not path.parts
            or ".." in path.parts
            or "\\" in name
            or ":" in name
            or "\x00" in name
        ):
            raise InvalidInput(f"flow code member {name!r} is not a plain relative path")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidInput(f"flow code member {name!r} is a symbolic link")
        if info.flag_bits & 0x1 or info.compress_type not in _METHODS:
            raise InvalidInput(f"flow code member {name!r} is encrypted or compressed in a way zip tools rarely use")
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise PayloadTooLarge(f"flow code unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB")
        dirs.update(path.parents)
        if info.is_dir():
            dirs.add(path)
        elif path in files:
            raise InvalidInput(f"flow code member {name!r} is in the archive twice")
        else:
            files.add(path)
            names.append(name)
    clash = sorted(files & dirs)
    if clash:
        raise InvalidInput(f"flow code member {str(clash[0])!r} is both a file and a directory")
    return names


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_code(store: ObjectStore, project: str, data: bytes) -> str:
    """Keep a checked zip in the project's storage; returns its hash."""
    sha = sha256(data)
    store.put_bytes(code_key(project, sha), data)
    return sha


def unpack(data: bytes, dest: Path) -> None:
    """Unpack a checked zip into ``dest`` (created), member by member, never outside it.

    Raises:
        InvalidInput: a member that would land outside ``dest``, or data that does not unpack
            (a bad checksum, a truncated member).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                rel = PurePosixPath(info.filename)
                if not rel.parts and info.is_dir():
                    continue
                target = root.joinpath(*rel.parts)
                if rel.is_absolute() or ".." in rel.parts or not target.parent.resolve().is_relative_to(root):
                    raise InvalidInput(f"flow code member {info.filename!r} leaves its directory")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # "x": never through a link (nor over a file) that is already there
                with zf.open(info) as src, open(target, "xb") as out:
                    shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise InvalidInput(f"the flow code archive does not unpack: {e}") from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:  # a name used twice
        raise InvalidInput(f"the flow code archive does not unpack: {e.strerror}: {e.filename}") from None


def materialize(store: ObjectStore, project: str, sha: str, dest: Path) -> None:
    """Unpack the project's code ``sha`` into ``dest``, verifying the hash."""
    data = store.get_bytes(code_key(project, sha))
    if sha256(data) != sha:
        raise InvalidInput(f"stored flow code {sha[:12]} does not match its hash")
    unpack(data, dest)


def builtin_zip(flows_dir: Path) -> bytes:
    """The built-in flows as one code zip."""
    return pack(flows_dir, max_bytes=20 * 2**20)


def scratch_dir(parent: Path | None = None) -> Path:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="selfserve-code-", dir=parent))
