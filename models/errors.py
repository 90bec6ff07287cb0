"""User-facing errors: one line, naming the file/line or value at fault.

They live here, below every package, so that cores (simulators, estimators) and pipelines raise
the same classes; ``pipelines.errors`` re-exports them.
"""


class EpiflowError(Exception):
    """An error caused by input the user gave (file, parameter, model name).

    The command line prints ``epiflow: error: <message>`` on one line and exits with status 2.
    Messages should name the offending file (and line, where known) or value.
    """


class InputError(EpiflowError):
    """A malformed or inconsistent input file."""

    def __init__(self, path, message, line=None):
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
