"""Clients that speak to our servers exactly as the original Cloudburst and Anna Python clients do.

Written from the originals' observable behaviour (their sockets, messages and pickles), not their code:

* :class:`AnnaStyleClient`: PULL sockets for KVS and address responses, a ``KeyAddressRequest`` to the routing port
  with an ``"<ip>:<n>"`` request id, one-key ``KeyRequest``s to the storage address it names, LWW values stamped
  with the original's coarse timestamps (``int(time.time() * 10)``).
* :class:`OriginalSerializer`: the original serializer's rules for ``Value`` messages (see
  ``cloudburst.protocol.original_forms``): bytes untagged as ``DEFAULT``, ``ndarray`` and ``DataFrame`` in pyarrow's
  format, a future or reference as a pickled ``CloudburstReference`` with its instance dictionary as state; and
  on reading, ``None`` for any type it does not know.
* :class:`OriginalClient`: REQ sockets on the scheduler's ports 5000-5006 with only the original's message fields
  set (so every request has the ``LEGACY`` delivery), results read from the KVS (one-shot calls, DAG calls) or
  from its own PULL socket (``direct_response``).
"""

from __future__ import annotations

import copyreg
import time
import warnings

import cloudpickle
import zmq

from cloudburst.config import RuntimePorts
from cloudburst.protocol.wire import anna_pb2, cloudburst_pb2, shared_pb2
from cloudburst.shared.reference import CloudburstReference


class AnnaStyleClient:
    """The original Anna client's socket pattern and messages."""

    def __init__(self, routing: str, host: str = "127.0.0.1"):
        self.context = zmq.Context()
        self.host = host
        self.responses = self.context.socket(zmq.PULL)
        self.key_addresses = self.context.socket(zmq.PULL)
        port = self.responses.bind_to_random_port(f"tcp://{host}")
        address_port = self.key_addresses.bind_to_random_port(f"tcp://{host}")
        self.response_address = f"tcp://{host}:{port}"
        self.address_response_address = f"tcp://{host}:{address_port}"
        self.routing = self.context.socket(zmq.PUSH)
        self.routing.connect(routing)
        self.counter = 0
        self.pushers: dict[str, zmq.Socket] = {}

    def close(self):
        self.context.destroy(linger=0)

    def _request_id(self) -> str:
        self.counter = (self.counter + 1) % 10000
        return f"{self.host}:{self.counter}"

    def _recv(self, socket, message_class, request_id):
        while True:
            assert socket.poll(5000), "no response from the server"
            response = message_class.FromString(socket.recv())
            if response.response_id == request_id:
                return response

    def addresses(self, key: str) -> list[str]:
        request = anna_pb2.KeyAddressRequest(response_address=self.address_response_address, keys=[key])
        request.request_id = self._request_id()
        self.routing.send(request.SerializeToString())
        response = self._recv(self.key_addresses, anna_pb2.KeyAddressResponse, request.request_id)
        assert response.error == anna_pb2.NO_ERROR
        return list(response.addresses[0].ips)

    def _send(self, key: str, request):
        address = self.addresses(key)[0]
        if address not in self.pushers:
            self.pushers[address] = self.context.socket(zmq.PUSH)
            self.pushers[address].connect(address)
        request.response_address = self.response_address
        request.request_id = self._request_id()
        self.pushers[address].send(request.SerializeToString())
        return self._recv(self.responses, anna_pb2.KeyResponse, request.request_id)

    def put_lww_value(self, key: str, value: bytes) -> anna_pb2.KeyResponse:
        """Stores serialized ``Value`` bytes in an LWW register, stamped as the original stamps."""
        lww = anna_pb2.LWWValue(timestamp=int(time.time() * 10), value=value)
        request = anna_pb2.KeyRequest(type=anna_pb2.PUT)
        request.tuples.add(key=key, lattice_type=anna_pb2.LWW, payload=lww.SerializeToString())
        return self._send(key, request)

    def put_lww(self, key: str, value: object) -> anna_pb2.KeyResponse:
        body = cloudburst_pb2.Value(body=cloudpickle.dumps(value), type=cloudburst_pb2.DEFAULT)
        return self.put_lww_value(key, body.SerializeToString())

    def put_set(self, key: str, items: list[bytes]) -> anna_pb2.KeyResponse:
        request = anna_pb2.KeyRequest(type=anna_pb2.PUT)
        payload = anna_pb2.SetValue(values=items).SerializeToString()
        request.tuples.add(key=key, lattice_type=anna_pb2.SET, payload=payload)
        return self._send(key, request)

    def get(self, key: str) -> anna_pb2.KeyTuple:
        request = anna_pb2.KeyRequest(type=anna_pb2.GET)
        request.tuples.add(key=key)
        return self._send(key, request).tuples[0]


class OriginalReference:
    """Pickles exactly as an original client's ``CloudburstReference`` does.

    The original class has no ``__getstate__``, so its pickle names the class and carries the instance dictionary
    (``{'key': ..., 'deserialize': ...}``) as state. This stand-in produces those bytes whatever our own class does.
    """

    def __init__(self, key: str, deserialize: bool = True):
        self.key = key
        self.deserialize = deserialize

    @property
    def __class__(self):  # the class pickle records (and checks against the reduction)
        return CloudburstReference

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (CloudburstReference,), {"key": self.key, "deserialize": self.deserialize}


class OriginalFuture:
    """What an original call returns: the response key, read from the KVS on :meth:`get`."""

    def __init__(self, client: OriginalClient, obj_id: str):
        self.client = client
        self.obj_id = obj_id

    def get(self, timeout: float = 30.0):
        return self.client.read_result(self.obj_id, timeout)


class OriginalSerializer:
    """The original serializer's rules for writing and reading ``Value`` messages."""

    def dump(self, value) -> cloudburst_pb2.Value:
        if type(value) is bytes:
            return cloudburst_pb2.Value(body=value, type=cloudburst_pb2.DEFAULT)
        if isinstance(value, OriginalFuture):
            value = OriginalReference(value.obj_id, True)
        if _is_array_or_frame(value):
            import pyarrow

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                body = pyarrow.serialize(value).to_buffer().to_pybytes()
            return cloudburst_pb2.Value(body=body, type=cloudburst_pb2.NUMPY)
        if isinstance(value, str):
            return cloudburst_pb2.Value(body=value.encode(), type=cloudburst_pb2.STRING)
        return cloudburst_pb2.Value(body=cloudpickle.dumps(value), type=cloudburst_pb2.DEFAULT)

    def load(self, data: bytes):
        value = cloudburst_pb2.Value.FromString(data)
        if value.type == cloudburst_pb2.DEFAULT:
            try:
                return cloudpickle.loads(value.body) if value.body else value.body
            except Exception:
                return value.body
        if value.type == cloudburst_pb2.STRING:
            return value.body.decode()
        if value.type == cloudburst_pb2.NUMPY:
            import pyarrow

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pyarrow.deserialize(value.body)
        return None  # the original serializer knows no other type

    def load_tuple(self, item: anna_pb2.KeyTuple):
        """A stored lattice as the original's ``load_lattice`` reads it (LWW: the value; SET: a list)."""
        if item.lattice_type == anna_pb2.LWW:
            return self.load(anna_pb2.LWWValue.FromString(item.payload).value)
        if item.lattice_type == anna_pb2.SET:
            return [self.load(member) for member in anna_pb2.SetValue.FromString(item.payload).values]
        raise AssertionError(f"the original reader has no case for lattice type {item.lattice_type}")


def _is_array_or_frame(value) -> bool:
    import sys

    numpy, pandas = sys.modules.get("numpy"), sys.modules.get("pandas")
    return (numpy is not None and isinstance(value, numpy.ndarray)) or (
        pandas is not None and isinstance(value, pandas.DataFrame)
    )


class OriginalClient:
    """The original ``CloudburstConnection``'s requests, sockets and reads."""

    def __init__(self, scheduler: str, host: str = "127.0.0.1", ports: RuntimePorts | None = None):
        self.ports = ports or RuntimePorts()
        self.serializer = OriginalSerializer()
        self.context = zmq.Context()
        self.scheduler = scheduler
        self.sockets: dict[int, zmq.Socket] = {}
        self.responses = self.context.socket(zmq.PULL)
        port = self.responses.bind_to_random_port(f"tcp://{host}")
        self.response_address = f"tcp://{host}:{port}"
        kvs = self._request(self.ports.connect, b"").decode()
        routing = kvs if kvs.startswith("tcp://") else f"tcp://{kvs}:6450"
        self.kvs = AnnaStyleClient(routing, host)
        self.rid = 0

    def close(self):
        self.kvs.close()
        self.context.destroy(linger=0)

    def _request(self, port: int, payload: bytes, timeout: float = 30.0) -> bytes:
        socket = self.sockets.get(port)
        if socket is None:
            socket = self.sockets[port] = self.context.socket(zmq.REQ)
            socket.connect(f"tcp://{self.scheduler}:{port}")
        socket.send(payload)
        assert socket.poll(int(timeout * 1000)), f"the scheduler did not answer on port {port}"
        return socket.recv()

    def _generic(self, port: int, message) -> cloudburst_pb2.GenericResponse:
        return cloudburst_pb2.GenericResponse.FromString(self._request(port, message.SerializeToString()))

    def register(self, function, name: str) -> None:
        body = self.serializer.dump(function).SerializeToString()
        response = self._generic(self.ports.function_create, cloudburst_pb2.Function(name=name, body=body))
        assert response.success, response

    def list(self, prefix: str = "") -> list[str]:
        return list(shared_pb2.StringSet.FromString(self._request(self.ports.list, prefix.encode())).keys)

    def exec_func(self, name: str, args) -> OriginalFuture:
        call = cloudburst_pb2.FunctionCall(name=name, request_id=self.rid)
        call.arguments.values.extend(self.serializer.dump(argument) for argument in args)
        response = self._generic(self.ports.function_call, call)
        self.rid += 1
        assert response.success, response
        return OriginalFuture(self, response.response_id)

    def register_dag(self, name: str, functions, connections) -> tuple[bool, int]:
        dag = cloudburst_pb2.Dag(name=name)
        for function in functions:
            dag.functions.add(name=function)
        for source, sink in connections:
            dag.connections.add(source=source, sink=sink)
        response = self._generic(self.ports.dag_create, dag)
        return response.success, response.error

    def call_dag(self, name: str, arg_map, direct_response: bool = False, output_key: str | None = None):
        call = cloudburst_pb2.DagCall(name=name, consistency=cloudburst_pb2.NORMAL)
        if output_key:
            call.output_key = output_key
        for function, arguments in arg_map.items():
            if type(arguments) is not list:
                arguments = [arguments]
            call.function_args[function].values.extend(self.serializer.dump(a) for a in arguments)
        if direct_response:
            call.response_address = self.response_address
        response = self._generic(self.ports.dag_call, call)
        assert response.success, response
        if direct_response:
            assert self.responses.poll(30_000), "no direct response"
            return self.serializer.load(self.responses.recv())
        return OriginalFuture(self, response.response_id)

    def put_object(self, key: str, value) -> None:
        if isinstance(value, set):
            response = self.kvs.put_set(key, [self.serializer.dump(v).SerializeToString() for v in value])
        else:
            response = self.kvs.put_lww_value(key, self.serializer.dump(value).SerializeToString())
        assert response.tuples[0].error == anna_pb2.NO_ERROR, response

    def get_object(self, key: str):
        item = self.kvs.get(key)
        return None if item.error == anna_pb2.KEY_DNE else self.serializer.load_tuple(item)

    def read_result(self, key: str, timeout: float):
        """Polls the KVS until the key exists, as the original future's ``get`` does (with a deadline added)."""
        deadline = time.monotonic() + timeout
        while (item := self.kvs.get(key)).error == anna_pb2.KEY_DNE:
            assert time.monotonic() < deadline, f"no result under {key!r} within {timeout} s"
            time.sleep(0.01)
        return self.serializer.load_tuple(item)
