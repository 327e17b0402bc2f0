"""The exceptions iqk_rs raises on purpose, all under one base class, ``IqkError``.

Each also derives from the builtin exception it has always been (``ValueError``, ``TypeError``,
``NotImplementedError``, ``RuntimeError``), so ``except ValueError`` keeps working. The Rust
core raises ``IqkValueError`` and ``IqkNotImplementedError`` from here (rust/src/py/errors.rs);
the GGUF, imatrix, type-mix, recipe and pipeline errors subclass ``IqkError`` where they are
defined. This module imports nothing, so every layer of the package may use it.
"""


class IqkError(Exception):
    """Base of every error iqk_rs raises on purpose (bad input, options, files or types)."""


class IqkValueError(IqkError, ValueError):
    """Invalid input to an iqk_rs operation (shape, values, imatrix, type name, option)."""


class IqkTypeError(IqkError, TypeError):
    """An argument of the wrong kind (e.g. an array of the wrong dtype)."""


class IqkNotImplementedError(IqkError, NotImplementedError):
    """An operation a type does not have in this build (e.g. dot products of a companion type,
    or decoding a tensor type neither the core nor the gguf package implements)."""


class IqkKeyError(IqkError, KeyError):
    """A name that is not there (e.g. a tensor a GGUF file does not hold)."""

    def __str__(self) -> str:  # the message, not KeyError's quoted repr of it
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()
