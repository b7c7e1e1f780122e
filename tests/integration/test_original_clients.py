"""Original Cloudburst programs against a real cluster: their references, values, errors, as their client sends them.

:class:`original_client.OriginalClient` speaks as the original client does on the wire and in its pickles, and reads
results with the original serializer's rules, so a form that client could not read shows up here as ``None`` or a
failure, as it would for its users. Tests marked ``original_clients`` need pyarrow's retired format (the
``original-clients`` extra, numpy 1): ``make test`` runs them in ``.venv-original-clients``.
"""

import pickle
import threading

import cloudpickle
import pytest
from original_client import OriginalClient, OriginalFuture, OriginalReference

import cloudburst
from cloudburst.errors import RemoteExecutionError
from cloudburst.protocol.wire import cloudburst_pb2
from cloudburst.shared.reference import CloudburstReference

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def session():
    with cloudburst.local(executors=3) as connection:
        yield connection


@pytest.fixture(scope="module")
def scheduler(session):
    return session.scheduler


@pytest.fixture
def original(scheduler):
    client = OriginalClient(scheduler)
    yield client
    client.close()


def _error_pair(value):
    """The original's failed-call form: ``('ERROR: <message>', GenericResponse bytes)``."""
    assert isinstance(value, tuple), value
    assert len(value) == 2, value
    text, response = value
    return text, cloudburst_pb2.GenericResponse.FromString(response)


def test_our_reference_pickles_as_the_original_does():
    ours = cloudpickle.dumps(CloudburstReference("k", True))
    assert ours == cloudpickle.dumps(OriginalReference("k", True))
    loaded = pickle.loads(ours)
    assert (loaded.key, loaded.deserialize) == ("k", True)


def test_references_stored_by_older_versions_still_load():
    # Earlier versions pickled a (key, deserialize) pair as the state.
    legacy = CloudburstReference.__new__(CloudburstReference)
    legacy.__setstate__(("old", False))
    assert (legacy.key, legacy.deserialize) == ("old", False)


def test_an_original_reference_resolves(original):
    original.register(lambda _, x: x * 10, "oc_times_ten")
    original.put_object("oc/ref", 4)
    assert original.exec_func("oc_times_ten", [OriginalReference("oc/ref", True)]).get() == 40


def test_an_original_future_passed_on_resolves(original):
    original.register(lambda _, x: x + 1, "oc_incr")
    original.register(lambda _, x: x * x, "oc_square")
    assert original.exec_func("oc_square", [original.exec_func("oc_incr", [2])]).get() == 9


def test_a_reference_in_a_dag_argument_resolves(original):
    original.register(lambda _, x: x + 1, "oc_dag_incr")
    original.register(lambda _, x: x * x, "oc_dag_square")
    assert original.register_dag("oc_ref_dag", ["oc_dag_incr", "oc_dag_square"], [("oc_dag_incr", "oc_dag_square")])[0]
    original.put_object("oc/dag-ref", 3)
    reference = OriginalReference("oc/dag-ref", True)
    assert original.call_dag("oc_ref_dag", {"oc_dag_incr": reference}, direct_response=True) == 16
    assert original.call_dag("oc_ref_dag", {"oc_dag_incr": reference}).get() == 16


def test_bytes_reach_original_readers_untagged(original, session):
    original.register(lambda _, raw: raw + b"!", "oc_bytes")
    original.register_dag("oc_bytes_dag", ["oc_bytes"], [])
    # Sent untagged as DEFAULT by the original client, and given back the same way.
    assert original.exec_func("oc_bytes", [b"\x00raw"]).get() == b"\x00raw!"
    assert original.call_dag("oc_bytes_dag", {"oc_bytes": [b"abc"]}, direct_response=True) == b"abc!"
    assert original.call_dag("oc_bytes_dag", {"oc_bytes": [b"abc"]}).get() == b"abc!"
    # Our clients keep the typed form (a byte string that looks like a pickle stays bytes).
    looks_like_a_pickle = pickle.dumps([1])
    assert session.get_function("oc_bytes")(looks_like_a_pickle).result(timeout=30) == looks_like_a_pickle + b"!"


def test_values_a_function_stores_for_an_original_client_are_readable_there(original, session):
    def store(lib, key):
        lib.put(key, b"stored raw")
        lib.put(key + "/set", {b"a", "b"})
        return "ok"

    original.register(store, "oc_store")
    assert original.exec_func("oc_store", ["oc/stored"]).get() == "ok"
    assert original.get_object("oc/stored") == b"stored raw"
    assert set(original.get_object("oc/stored/set")) == {b"a", "b"}
    assert session.get_object("oc/stored") == b"stored raw"


def test_set_results_reach_original_readers_as_lists(original):
    original.register(lambda _: {b"x", 1}, "oc_set")
    assert set(original.exec_func("oc_set", []).get()) == {1, b"x"}


def test_errors_reach_original_readers_in_the_original_form(original, session):
    def divide(_, x):
        return 1 / x

    original.register(divide, "oc_divide")
    original.register_dag("oc_divide_dag", ["oc_divide"], [])
    for result in (
        original.exec_func("oc_divide", [0]).get(),
        original.call_dag("oc_divide_dag", {"oc_divide": 0}, direct_response=True),
        original.call_dag("oc_divide_dag", {"oc_divide": 0}).get(),
    ):
        text, response = _error_pair(result)
        assert text == "ERROR: ZeroDivisionError: division by zero"
        assert not response.success
        assert response.error == cloudburst_pb2.EXECUTION_ERROR
    # Our clients still get the typed error.
    with pytest.raises(RemoteExecutionError, match="division by zero") as caught:
        session.get_function("oc_divide")(0).result(timeout=30)
    assert caught.value.function == "oc_divide"


def test_an_unknown_function_is_refused_as_the_original_refused_it(original):
    call = cloudburst_pb2.FunctionCall(name="oc_never_registered")
    response = original._generic(original.ports.function_call, call)
    assert not response.success
    assert response.error == cloudburst_pb2.FUNC_NOT_FOUND


def test_without_the_extra_an_array_result_for_an_original_client_fails_naming_it(original):
    pytest.importorskip("numpy")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the original-clients extra is installed here")

    def array(_):
        import numpy

        return numpy.arange(3)

    original.register(array, "oc_array_without_extra")
    text, response = _error_pair(original.exec_func("oc_array_without_extra", []).get())
    assert "cloudburst[original-clients]" in text
    assert response.error == cloudburst_pb2.EXECUTION_ERROR


# -- numpy and pandas values in pyarrow's format: the original-clients extra ------------------------------------


@pytest.mark.original_clients
def test_arrays_and_frames_round_trip_as_arguments_and_results(original):
    import numpy as np
    import pandas as pd

    def double(_, value):
        return value * 2

    original.register(double, "oc_double")
    original.register_dag("oc_double_dag", ["oc_double"], [])
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    for value in (array, frame):
        results = [
            original.exec_func("oc_double", [value]).get(),
            original.call_dag("oc_double_dag", {"oc_double": value}, direct_response=True),
            original.call_dag("oc_double_dag", {"oc_double": value}).get(),
        ]
        for result in results:
            assert type(result) is type(value)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(result, array * 2)
            else:
                pd.testing.assert_frame_equal(result, frame * 2)


@pytest.mark.original_clients
def test_arrays_stored_by_either_side_are_read_by_both(original, session):
    import numpy as np

    array = np.linspace(0, 1, 1000)
    original.put_object("oc/array", array)
    # Read by reference, by lib.get inside a function, and by our own client.
    original.register(lambda _, a: float(a.sum()), "oc_sum")
    assert original.exec_func("oc_sum", [OriginalReference("oc/array", True)]).get() == pytest.approx(500.0)
    original.register(lambda lib, key: float(lib.get(key).sum()), "oc_sum_key")
    assert original.exec_func("oc_sum_key", ["oc/array"]).get() == pytest.approx(500.0)
    np.testing.assert_array_equal(session.get_object("oc/array"), array)
    # A function of an original client's request stores in the original's form.
    original.register(lambda lib, key: lib.put(key, np.ones(4)), "oc_put_array")
    assert original.exec_func("oc_put_array", ["oc/put-array"]).get() is True
    np.testing.assert_array_equal(original.get_object("oc/put-array"), np.ones(4))
    # Our clients get our own form, and read values in either form.
    np.testing.assert_array_equal(session.get_function("oc_double")(array).result(timeout=30), array * 2)
    np.testing.assert_array_equal(session.get_object("oc/put-array"), np.ones(4))


@pytest.mark.original_clients
def test_an_array_inside_another_value_reaches_the_original_reader_pickled(original):
    import numpy as np

    original.register(lambda _: (np.zeros(2), "label"), "oc_tuple_with_array")
    array, label = original.exec_func("oc_tuple_with_array", []).get()
    np.testing.assert_array_equal(array, np.zeros(2))
    assert label == "label"


@pytest.mark.original_clients
def test_original_clients_in_parallel(scheduler):
    import numpy as np

    errors = []

    def client(n):
        try:
            with_client = OriginalClient(scheduler)
            try:
                with_client.register(lambda _, a: a + 1, f"oc_parallel_{n}")
                result = with_client.exec_func(f"oc_parallel_{n}", [np.full(3, n)]).get()
                np.testing.assert_array_equal(result, np.full(3, n + 1))
            finally:
                with_client.close()
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_original_future_is_a_reference_argument(original):
    # What the original serializer does with a future: a DEFAULT pickle of a reference to its result key.
    value = original.serializer.dump(OriginalFuture(original, "some-key"))
    assert value.type == cloudburst_pb2.DEFAULT
    loaded = pickle.loads(value.body)
    assert isinstance(loaded, CloudburstReference)
    assert (loaded.key, loaded.deserialize) == ("some-key", True)
