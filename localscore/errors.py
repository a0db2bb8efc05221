"""Errors a user can cause. The CLI turns each into one line; anything else is a bug and keeps its traceback."""


class LocalscoreError(Exception):
    """Base class: the message is shown to the user as-is, so it names the file/record and what to do."""


class InputError(LocalscoreError):
    """Bad input data: a file that cannot be read, a record of unknown shape, a bad option value."""


class ModelError(LocalscoreError):
    """A model file that cannot be used for scoring (missing, corrupt, wrong architecture, no digit tokens)."""


class ConversionError(LocalscoreError):
    """A checkpoint that cannot be converted (unsafe pickle, unsupported architecture or tokenizer, corrupt file)."""


class OutputError(LocalscoreError):
    """An output that cannot be written: the input itself, a folder, a full disk, a resume into a device."""


class OutputClosed(LocalscoreError):
    """The reader of the output went away (`localscore score ... | head`): the CLI ends quietly, like a Unix tool."""
