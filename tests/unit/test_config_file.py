"""Config files of the multi-host roles: parsing, conversion, errors, and the command line overriding them."""

import re
import tomllib
from pathlib import Path

import pytest

from cloudburst.cli.config_file import ROLE_OPTIONS, apply_file_options, load_role_options, role_options
from cloudburst.cli.main import build_parser, main, parse_arguments
from cloudburst.errors import ConfigError
from cloudburst.management.policy import ManagementPolicyConfig

#: Options of a role that are not settings of the role: how a supervisor runs it, and the file itself.
NOT_IN_FILES = {"config", "ready_file", "parent_pid", "log_level", "command"}

DEPLOYMENT = """
[kvs]
host = "10.0.0.1"
engine = "redis+cluster://10.0.0.9:6379"

[scheduler]
host = "10.0.0.2"
peers = ["10.0.0.3"]
kvs = "tcp://10.0.0.1:6450"
management = "10.0.0.5"
report_period = 2

[node]
host = "10.0.0.4"
schedulers = ["10.0.0.2", "10.0.0.3"]
kvs = "tcp://10.0.0.1:6450"
executors = 4
work_dir = "logs"

[management]
host = "10.0.0.5"
provisioner = "kubernetes"
k8s_selector = "app=cloudburst-node"
max_nodes = 16
max_utilization = 0.7
"""


@pytest.fixture
def deployment(tmp_path):
    path = tmp_path / "cloudburst.toml"
    path.write_text(DEPLOYMENT)
    return path


def options(text, role, tmp_path=Path("/etc/cloudburst")):
    return role_options(tomllib.loads(text), role, source="test.toml", base=tmp_path)


@pytest.mark.parametrize("role", sorted(ROLE_OPTIONS))
def test_every_option_of_a_role_can_be_set_in_its_table_and_nothing_else(role):
    destinations = set(vars(build_parser().parse_args([role]))) - NOT_IN_FILES
    assert set(ROLE_OPTIONS[role]) == destinations


def test_a_table_is_converted_as_the_command_line_would_parse_it(deployment):
    node = load_role_options(deployment, "node")
    assert node == {
        "host": "10.0.0.4",
        "schedulers": ["10.0.0.2", "10.0.0.3"],
        "kvs": "tcp://10.0.0.1:6450",
        "executors": 4,
        "work_dir": deployment.parent / "logs",
    }
    scheduler = load_role_options(deployment, "scheduler")
    assert scheduler["report_period"] == 2.0
    assert isinstance(scheduler["report_period"], float)


def test_paths_are_relative_to_the_file_and_expand_the_home_directory():
    assert options('[kvs]\ndata_dir = "state"', "kvs")["data_dir"] == Path("/etc/cloudburst/state")
    assert options('[kvs]\ndata_dir = "/var/lib/cb"', "kvs")["data_dir"] == Path("/var/lib/cb")
    assert options('[kvs]\ndata_dir = "~/cb"', "kvs")["data_dir"] == Path.home() / "cb"


def test_a_file_describes_every_role_and_each_reads_its_own_table(deployment):
    hosts = {"kvs": "10.0.0.1", "scheduler": "10.0.0.2", "node": "10.0.0.4", "management": "10.0.0.5"}
    for role, host in hosts.items():
        assert parse_arguments([role, "--config", str(deployment)]).host == host
    management = parse_arguments(["management", "--config", str(deployment)])
    assert (management.provisioner, management.k8s_selector, management.max_nodes) == (
        "kubernetes",
        "app=cloudburst-node",
        16,
    )
    assert management.min_nodes == ManagementPolicyConfig().min_nodes, "what the file leaves out keeps its default"


def test_the_command_line_overrides_the_file(deployment):
    args = parse_arguments(["scheduler", "--config", str(deployment), "--host", "10.0.1.2", "--report-period", "5"])
    assert (args.host, args.report_period, args.peers, args.management) == ("10.0.1.2", 5.0, ["10.0.0.3"], "10.0.0.5")


def test_a_repeatable_option_on_the_command_line_replaces_the_file_list(deployment):
    args = parse_arguments(["scheduler", "--config", str(deployment), "--peer", "10.0.0.7", "--peer", "10.0.0.8"])
    assert args.peers == ["10.0.0.7", "10.0.0.8"]


def test_a_flag_given_with_its_default_value_still_overrides_the_file(deployment):
    args = parse_arguments(["node", "--config", str(deployment), "--executors", "3"])
    assert args.executors == 3


def test_storage_chosen_on_the_command_line_replaces_the_file_storage(deployment):
    args = parse_arguments(["kvs", "--config", str(deployment), "--in-memory"])
    assert (args.in_memory, args.engine) == (True, None)
    kept = parse_arguments(["kvs", "--config", str(deployment), "--threads", "2"])
    assert (kept.engine, kept.threads) == ("redis+cluster://10.0.0.9:6379", 2)


def test_apply_file_options_keeps_what_the_command_line_gave():
    parsed = {"host": "cli", "kvs": "default", "peers": []}
    merged = apply_file_options(parsed, {"host": "file", "kvs": "file", "peers": ["p"]}, {"host"}, "scheduler")
    assert merged == {"host": "cli", "kvs": "file", "peers": ["p"]}


def test_an_unknown_key_names_the_key_the_table_and_the_file():
    with pytest.raises(ConfigError, match=r"unknown key 'hots' in the \[scheduler\] table of test\.toml"):
        options('[scheduler]\nhots = "10.0.0.2"', "scheduler")


def test_an_unknown_table_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown table \[schedular\] in test\.toml"):
        options('[scheduler]\nhost = "a"\n[schedular]\nhost = "b"', "scheduler")


def test_a_missing_table_for_the_role_is_an_error():
    with pytest.raises(ConfigError, match=r"test\.toml has no \[node\] table"):
        options('[scheduler]\nhost = "a"', "node")


def test_a_role_key_at_the_top_level_is_an_error():
    with pytest.raises(ConfigError, match="unknown table"):
        options('host = "a"\n[scheduler]\nhost = "b"', "scheduler")
    with pytest.raises(ConfigError, match=r"must be a table"):
        options('scheduler = "a"', "scheduler")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("executors = true", r"executors in the \[node\] table of test\.toml must be an integer, not a boolean"),
        ("executors = 2.5", "must be an integer, not a number"),
        ('report_period = "5"', "must be a number, not a string"),
        ('schedulers = "10.0.0.2"', "must be a list of strings, not a string"),
        ("schedulers = [1, 2]", "must be a list of strings, not a list"),
        ("host = 10", "must be a string, not an integer"),
        ('work_dir = ""', "must be a path"),
    ],
)
def test_a_value_of_the_wrong_kind_is_an_error(line, message):
    with pytest.raises(ConfigError, match=message):
        options(f"[node]\n{line}", "node")


def test_a_choice_outside_its_values_is_an_error():
    with pytest.raises(ConfigError, match=r"provisioner .* must be one of none, kubernetes, local, not 'aws'"):
        options('[management]\nprovisioner = "aws"', "management")
    with pytest.raises(ConfigError, match="policy"):
        options('[scheduler]\npolicy = "nearest"', "scheduler")


def test_exclusive_options_in_one_table_are_an_error():
    with pytest.raises(ConfigError, match="sets engine and in_memory; only one of data_dir, engine, in_memory"):
        options('[kvs]\nin_memory = true\nengine = "redis://r"', "kvs")
    assert options('[kvs]\nin_memory = false\nengine = "redis://r"', "kvs")["engine"] == "redis://r"


def test_a_role_without_config_files_is_refused():
    with pytest.raises(ConfigError, match="executor takes no config file"):
        options("[executor]", "executor")


def test_an_unreadable_or_malformed_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=re.escape(f"cannot read config file {missing}")):
        load_role_options(missing, "node")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\nhost = ")
    with pytest.raises(ConfigError, match=re.escape(f"config file {broken} is not valid TOML")):
        load_role_options(broken, "node")


def test_the_command_reports_a_bad_file_as_a_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[scheduler]\npolicy = "nearest"\n')
    assert main(["scheduler", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert "policy in the [scheduler] table" in error
    assert "Traceback" not in error


def test_the_example_in_the_deployment_guide_is_a_valid_config_file():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    (example,) = re.findall(r"```toml\n(.*?)```", guide, re.DOTALL)
    for role in ROLE_OPTIONS:
        assert options(example, role)
