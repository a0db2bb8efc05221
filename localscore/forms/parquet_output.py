"""Write results as one Parquet file, resumably.

A Parquet file cannot be appended to after a kill (its footer comes last), so results go into complete part files
in an `OUT.parquet.partial/` folder: each part is written under a temporary name, fsynced and renamed, so a part
either is whole or is not there. A resumed run counts the rows of the parts. `finish()` streams every part into one
file with a fixed number of rows per row group, so its bytes do not depend on where a run was interrupted, and
renames it onto `OUT.parquet`.

Columns: a table input's own Arrow schema (types round-trip exactly), plus `<name>_score` (float64) and/or
`<name>_scores` (list<float64>), `<name>_truncated` (bool) and `<name>_error` (string), null where they do not
apply. For JSON input the schema is inferred, part by part, and unified at the end.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..deita.templates import Template
from ..errors import OutputError
from ..extras import require
from .durable import OutputLock, Sink, copy_file, write_error, write_file
from .output import Target, Writer
from .provenance import PARQUET_KEY, Provenance, read_provenance, remove_sidecar, write_sidecar

# A part is written after this many results or seconds, whichever comes first: what a kill can lose at most.
PART_ROWS = 1000
PART_SECONDS = 60.0
# Rows per row group of the finished file: fixed, so the bytes are the same however the run was cut into parts.
ROW_GROUP_ROWS = 4096
_PART = "part-{:06d}.parquet"


def arrow() -> tuple[object, object]:
    """(pyarrow, pyarrow.parquet), or OutputError naming the extra to install."""
    return (require("pyarrow", "parquet", "writing Parquet", OutputError),
            require("pyarrow.parquet", "parquet", "writing Parquet", OutputError))


def output_schema(schema, template: Template):
    """The output's schema for a table input with `schema`: its columns (result columns it already has are
    replaced), then the result columns for the shapes its columns can hold."""
    pa, _ = arrow()
    score, scores, truncated, error = template.result_fields
    names = set(schema.names)
    fields = [field for field in schema if field.name not in (score, scores, truncated, error)]
    if names & {"instruction", "output"}:
        fields.append(pa.field(score, pa.float64()))
    if names & {"conversations", "messages"}:
        fields.append(pa.field(scores, pa.list_(pa.float64())))
    fields += [pa.field(truncated, pa.bool_()), pa.field(error, pa.string())]
    return pa.schema(fields)  # no metadata: a pandas or datasets description of the input would be stale


class ParquetWriter(Writer):
    """Results into `OUT.parquet.partial/` parts, joined into `OUT.parquet` by `finish()`. `schema`: the output's
    Arrow schema (None: inferred from the results)."""

    unit = "row"

    def __init__(self, target: Target, *, resume: bool = False, schema: object = None):
        self._pa, self._pq = arrow()
        self._target = target
        self._folder = target.partial
        self._schema = schema
        self._parts: list[Path] = []
        self._part_schema = None  # of the last part, for check_resumed
        self._rows: list[dict] = []
        self._in_parts = 0  # rows in self._parts
        self._finished = False
        self._since = time.monotonic()
        self.name = str(self._folder)
        self._lock = OutputLock(target.path).acquire()
        try:
            self._open(resume)
        except OSError as e:
            self._lock.release()
            raise write_error(self._folder, e) from None
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool) -> None:
        if resume and not self._folder.exists() and self._target.path.exists():
            # The run had finished: continue from it as one part, so that a longer input can still be completed.
            self.resumed = read_provenance(self._target.path)
            self._folder.mkdir()
            copy_file(self._target.path, self._folder / _PART.format(0))
            if self.resumed is not None:  # the copy keeps its record: a resume refused now is refused again
                write_sidecar(self._folder, self.resumed)
        elif resume and self._folder.is_dir():
            self.resumed = read_provenance(self._folder)
        if resume and self._folder.is_dir():
            self._resume()
        else:
            remove_sidecar(self._folder)
            if self._folder.is_dir():
                shutil.rmtree(self._folder)
            elif self._folder.exists():
                self._folder.unlink()
            self._folder.mkdir()

    def close(self) -> None:
        """Leave the parts for resuming. Results not yet in a part (Ctrl-C, a strict stop) are whole: they become
        one more part, unless writing fails again (a full disk), and then resuming redoes them."""
        try:
            if self._rows and not self._finished:
                try:
                    self._write_part()
                except OutputError:
                    pass
        finally:
            self._lock.release()

    def write(self, obj: dict) -> None:
        self._rows.append(obj)
        if len(self._rows) >= PART_ROWS or time.monotonic() - self._since >= PART_SECONDS:
            self._write_part()

    def begin(self, provenance: Provenance) -> None:
        write_sidecar(self._folder, provenance)

    def finish(self, provenance: Provenance | None = None) -> None:
        """Join the parts into the output, `provenance` in its key-value metadata (the file's only one: parts from
        a finished output carry the old)."""
        if self._rows:
            self._write_part()
        self._check_complete()
        pa, pq = self._pa, self._pq
        schema = self._schema or self._unified([pq.read_schema(part) for part in self._parts] or [pa.schema([])])
        schema = schema.remove_metadata() if provenance is None else \
            schema.with_metadata({PARQUET_KEY: provenance.to_json()})
        final = self._folder / "final.tmp"
        sink = Sink.open(final, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, resumable=True)
        try:
            with pq.ParquetWriter(sink, schema) as writer:
                pending: list = []
                for part in self._parts:
                    with pq.ParquetFile(part) as parquet:
                        for batch in parquet.iter_batches(batch_size=ROW_GROUP_ROWS):
                            table = pa.Table.from_batches([batch])
                            if not table.schema.equals(schema):
                                table = pa.Table.from_pylist(table.to_pylist(), schema=schema)
                            pending.append(table)
                            if sum(len(t) for t in pending) >= ROW_GROUP_ROWS:
                                pending = self._write_group(writer, pending, ROW_GROUP_ROWS)
                if pending:
                    self._write_group(writer, pending, sum(len(t) for t in pending))
            sink.commit(self._target.path)
        finally:
            sink.close()
        shutil.rmtree(self._folder)
        remove_sidecar(self._folder)
        self._finished = True

    def _stored(self, obj: dict) -> dict:
        schema = self._part_schema
        if schema is None or not set(obj) <= set(schema.names):
            return obj
        try:
            return self._pa.Table.from_pylist([obj], schema=schema).to_pylist()[0]
        except (self._pa.ArrowInvalid, self._pa.ArrowTypeError, TypeError):
            return obj

    def _write_group(self, writer, tables: list, rows: int) -> list:
        """Write the first `rows` rows of `tables` as one row group (one contiguous chunk, so that where parts
        began cannot show in the bytes); return the rest."""
        table = self._pa.concat_tables(tables).combine_chunks()
        writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        return [rest] if len(rest) else []

    def _write_part(self) -> None:
        table = self._table(self._rows)
        buffer = self._pa.BufferOutputStream()
        try:
            self._pq.write_table(table, buffer)
        except self._pa.ArrowException as e:  # e.g. an empty object: Parquet has no struct without fields
            raise OutputError(f"results {self._in_parts + 1:,} to {self._in_parts + len(self._rows):,} cannot be "
                              f"stored in Parquet ({e}); write JSON Lines instead (an {{output}} name without "
                              ".parquet)",
                              options=["output"]
                              ) from None
        part = self._folder / _PART.format(len(self._parts))
        write_file(part, buffer.getvalue().to_pybytes(), resumable=True)
        self._parts.append(part)
        self._part_schema = table.schema
        self._in_parts += len(self._rows)
        self._rows = []
        self._since = time.monotonic()

    def _table(self, rows: list[dict]):
        """`rows` as a table of the output schema, or of the schema they infer; OutputError naming the first row
        that fits neither the rows before it nor the parts before it."""
        pa = self._pa
        try:
            if self._schema is not None:
                return pa.Table.from_pylist(rows, schema=self._schema)
            table = pa.Table.from_struct_array(pa.array(rows))
            if self._parts:
                self._unified([self._pq.read_schema(self._parts[-1]), table.schema])
            return table
        except (pa.ArrowInvalid, pa.ArrowTypeError, OutputError):
            pass
        known = self._schema or (self._pq.read_schema(self._parts[-1]) if self._parts else None)
        for index, row in enumerate(rows):
            try:
                inferred = pa.Table.from_struct_array(pa.array([row])).schema
                known = inferred if known is None else self._unified([known, inferred])
                if self._schema is not None:
                    pa.Table.from_pylist([row], schema=self._schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OutputError):
                raise OutputError(
                    f"result {self._in_parts + index + 1:,} does not fit one Parquet schema with the results before it "
                    "(a field changed type, or holds mixed types); write JSON Lines instead (an {output} name without "
                    ".parquet)", options=["output"]
                ) from None
        raise AssertionError("rows that fail together fit one by one")

    def _unified(self, schemas: list):
        try:
            return self._pa.unify_schemas(schemas, promote_options="permissive")
        except (self._pa.ArrowInvalid, self._pa.ArrowTypeError) as e:
            raise OutputError(f"the results do not fit one Parquet schema: {e}") from None

    def _resume(self) -> None:
        """Keep the parts that are whole, in order, from part 0; remove the rest (a kill's temporary files)."""
        for index in range(len(list(self._folder.iterdir()))):
            part = self._folder / _PART.format(index)
            try:
                rows = self._pq.ParquetFile(part).metadata.num_rows
            except Exception:  # missing, or cut by a power loss: this part and everything after it are redone
                break
            self._parts.append(part)
            self._in_parts += rows
        for path in self._folder.iterdir():
            if path not in self._parts:
                path.unlink()
        self.done = self._in_parts
        if self._parts:
            last = self._pq.ParquetFile(self._parts[-1])
            self._part_schema = last.schema_arrow
            table = last.read_row_group(last.num_row_groups - 1)
            self._last = table.slice(len(table) - 1).to_pylist()[0]
