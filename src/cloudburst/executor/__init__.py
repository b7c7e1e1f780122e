"""The executor: runs pinned DAG functions and one-shot calls next to the data.

:mod:`~cloudburst.executor.state` decides everything (pins, trigger bookkeeping, batching, delivery, reporting,
departure) without I/O; :mod:`~cloudburst.executor.runtime` loads and runs user code;
:mod:`~cloudburst.executor.user_library` is what user code gets as its first argument;
:mod:`~cloudburst.executor.server` is the ZeroMQ shell that ties them together.
"""
