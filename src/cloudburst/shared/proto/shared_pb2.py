"""The original ``shared_pb2`` module path."""

from cloudburst.protocol.wire.shared_pb2 import KeyVersion, KeyVersionList, StringSet  # noqa: F401
