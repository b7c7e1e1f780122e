"""CURVE key files: generating them, loading them, and the clear errors for missing or malformed ones."""

import shutil

import pytest
import zmq

from cloudburst.cli.config_file import role_options
from cloudburst.cli.main import main, parse_arguments
from cloudburst.errors import ConfigError
from cloudburst.transport.security import SecurityConfig, curve_client, curve_server, generate_keys, new_context


@pytest.fixture
def keys(tmp_path):
    """A cluster keypair, a role's and a user's client keypairs, and an allow-list holding both client keys."""
    cluster_public, cluster_secret = generate_keys(tmp_path / "cluster")
    role_public, role_secret = generate_keys(tmp_path / "role", "role")
    user_public, user_secret = generate_keys(tmp_path / "user", "user")
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    shutil.copy(role_public, authorized)
    shutil.copy(user_public, authorized)
    return {
        "cluster_public": cluster_public,
        "cluster_secret": cluster_secret,
        "role_secret": role_secret,
        "user_secret": user_secret,
        "authorized": authorized,
        "dir": tmp_path,
    }


def test_generated_keys_load_for_a_role_and_a_client(keys):
    role = SecurityConfig.for_role(keys["cluster_secret"], keys["role_secret"], keys["authorized"])
    client = SecurityConfig.for_client(keys["cluster_public"], keys["user_secret"])
    assert role.is_role
    assert not client.is_role
    assert role.server_public == client.server_public
    assert client.client_public in role.authorized
    assert role.client_public in role.authorized
    assert keys["cluster_secret"].stat().st_mode & 0o077 == 0
    assert role.role_arguments()[:2] == ["--curve-server-secret", str(keys["cluster_secret"])]


def test_generating_never_overwrites(keys):
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_keys(keys["dir"] / "cluster")


def test_a_missing_key_file_is_a_config_error(keys):
    with pytest.raises(ConfigError, match="does not exist"):
        SecurityConfig.for_client(keys["dir"] / "nowhere.key", keys["user_secret"])


def test_a_file_that_is_not_a_certificate_is_a_config_error(keys):
    garbage = keys["dir"] / "garbage.key"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="not a ZeroMQ certificate"):
        SecurityConfig.for_client(keys["cluster_public"], garbage)


def test_a_malformed_key_is_a_config_error(keys):
    short = keys["dir"] / "short.key"
    short.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(ConfigError, match="malformed key"):
        SecurityConfig.for_client(short, keys["user_secret"])


def test_a_role_needs_the_cluster_secret_not_the_public_file(keys):
    with pytest.raises(ConfigError, match="no secret key"):
        SecurityConfig.for_role(keys["cluster_public"], keys["role_secret"], keys["authorized"])


def test_an_empty_or_missing_allow_list_is_a_config_error(keys):
    empty = keys["dir"] / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        SecurityConfig.for_role(keys["cluster_secret"], keys["role_secret"], empty)
    with pytest.raises(ConfigError, match="does not exist"):
        SecurityConfig.for_role(keys["cluster_secret"], keys["role_secret"], keys["dir"] / "absent")


def test_a_role_whose_own_client_key_is_not_authorized_is_refused(keys):
    (keys["authorized"] / "role.key").unlink()
    with pytest.raises(ConfigError, match="not among the authorized keys"):
        SecurityConfig.for_role(keys["cluster_secret"], keys["role_secret"], keys["authorized"])


def test_a_client_cannot_make_a_curve_server(keys):
    client = SecurityConfig.for_client(keys["cluster_public"], keys["user_secret"])
    context = zmq.Context()
    socket = context.socket(zmq.PULL)
    try:
        with pytest.raises(ConfigError, match="cluster's secret key"):
            curve_server(socket, client)
        curve_client(socket, None)  # no keys: left as it is
    finally:
        socket.close()
        context.term()


def test_a_role_context_runs_a_handler_and_terminates(keys):
    role = SecurityConfig.for_role(keys["cluster_secret"], keys["role_secret"], keys["authorized"])
    context = new_context(role)
    assert context.denied_handshakes == 0
    context.term()
    plain = new_context(None)
    assert not hasattr(plain, "denied_handshakes")
    plain.term()


def test_roles_take_curve_flags_and_config_file_keys(keys, tmp_path):
    args = parse_arguments(["scheduler", "--curve-server-secret", str(keys["cluster_secret"])])
    assert args.curve_server_secret == keys["cluster_secret"]
    document = {"kvs": {"curve_server_secret": "k/c.key_secret", "curve_authorized": "auth"}}
    options = role_options(document, "kvs", source="deploy.toml", base=tmp_path)
    assert options == {"curve_server_secret": tmp_path / "k/c.key_secret", "curve_authorized": tmp_path / "auth"}


def test_a_role_given_only_some_curve_flags_fails_clearly(keys, capsys):
    assert main(["kvs", "--in-memory", "--curve-server-secret", str(keys["cluster_secret"])]) == 1
    assert "needs all of" in capsys.readouterr().err


def test_keys_generate_command(tmp_path, capsys):
    assert main(["keys", "generate", str(tmp_path / "k"), "--name", "alice"]) == 0
    assert (tmp_path / "k" / "alice.key").is_file()
    assert (tmp_path / "k" / "alice.key_secret").is_file()
    assert "alice.key_secret" in capsys.readouterr().out
    assert main(["keys", "generate", str(tmp_path / "k"), "--name", "alice"]) == 1
