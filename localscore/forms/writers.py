"""One writer per output form, chosen by the output's name: the table every command writes results through."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError
from .jsonl_output import JsonlWriter
from .output import Writer, output_target


def open_writer(path: str | os.PathLike | None, *, resume: bool = False, schema: object = None) -> Writer:
    """The writer for `path` (None: stdout): Parquet for a `.parquet` name, else JSON Lines.

    A regular (or new) file is written as `<path>.partial` and renamed onto `path` by `finish()`; a device, FIFO or
    socket (`/dev/null`, `/dev/stdout` on a terminal) is written in place and cannot be resumed. `schema`: the Arrow
    schema of Parquet output (parquet_output.output_schema of a table input's), None to infer it from the results.
    """
    if path is None:
        if resume:
            raise OutputError("{resume} needs an output file ({output})", options=["resume", "output"])
        return JsonlWriter(None, resume=False)
    target = output_target(path)
    if target.special and resume:
        raise OutputError(f"{{resume}} cannot continue {os.fspath(path)}: it is not a regular file, so it is written "
                          "in place and keeps nothing to continue; drop {resume}", options=["resume"])
    if Path(path).suffix.lower() == ".parquet":
        if target.special:
            raise OutputError(f"cannot write Parquet to {os.fspath(path)}: it is not a regular file, and Parquet is "
                              "written whole at the end; give a file name, or a name without .parquet for JSON Lines")
        from .parquet_output import ParquetWriter

        return ParquetWriter(target, resume=resume, schema=schema)
    return JsonlWriter(target, resume=resume)
