"""The original ``cloudburst_pb2`` module path: messages and enum constants (``NORMAL``, ``SINGLE``, ``MULTI``, ...).

New code should use :mod:`cloudburst` instead; this module exists so that programs written for the original
system import unchanged.
"""

from cloudburst.protocol.wire.cloudburst_pb2 import (  # noqa: F401
    BYTES,
    CLIENT,
    DAG_ALREADY_EXISTS,
    DEFAULT,
    EXECUTION_ERROR,
    FUNC_NOT_FOUND,
    MULTI,
    MULTIEXEC,
    NO_CLOUDBURST_ERROR,
    NO_RESOURCES,
    NO_SUCH_DAG,
    NORMAL,
    NOT_PINNED,
    NUMPY,
    REGULAR,
    SINGLE,
    STORAGE,
    STRING,
    Arguments,
    CallSource,
    CloudburstError,
    ConsistencyType,
    Continuation,
    Dag,
    DagCall,
    DagSchedule,
    DagTrigger,
    ExecutionType,
    Function,
    FunctionCall,
    GenericResponse,
    SerializerType,
    Value,
)
