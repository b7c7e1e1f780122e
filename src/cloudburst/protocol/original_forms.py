"""The value forms the original Cloudburst client writes and reads, for the requests that come from one.

The original serializer knows three ``Value`` types and reads them as follows:

* ``DEFAULT``: a cloudpickle stream, or, when that does not unpickle, the raw body (it stored ``bytes`` untagged
  this way, so a byte string that is not a pickle reads back as itself);
* ``STRING``: UTF-8 text;
* ``NUMPY``: an ``ndarray`` or a pandas ``DataFrame`` in pyarrow's retired serialization format
  (``pyarrow.serialize(value).to_buffer()``).

Any other type (our ``BYTES`` and ``ERROR``) reads as ``None`` there, and our own ``NUMPY`` body (a pickle stream
with out-of-band buffers) fails in pyarrow. A failed call was a result too: the pickled tuple
``('ERROR: <message>', <GenericResponse bytes>)``, or ``('ERROR', …)`` when the function was not found.

pyarrow dropped that format in version 12 and its last versions with it run only on numpy 1, so the pyarrow form is
an optional extra (``cloudburst[original-clients]``); without it such values fail with an error naming the extra.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType
from typing import Any

#: What to install for the original client's numpy and pandas values.
EXTRA = "cloudburst[original-clients]"
_HINT = f"install the optional dependencies of {EXTRA} (pip install '{EXTRA}') where the cluster runs"

#: pyarrow's header (four int32 counts) is followed by an Arrow IPC stream, whose first word is this marker.
_IPC_CONTINUATION = b"\xff\xff\xff\xff"
_HEADER = 16


class OriginalFormUnavailable(Exception):
    """The value needs pyarrow's retired format and pyarrow (before version 12) is not installed."""

    def __init__(self, what: str, cause: str) -> None:
        super().__init__(f"{what} needs pyarrow's retired serialization format, but {cause}: {_HINT}")


def is_arrow_body(body: bytes) -> bool:
    """Whether a ``NUMPY`` body is in pyarrow's format rather than ours.

    Ours starts with a 32-bit buffer count and 64-bit lengths, so bytes 16-19 hold the high half of a buffer's
    length, which is never all ones; pyarrow's hold the IPC stream's continuation marker, which always is.
    """
    return len(body) > _HEADER + 4 and body[_HEADER : _HEADER + 4] == _IPC_CONTINUATION


def is_arrow_value(value: object) -> bool:
    """Whether the original serializer writes ``value`` as ``NUMPY`` (an ``ndarray`` or a ``DataFrame``)."""
    numpy, pandas = sys.modules.get("numpy"), sys.modules.get("pandas")
    return (numpy is not None and isinstance(value, numpy.ndarray)) or (
        pandas is not None and isinstance(value, pandas.DataFrame)
    )


def load_arrow(body: bytes) -> Any:  # noqa: ANN401 - user data
    """Loads an ``ndarray`` or ``DataFrame`` written by the original client.

    Raises:
        OriginalFormUnavailable: pyarrow (before version 12) is not installed.
        Exception: Whatever pyarrow raises for a corrupt body.
    """
    pyarrow = _pyarrow("a numpy or pandas value from an original client")
    with warnings.catch_warnings():
        # The format and pyarrow's pandas glue are deprecated, which is why this is an extra.
        warnings.simplefilter("ignore")
        return pyarrow.deserialize(body)


def dump_arrow(value: object) -> bytes:
    """Writes an ``ndarray`` or ``DataFrame`` as the original client's serializer does.

    Raises:
        OriginalFormUnavailable: pyarrow (before version 12) is not installed.
        Exception: Whatever pyarrow raises for a value it cannot serialize.
    """
    pyarrow = _pyarrow(f"sending a value of type {type(value).__name__} to an original client")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(pyarrow.serialize(value).to_buffer().to_pybytes())


def _pyarrow(what: str) -> ModuleType:
    try:
        pyarrow = importlib.import_module("pyarrow")
    except ImportError as error:
        raise OriginalFormUnavailable(what, f"pyarrow does not import ({error})") from None
    if not hasattr(pyarrow, "serialize"):
        raise OriginalFormUnavailable(what, f"pyarrow {pyarrow.__version__} no longer has it")
    return pyarrow
