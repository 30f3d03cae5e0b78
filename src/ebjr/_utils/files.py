"""Writing output files safely: checked paths, never an input, whole files or none.

Every command that writes a file goes through :func:`check_output` (a one-line
:class:`~ebjr.exceptions.InputError` for a folder, a device, a path whose
parent is a file, or the command's own input) and :class:`AtomicWriter` /
:func:`write_atomic` (a temporary file beside the target, renamed over it
only once it is complete, so a full disk or a crash never leaves half a
file where a good one was).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ebjr.exceptions import InputError

__all__ = ["AtomicWriter", "check_output", "output_folder", "write_atomic"]


def check_output(path: str | Path, inputs: Iterable[Any] = (), what: str = "output") -> Path:
    """``path`` as an output file: creates missing parent folders; refuses the rest.

    Raises:
        InputError: ``path`` is a folder or not a regular file, its parent is not a folder,
            or it is one of ``inputs`` (the command would overwrite what it reads).
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"the {what} {str(p)!r} is a folder; give a file name")
    if p.exists() and not p.is_file():
        raise InputError(f"the {what} {str(p)!r} exists and is not a regular file")
    for source in inputs:
        if source is None:
            continue
        with contextlib.suppress(OSError):
            if p.exists() and os.path.samefile(p, source):
                raise InputError(
                    f"the {what} {str(p)!r} is also an input of this command; refusing to "
                    "overwrite it"
                )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot write the {what} {str(p)!r}: a parent is not a folder") from None
    except OSError as exc:
        raise InputError(f"cannot create the folder of the {what} {str(p)!r}: "
                         f"{exc.strerror}") from None
    return p


def output_folder(path: str | Path, what: str = "report folder") -> Path:
    """``path`` as a folder to write into (created if missing).

    Raises:
        InputError: ``path`` (or a parent) exists and is not a folder, or cannot be made.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"the {what} {str(p)!r} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot make the {what} {str(p)!r}: a parent is not a folder") from None
    except OSError as exc:
        raise InputError(f"cannot make the {what} {str(p)!r}: {exc.strerror}") from None
    return p


class AtomicWriter:
    """A binary file opened beside ``path`` and renamed over it on a clean exit.

    ``with AtomicWriter(p) as f: f.write(...)``; ``.temp`` is the temporary path for
    writers that open files themselves. An exception (or a failed write) removes the
    temporary file and leaves ``path`` as it was; an ``OSError`` becomes an
    :class:`InputError` naming the file.
    """

    def __init__(self, path: str | Path, what: str = "output", inputs: Iterable[Any] = ()) -> None:
        self.path = check_output(path, inputs, what)
        self.what = what
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                    dir=self.path.parent)
        os.close(fd)
        self.temp = Path(name)
        self.file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        self.file = self.temp.open("wb")
        return self.file

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.file is not None:
                self.file.close()
        except OSError as err:
            exc = exc or err
        if exc is None:
            self.commit()
        else:
            self.discard()
            if isinstance(exc, OSError):
                raise self.error(exc) from None

    def commit(self) -> Path:
        """Move the finished temporary file over ``path``."""
        try:
            os.chmod(self.temp, 0o644)
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.discard()
            raise self.error(exc) from None
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink()

    def error(self, exc: OSError) -> InputError:
        return InputError(f"cannot write the {self.what} {str(self.path)!r}: "
                          f"{exc.strerror or exc}")


def write_atomic(path: str | Path, data: bytes, what: str = "output",
                 inputs: Iterable[Any] = ()) -> Path:
    """Write ``data`` to ``path`` as a whole file (see :class:`AtomicWriter`)."""
    writer = AtomicWriter(path, what, inputs)
    with writer as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return writer.path
