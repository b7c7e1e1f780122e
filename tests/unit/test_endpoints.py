import pytest

from cloudburst.errors import TransportError
from cloudburst.retry import RetryPolicy
from cloudburst.transport.endpoints import ReplyPolicy, is_loopback, parse_endpoint


def test_parse_endpoint():
    endpoint = parse_endpoint("tcp://127.0.0.1:6200")
    assert (endpoint.host, endpoint.port) == ("127.0.0.1", 6200)
    assert str(endpoint) == "tcp://127.0.0.1:6200"


@pytest.mark.parametrize(
    "address", ["", "127.0.0.1:1", "tcp://", "tcp://host", "tcp://h:0", "tcp://h:70000", "ipc://x"]
)
def test_malformed_endpoints_are_refused(address):
    with pytest.raises(TransportError, match="tcp://host:port"):
        parse_endpoint(address)


def test_loopback_detection():
    assert all(is_loopback(host) for host in ("127.0.0.5", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("10.0.0.1", "example.com"))


def test_loopback_server_only_answers_loopback():
    policy = ReplyPolicy.for_bind_host("127.0.0.1")
    assert policy.check("tcp://127.0.0.3:9000") == "tcp://127.0.0.3:9000"
    with pytest.raises(TransportError, match="loopback"):
        policy.check("tcp://93.184.216.34:80")
    assert ReplyPolicy.for_bind_host("0.0.0.0").check("tcp://10.1.2.3:9000") == "tcp://10.1.2.3:9000"


def test_backoff_grows_and_is_capped():
    policy = RetryPolicy(min_backoff=0.01, max_backoff=0.05, multiplier=2)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [0.01, 0.02, 0.04, 0.05]
