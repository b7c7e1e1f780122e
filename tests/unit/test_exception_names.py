"""Which program errors a caller asked to retry: named on the client, matched on the executor."""

import pytest

from cloudburst.errors import CloudburstError, KvsError
from cloudburst.protocol.exception_names import ANY_EXCEPTION, exception_names, matches


class FlakyServiceError(ConnectionError):
    pass


def test_true_means_any_exception_and_false_or_none_none():
    assert exception_names(True) == (ANY_EXCEPTION,)
    assert exception_names(False) == exception_names(None) == ()
    assert matches(ValueError("x"), exception_names(True))
    assert matches(FlakyServiceError(), exception_names(True))
    assert not matches(KeyboardInterrupt(), exception_names(True))
    assert not matches(ValueError("x"), ())


def test_a_named_class_matches_its_subclasses_only():
    names = exception_names([ConnectionError, KvsError])
    assert names == ("builtins.ConnectionError", "cloudburst.errors.KvsError")
    assert matches(FlakyServiceError(), names)
    assert matches(KvsError("down"), names)
    assert not matches(CloudburstError("other"), names)
    assert not matches(ValueError("x"), names)


def test_a_class_defined_in_a_function_is_named_by_its_qualified_name():
    class Local(Exception):
        pass

    (name,) = exception_names([Local])
    assert name.endswith("test_a_class_defined_in_a_function_is_named_by_its_qualified_name.<locals>.Local")
    assert matches(Local(), [name])


@pytest.mark.parametrize("wrong", [[ValueError("an instance")], ["ValueError"], [int]])
def test_anything_but_exception_classes_is_refused(wrong):
    with pytest.raises(TypeError, match="retry_exceptions takes True or exception classes"):
        exception_names(wrong)
