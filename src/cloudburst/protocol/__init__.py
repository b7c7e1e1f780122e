"""Wire protocol: typed messages, the protobuf codec and the value serializer.

Only :mod:`cloudburst.protocol.codec` touches generated protobuf code; everything above it works with the
dataclasses in :mod:`cloudburst.protocol.messages`.
"""
