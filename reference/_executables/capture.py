"""Capture files: where a task's output goes (inside the work directory)."""

from __future__ import annotations

import hashlib
import os
from typing import IO

_NAME_MAX = 255
_SUFFIX_LEN = len(".stdout")
# Characters a uid may hold and still name its capture files as it is: "/"
# and NUL cannot be in a file name, and "%" is what the encoding uses.
_ENCODED = {"/": "%2F", "\0": "%00", "%": "%25"}
_KEPT_PREFIX = 64  # characters of an over-long name kept before its hash


def capture_name(uid: str) -> str:
    """Return the file name (without suffix) under which a uid's output is kept.

    An ordinary uid is its own name: ``task.1`` gives ``task.1.stdout``. A
    uid that cannot be one file name inside the work dir is encoded, so
    that no uid can name a file outside it (RS-11) and two uids never share
    a name:

    - ``/`` becomes ``%2F``, NUL ``%00`` and ``%`` itself ``%25`` (so
      ``../x`` is ``..%2Fx`` and ``/abs/x`` is ``%2Fabs%2Fx``); characters
      the file system encoding cannot hold become ``%uXXXX``. Only a uid
      needing one of these is touched, and every encoded name holds a ``%``
      that no name left as is has, so the mapping stays one-to-one and can
      be undone.
    - a name whose ``.stdout`` file would exceed 255 bytes is cut to its
      first 64 characters followed by ``%%`` and the SHA-256 of the uid.

    ``.`` and ``..`` need nothing: the suffix makes them plain names
    (``...stdout``) inside the work dir.

    Args:
        uid: The task's uid.

    Returns:
        A single path component.
    """
    if len(uid) <= 60 and uid.isascii() and not any(c in uid for c in _ENCODED):
        return uid  # the common case: nothing to encode, surely short enough
    name = "".join(_ENCODED.get(c, c) for c in uid)
    try:
        size = len(os.fsencode(name))
    except UnicodeEncodeError:
        name = "".join(_encodable(c) for c in name)
        size = len(os.fsencode(name))
    if size + _SUFFIX_LEN > _NAME_MAX:
        digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()
        head = name[:_KEPT_PREFIX]
        while len(os.fsencode(head)) > _KEPT_PREFIX:  # multi-byte characters
            head = head[:-1]
        cut = head.rfind("%", len(head) - 5)  # never end inside a %XX / %uXXXX
        if cut != -1:
            head = head[:cut]
        name = f"{head}%%{digest}"
    return name


def _encodable(char: str) -> str:
    try:
        os.fsencode(char)
    except UnicodeEncodeError:
        return f"%u{ord(char):04X}"
    return char


def capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
    """Return the ``(stdout, stderr)`` capture file paths of a task.

    Args:
        work_dir: The backend's ``_work_dir``.
        uid: The task's uid.

    Returns:
        ``<work_dir>/<name>.stdout`` and ``<work_dir>/<name>.stderr``, with
        ``name`` from `capture_name`: the uid itself unless it has to be
        encoded to stay one file name inside ``work_dir``.
    """
    base = os.path.join(work_dir, capture_name(uid))
    return base + ".stdout", base + ".stderr"


def open_capture_files(work_dir: str, uid: str) -> tuple[IO[bytes], IO[bytes]]:
    """Create (truncate) a task's capture files and open them for the child.

    The caller passes them as the child's stdout/stderr and closes them once
    the child is started. ``work_dir`` is created if missing.

    Args:
        work_dir: The backend's ``_work_dir``.
        uid: The task's uid.

    Returns:
        The open ``(stdout, stderr)`` binary files.
    """
    return open_capture(capture_paths(work_dir, uid))


def open_capture(paths: tuple[str, str]) -> tuple[IO[bytes], IO[bytes]]:
    """Create (truncate) the ``(stdout, stderr)`` files at ``paths``; open them.

    Their directory is created if missing. Truncated, never appended to: a
    resubmitted uid starts with empty files.

    Args:
        paths: From `capture_paths`.

    Returns:
        The open ``(stdout, stderr)`` binary files.
    """
    out_path, err_path = paths
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    out = open(out_path, "wb")  # noqa: SIM115 - handed to the child, closed by caller
    try:
        err = open(err_path, "wb")  # noqa: SIM115
    except BaseException:
        out.close()
        raise
    return out, err


_CAPTURE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def open_capture_fds(paths: tuple[str, str]) -> tuple[int, int]:
    """`open_capture` as raw descriptors, for a spawn that takes them.

    The same files, flags and mode as ``open(path, "wb")`` (truncated, not
    inheritable), without building file objects; the directory is created
    only when the first open finds it missing. The caller closes both
    descriptors once the child is started.

    Args:
        paths: From `capture_paths`.

    Returns:
        The open ``(stdout, stderr)`` descriptors.
    """
    out_path, err_path = paths
    try:
        out = os.open(out_path, _CAPTURE_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        out = os.open(out_path, _CAPTURE_FLAGS, 0o666)
    try:
        err = os.open(err_path, _CAPTURE_FLAGS, 0o666)
    except BaseException:
        os.close(out)
        raise
    return out, err
