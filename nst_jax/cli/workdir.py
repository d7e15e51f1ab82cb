"""A video job's work folder: the job record (``job.json``), the finished frames and the pass files.

What makes ``nst-jax video`` resumable: the same command, run again, finds its folder, checks that
the record is the same job, and continues after the frames (or the pass) already written. Every
file here is read as a stranger's (regular files only, sizes and headers checked before reading).
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import numpy as np

from ..errors import ImageError

JOB_FILE = "job.json"


def file_key(path: str) -> list:
    """What identifies an input file in a job record: its resolved path, size and modification time."""
    p = pathlib.Path(path).expanduser().resolve()
    st = p.stat()
    return [str(p), st.st_size, st.st_mtime_ns]


def frame_name(t: int) -> str:
    """The file name of frame ``t`` in a work folder."""
    return f"frame_{t:06d}.png"


def held_job(work: pathlib.Path) -> tuple[bool, Optional[dict]]:
    """(whether ``work/job.json`` exists, the job it records or None when unreadable or not a small
    regular file: a FIFO there must not hang the run)."""
    from .. import files

    marker = work / JOB_FILE
    if not (marker.exists() or marker.is_symlink()):
        return False, None
    if marker.is_symlink() or not marker.is_file():
        raise ImageError(f"{marker}: not a regular file (nst-jax writes {JOB_FILE} itself); remove it or give "
                         "another -o")
    raw = files.read_small(marker, 1 << 20, follow_links=False)
    try:
        held = json.loads(raw) if raw is not None else None
    except ValueError:
        held = None
    return True, held if isinstance(held, dict) else None


def prepare_work_dir(work: pathlib.Path, job: dict, overwrite: bool, label: str) -> int:
    """Make sure ``work`` is this job's frame folder; return how many frames are already done."""
    from .. import files

    marker = work / JOB_FILE
    if work.exists() and not work.is_dir():
        raise ImageError(f"{work}: exists and is not a folder; {label}")
    files.clean_stale(marker, marker.suffix)  # a job.json write killed part-way (SIGKILL) left its temp file
    exists, held = held_job(work)
    if work.is_dir() and not exists and any(not files.is_temp_name(e.name) for e in work.iterdir()):
        raise ImageError(f"{work}: the folder holds files nst-jax did not write; give another -o")
    if exists and held != job:
        if not overwrite:
            raise ImageError(f"{work}: holds the frames of another job (other inputs or settings); pass "
                             "--overwrite to start afresh, or give another -o")
        for stale in [*work.glob("frame_*.png"), *work.glob("pass.*")]:
            stale.unlink()
    if held != job:
        files.atomic_write(marker, lambda f: f.write(json.dumps(job, indent=1).encode()), overwrite=True)
    done = 0
    while (work / frame_name(done)).exists():
        done += 1
    return done


def read_pass(path: pathlib.Path, shape: tuple) -> Optional[tuple[int, np.ndarray]]:
    """(passes done, frames) from a pass file this job wrote, checked before reading; None if unusable."""
    import os

    from .. import files

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            arrays = [files.read_npy(f, size, shape=(1,), dtype=np.dtype("<i8"), trailing=None),
                      files.read_npy(f, size, shape=tuple(shape), dtype=np.dtype("<f4"))]
    except (OSError, ValueError):
        return None
    done, images = int(arrays[0][0]), arrays[1]
    if done < 1 or not np.isfinite(images).all():
        return None
    return done, images
