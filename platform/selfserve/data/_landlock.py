"""Confine the current process with Linux Landlock: read only the Python installation and a few
system files, read and write one working directory, no TCP. Standard library only, since it runs
in the child process of a Polars transform before any user code.

Landlock needs no privileges and is inherited by every child process. Where the kernel lacks it
(not Linux, or older than 5.13), :func:`confine` changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights (ABI 1), then those later ABIs added.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV  # all a rule on a file may hold

_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/sys/devices/system/cpu", "/sys/fs/cgroup")
_SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/dev/urandom",
)
_DEVICES = ("/dev/null", "/dev/zero")


def _fs_rights(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where there is none."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def confine(workdir: Path, *, network: bool = False, readable: tuple[str, ...] = ()) -> bool:
    """Restrict this process (and its future children) for good.

    Allowed: reading the Python installation (every ``sys.path`` entry and prefix), the system
    libraries and a few system files, ``/proc/self``; reading and writing ``workdir``. Refused:
    every other file (the platform's home, its storage, other jobs' directories, other processes'
    ``/proc`` entries) and, where the kernel can (ABI 4+), every TCP bind and connect unless
    ``network`` is true. ``readable`` adds directories to read.

    Returns:
        True when confined; False when the kernel has no Landlock.

    Raises:
        OSError: Landlock exists but refused the rules.
    """
    abi = abi_version()
    if abi < 1:
        return False
    libc = _libc()
    handled_fs = _fs_rights(abi)
    if abi >= 4 and not network:
        attr = struct.pack("=QQ", handled_fs, _NET_BIND_TCP | _NET_CONNECT_TCP)
    else:
        attr = struct.pack("=Q", handled_fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(_SYS_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        read = _EXECUTE | _READ_FILE | _READ_DIR
        allowed = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *_SYSTEM_DIRS, *readable}
        allowed |= {p for p in sys.path if p and Path(p).is_absolute()}
        for path in sorted(allowed):
            _allow(libc, ruleset, path, read & handled_fs)
        for path in _SYSTEM_FILES:
            _allow(libc, ruleset, path, _READ_FILE)
        for path in _DEVICES:
            _allow(libc, ruleset, path, (_READ_FILE | _WRITE_FILE | _TRUNCATE) & handled_fs)
        _allow(libc, ruleset, f"/proc/{os.getpid()}", read & handled_fs)
        _allow(libc, ruleset, str(workdir), handled_fs)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return True


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    """Allow ``rights`` beneath ``path``; a path that does not exist is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
        if libc.syscall(
            _SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), attr, ctypes.c_uint32(0)
        ):
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)
