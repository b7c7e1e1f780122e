import pickle

import cloudburst
from cloudburst.errors import CloudburstError, DecodeError, LatticeTypeMismatch


def test_every_public_error_derives_from_the_root():
    for name in cloudburst.__all__:
        obj = getattr(cloudburst, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, CloudburstError)


def test_errors_survive_pickling_with_their_context():
    error = LatticeTypeMismatch("k", "LWW", "SET", node="tcp://127.0.0.1:6200", request_id="r1")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is LatticeTypeMismatch
    assert (restored.key, restored.stored, restored.given) == ("k", "LWW", "SET")
    assert restored.node == "tcp://127.0.0.1:6200"
    assert str(restored) == str(error)


def test_message_names_context_and_remote_traceback():
    error = DecodeError("KeyRequest", "truncated", function="f", remote_traceback="Traceback ...")
    text = str(error)
    assert "cannot decode KeyRequest: truncated" in text
    assert "function=f" in text
    assert "Remote traceback" in text
