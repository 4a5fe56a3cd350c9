"""
Configuration: YAML + .env + environment + command line, merged, validated
once, every error located.
"""

from __future__ import annotations

import os
import re

import pytest
from twisted.python import usage

from orchestrator.cli.main import main as cliMain
from orchestrator.config.load import loadConfig, parseBoolean
from orchestrator.errors import ConfigError
from orchestrator.tap import Options
from tests import harness
from tests.fakes import EXECUTABLE, writeConfig, makeOrchestrator
from tests.hostile._configs import BILLION_LAUGHS

MINIMAL = """\
processes:
  backend:
    command: ["{python}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
"""


def load(text=MINIMAL, environ=None, dotenv=None, cli=None, tmp_path=None, **kwargs):
    directory = str(tmp_path) if tmp_path else None
    path = writeConfig(text, directory)
    envFile = os.devnull
    if dotenv is not None:
        envFile = os.path.join(os.path.dirname(path), ".env")
        with open(envFile, "w") as f:
            f.write(dotenv)
    return loadConfig(path, envFile=envFile, environ=environ or {}, cliOverrides=cli,
                      entryPoints=False, **kwargs).config


def problems(text=MINIMAL, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, **kwargs)
    return list(caught.value.problems)


# -- defaults and types ----------------------------------------------------------

def test_schema_defaults_fill_every_section():
    """Keys left out take the schema defaults the README documents."""
    config = load()
    backend = config.processes["backend"]
    assert config.enabled is True
    assert config.admin.listen == "tcp:8000:interface=127.0.0.1"
    assert config.admin.default_process == "backend"
    assert config.logging.level == "info" and config.logging.format == "text"
    assert backend.health.interval == 30 and backend.health.timeout == 5
    assert backend.health.failure_threshold == 3 and backend.health.probe == "http"
    assert backend.health.options["path"] == "/health"
    assert backend.restart.policy == "backoff" and backend.restart.auto is True
    assert backend.restart.max_attempts == 3 and backend.restart.delay == 2
    assert dict(backend.restart.options["backoff"]) == {"initial": 0.1, "factor": 2, "max": 30, "jitter": 0.1}
    assert backend.stop.signal == "TERM" and backend.stop.timeout == 10
    assert [n.type for n in config.notifiers] == ["log", "prometheus"]
    assert config.sources["processes.backend.health.interval"] == "default"
    assert config.sources["processes.backend.url"] == "yaml"


def test_probe_defaults_to_none_without_url():
    """A process without a url is not probed unless told otherwise."""
    config = load('processes:\n  bot:\n    command: ["{python}"]\n')
    assert config.processes["bot"].health.probe == "none"


def test_restart_on_unhealthy_follows_auto_restart():
    """restart_on_unhealthy defaults to the value of restart.auto."""
    config = load(MINIMAL, environ={"AUTO_RESTART": "false"})
    assert config.processes["backend"].health.restart_on_unhealthy is False


def test_config_is_immutable():
    """The configuration object cannot be changed after validation."""
    config = load()
    with pytest.raises(Exception):
        config.processes["backend"].health.interval = 1
    with pytest.raises(TypeError):
        config.processes["new"] = None


def test_relative_paths_resolve_against_config_folder(tmp_path):
    """Relative paths (command, working_dir, log files) resolve against the config file's folder."""
    (tmp_path / "bin").mkdir()
    server = tmp_path / "bin" / "server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    (tmp_path / "work").mkdir()
    config = load("""\
        processes:
          backend:
            command: ["bin/server"]
            working_dir: work
            log: {file: logs/backend.log}
        logging: {file: orch.log}
        """, tmp_path=tmp_path)
    backend = config.processes["backend"]
    assert backend.command[0] == str(server)
    assert backend.working_dir == str(tmp_path / "work")
    assert backend.output.file == str(tmp_path / "logs" / "backend.log")
    assert config.logging.file == str(tmp_path / "orch.log")


def test_working_dir_defaults_to_config_folder(tmp_path):
    """Without working_dir a child runs in the config file's folder."""
    config = load(MINIMAL, tmp_path=tmp_path)
    assert config.processes["backend"].working_dir == str(tmp_path)


@pytest.mark.parametrize("word,value", [
    ("true", True), ("1", True), ("yes", True), ("on", True), ("TRUE", True),
    ("false", False), ("0", False), ("no", False), ("off", False), ("Off", False),
])
def test_booleans_accept_common_spellings(word, value):
    """Booleans from the environment accept true/false/1/0/yes/no/on/off."""
    assert parseBoolean(word) is value
    assert load(MINIMAL, environ={"AUTO_RESTART": word}).processes["backend"].restart.auto is value


# -- precedence ---------------------------------------------------------------------

def test_precedence_cli_env_dotenv_yaml_default():
    """Each layer beats the one below: command line > environment > .env > YAML > default."""
    text = MINIMAL + 'admin: {listen: "tcp:1001:interface=127.0.0.1"}\n'
    assert load(text).admin.listen == "tcp:1001:interface=127.0.0.1"
    dotenv = "ORCHESTRATOR__ADMIN__LISTEN=tcp:1002:interface=127.0.0.1\n"
    config = load(text, dotenv=dotenv)
    assert config.admin.listen == "tcp:1002:interface=127.0.0.1"
    assert config.sources["admin.listen"] == ".env"
    environ = {"ORCHESTRATOR__ADMIN__LISTEN": "tcp:1003:interface=127.0.0.1"}
    config = load(text, dotenv=dotenv, environ=environ)
    assert config.admin.listen == "tcp:1003:interface=127.0.0.1"
    assert config.sources["admin.listen"] == "env"
    config = load(text, dotenv=dotenv, environ=environ,
                  cli={("admin", "listen"): "tcp:1004:interface=127.0.0.1"})
    assert config.admin.listen == "tcp:1004:interface=127.0.0.1"
    assert config.sources["admin.listen"] == "cli"
    assert load().sources["admin.listen"] == "default"


def test_seed_variable_precedence_env_over_dotenv_over_yaml():
    """A seed variable in the environment beats the same one in .env, which beats YAML."""
    text = MINIMAL.replace('    url: "http://127.0.0.1:3000"\n',
                           '    url: "http://127.0.0.1:3000"\n    health: {interval: 10}\n')
    assert load(text).processes["backend"].health.interval == 10
    assert load(text, dotenv="HEALTH_CHECK_INTERVAL=20\n").processes["backend"].health.interval == 20
    config = load(text, dotenv="HEALTH_CHECK_INTERVAL=20\n", environ={"HEALTH_CHECK_INTERVAL": "30"})
    assert config.processes["backend"].health.interval == 30


def test_every_seed_variable_maps_to_its_path(tmp_path):
    """The seed's flat variables set the documented paths of the default process."""
    (tmp_path / "srv").mkdir()
    environ = {
        "ORCHESTRATOR_ENABLED": "true",
        "GO_BACKEND_BINARY": f"{EXECUTABLE} -m http.server",
        "GO_BACKEND_URL": "http://127.0.0.1:3999",
        "BACKEND_WORKING_DIR": "srv",
        "HEALTH_CHECK_INTERVAL": "12.5",
        "HEALTH_CHECK_TIMEOUT": "2",
        "AUTO_RESTART": "no",
        "MAX_RESTART_ATTEMPTS": "7",
        "ORCHESTRATOR_ADMIN_TOKEN": "s3cret",
    }
    config = load("processes: {}\n", environ=environ, tmp_path=tmp_path)
    backend = config.processes["backend"]
    assert config.enabled is True
    assert backend.command == (EXECUTABLE, "-m", "http.server")
    assert backend.url == "http://127.0.0.1:3999"
    assert backend.working_dir == str(tmp_path / "srv")
    assert backend.health.interval == 12.5 and backend.health.timeout == 2.0
    assert backend.restart.auto is False and backend.restart.max_attempts == 7
    assert config.admin.token == "s3cret"
    assert config.sources["processes.backend.restart.max_attempts"] == "env"


def test_orchestrator_enabled_false_is_monitor_only():
    """ORCHESTRATOR_ENABLED=false selects monitor-only mode, where no command is needed."""
    config = load('processes:\n  backend: {url: "http://10.0.0.5:8080"}\n',
                  environ={"ORCHESTRATOR_ENABLED": "false"})
    assert config.enabled is False
    assert config.processes["backend"].command == ()


def test_seed_variables_follow_admin_default_process():
    """The seed's variables act on admin.default_process when it is renamed."""
    text = 'admin: {default_process: api}\nprocesses:\n  api: {command: ["{python}"]}\n'
    config = load(text, environ={"MAX_RESTART_ATTEMPTS": "9"})
    assert config.processes["api"].restart.max_attempts == 9


def test_generic_form_sets_any_path():
    """ORCHESTRATOR__A__B=value sets a.b, converted by the schema's type, plugin options included."""
    environ = {
        "ORCHESTRATOR__PROCESSES__BACKEND__HEALTH__FAILURE_THRESHOLD": "5",
        "ORCHESTRATOR__PROCESSES__BACKEND__HEALTH__PATH": "/ready",
        "ORCHESTRATOR__PROCESSES__BACKEND__RESTART__BACKOFF__MAX": "12",
        "ORCHESTRATOR__PROCESSES__BACKEND__ENV__PORT": "3001",
        "ORCHESTRATOR__LOGGING__FORMAT": "json",
        "ORCHESTRATOR__PROCESSES__BACKEND__RESTART__SUCCESS_EXIT_CODES": "[0, 143]",
    }
    config = load(MINIMAL, environ=environ)
    backend = config.processes["backend"]
    assert backend.health.failure_threshold == 5
    assert backend.health.options["path"] == "/ready"
    assert backend.restart.options["backoff"]["max"] == 12.0
    assert backend.env["PORT"] == "3001"
    assert config.logging.format == "json"
    assert backend.restart.success_exit_codes == (0, 143)


def test_generic_form_matches_process_names_case_insensitively():
    """Upper-case variable names reach a process whose name has capitals."""
    text = 'processes:\n  Backend: {command: ["{python}"]}\n'
    config = load(text, environ={"ORCHESTRATOR__PROCESSES__BACKEND__STOP__TIMEOUT": "3"})
    assert config.processes["Backend"].stop.timeout == 3


def test_dotenv_values_stay_out_of_the_environment(tmp_path):
    """.env values configure the orchestrator but are only handed to a child by name."""
    config = load(MINIMAL, dotenv="API_KEY=abc\nHEALTH_CHECK_TIMEOUT=3\n", tmp_path=tmp_path)
    assert "API_KEY" not in os.environ
    assert config.dotenv["API_KEY"] == "abc"
    assert config.processes["backend"].env_from_dotenv == ()


# -- errors, each located -------------------------------------------------------------

def test_yaml_syntax_error_located(tmp_path):
    """A YAML syntax error names the file, line and column."""
    path = writeConfig("processes:\n  backend:\n    command: [a, b\n", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)
    (message,) = caught.value.problems
    assert message.startswith(f"{path}:4:1: YAML syntax error: ")
    assert "expected ',' or ']'" in message


def test_duplicate_key_is_an_error(tmp_path):
    """A key given twice is an error, not a silent override."""
    path = writeConfig("admin: {}\nadmin: {}\n", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)
    assert caught.value.problems == (f"{path}:2:1: YAML syntax error: duplicate key 'admin'",)


def test_unknown_key_suggests_the_right_one(tmp_path):
    """A typo names its location and the key it probably meant."""
    path = writeConfig(MINIMAL + "    helth: {interval: 5}\n", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)
    assert caught.value.problems == (
        f"{path}:5:5: processes.backend.helth: unknown key 'helth' (did you mean 'health'?)",)


def test_unknown_plugin_option_is_reported_like_a_core_key():
    """A typo in a kind's own option (the http probe's path) is caught by the merged schema."""
    text = MINIMAL + "    health: {pth: /x}\n"
    (message,) = problems(text)
    assert message.endswith(":5:14: processes.backend.health.pth: unknown key 'pth' (did you mean 'path'?)")


def test_wrong_type_located():
    """A value of the wrong type names its path and the expected type."""
    (message,) = problems(MINIMAL + "    restart: {max_attempts: three}\n")
    assert message.endswith(":5:29: processes.backend.restart.max_attempts: 'three' is not of type 'integer'")


def test_out_of_range_number_located():
    """An out-of-range number reads like DESIGN.md's example."""
    (message,) = problems(MINIMAL + "    health: {interval: -1}\n")
    assert message.endswith(
        ":5:24: processes.backend.health.interval: -1 is less than the minimum of 0.1")


@pytest.mark.parametrize("snippet,expected", [
    ("    health: {probe: htp}\n",
     "processes.backend.health.probe: unknown probe kind 'htp' (known: exec, http, tcp, none)"),
    ("    restart: {policy: sometimes}\n",
     "processes.backend.restart.policy: unknown restart policy 'sometimes' (known: always, backoff, never, on-failure)"),
    ("notifiers: [{type: slack}]\n",
     "notifiers[0].type: unknown notifier 'slack' (known: log, prometheus, webhook)"),
])
def test_unknown_kind_names_the_known_ones(snippet, expected):
    """An unknown probe, policy or notifier name lists the registered ones."""
    (message,) = problems(MINIMAL + snippet)
    assert message.endswith(expected)


def test_bad_integer_in_environment():
    """MAX_RESTART_ATTEMPTS=abc is reported with the variable's name."""
    assert problems(environ={"MAX_RESTART_ATTEMPTS": "abc"}) == [
        "env MAX_RESTART_ATTEMPTS: 'abc' is not an integer"]


def test_bad_boolean_in_dotenv_names_file_and_line(tmp_path):
    """A bad value in .env names the file, line and variable."""
    found = problems(dotenv="# comment\nAUTO_RESTART=maybe\n", tmp_path=tmp_path)
    assert found == [f"{tmp_path}/.env:2: AUTO_RESTART: 'maybe' is not a boolean "
                     "(true/false/1/0/yes/no/on/off)"]


def test_environment_value_out_of_range_names_variable():
    """A schema error on a value from the environment names the variable."""
    assert problems(environ={"HEALTH_CHECK_INTERVAL": "-1"}) == [
        "env HEALTH_CHECK_INTERVAL: processes.backend.health.interval: -1.0 is less than the minimum of 0.1"]


def test_unknown_generic_path():
    """ORCHESTRATOR__ with a path the schema lacks is an error, not ignored."""
    assert problems(environ={"ORCHESTRATOR__PROCESSES__BACKEND__HELTH__INTERVAL": "5"}) == [
        "env ORCHESTRATOR__PROCESSES__BACKEND__HELTH__INTERVAL: unknown configuration path "
        "processes.backend.helth.interval"]


def test_missing_command_for_managed_process():
    """A managed process without a command is an error at its location."""
    (message,) = problems('processes:\n  backend:\n    url: "http://127.0.0.1:3000"\n')
    assert message.endswith(":3:5: processes.backend: a managed process needs a command "
                            "(or set orchestrator.enabled: false)")


def test_command_not_found_names_the_path_tried(tmp_path):
    """A missing executable is reported with the absolute path that was tried."""
    found = problems('processes:\n  backend: {command: ["../bin/server"]}\n', tmp_path=tmp_path)
    tried = os.path.normpath(os.path.join(str(tmp_path), "../bin/server"))
    assert found == [f"{tmp_path}/orchestrator.yaml:2:23: processes.backend.command[0]: "
                     f"command not found: {tried}"]


def test_command_not_executable(tmp_path):
    """A file without execute permission is reported as not executable."""
    script = tmp_path / "server"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    (message,) = problems('processes:\n  backend: {command: ["./server"]}\n', tmp_path=tmp_path)
    assert message.endswith(f"processes.backend.command[0]: command is not executable: {script}")


def test_command_not_on_path():
    """A bare command name is looked up on PATH, and its absence reported."""
    (message,) = problems('processes:\n  backend: {command: ["no-such-binary-xyz"]}\n')
    assert "processes.backend.command[0]: command not found on PATH: 'no-such-binary-xyz'" in message


def test_url_checked():
    """URLs must be http(s) with a host (jsonschema does not check format: uri by default)."""
    (message,) = problems(MINIMAL.replace("http://127.0.0.1:3000", "127.0.0.1:3000"))
    assert message.endswith("processes.backend.url: '127.0.0.1:3000' is not an http:// or https:// URL")
    (message,) = problems(MINIMAL + 'notifiers: [{type: webhook, url: "https://"}]\n')
    assert message.endswith("notifiers[0].url: 'https://' has no host")


def test_dependency_cycle_rejected():
    """depends_on cycles and unknown names are configuration errors."""
    text = """\
        processes:
          a: {command: ["{python}"], depends_on: [b]}
          b: {command: ["{python}"], depends_on: [a]}
          c: {command: ["{python}"], depends_on: [nope]}
        """
    found = problems(text)
    assert any(m.endswith("processes.c.depends_on[0]: unknown process 'nope'") for m in found)
    assert any("dependency cycle: a -> b -> a" in m for m in found)


def test_non_loopback_listener_needs_token():
    """Listening off loopback without a token is refused unless allow_insecure."""
    text = MINIMAL + 'admin: {listen: "tcp:8000"}\n'
    (message,) = problems(text)
    assert message.endswith("admin.listen: listening on all interfaces needs admin.token "
                            "(or env ORCHESTRATOR_ADMIN_TOKEN); set admin.allow_insecure: true to accept the risk")
    assert load(text, environ={"ORCHESTRATOR_ADMIN_TOKEN": "t"}).admin.token == "t"
    assert load(MINIMAL + 'admin: {listen: "tcp:8000", allow_insecure: true}\n').admin.token is None
    assert load(MINIMAL + 'admin: {listen: "unix:/tmp/x.sock:mode=600"}\n').admin.listen.startswith("unix:")


def test_bad_endpoint_string():
    """An endpoint string Twisted cannot parse is a config error."""
    (message,) = problems(MINIMAL + 'admin: {listen: "carrier-pigeon:1"}\n')
    assert "admin.listen: not a valid Twisted endpoint string 'carrier-pigeon:1'" in message


def test_token_file(tmp_path):
    """admin.token_file is read relative to the config file; its token never shows in the document."""
    (tmp_path / "token").write_text("abc123\n")
    (tmp_path / "token").chmod(0o600)
    config = load(MINIMAL + "admin: {token_file: token}\n", tmp_path=tmp_path)
    assert config.admin.token == "abc123"
    assert "abc123" not in repr(config) and "abc123" not in str(dict(config.document["admin"]))


def test_all_errors_reported_at_once():
    """Every problem is reported together, in file order, environment ones after."""
    text = MINIMAL + "    health: {interval: -1, probe: nope}\n    restart: {max_attempts: x}\n"
    found = problems(text, environ={"AUTO_RESTART": "perhaps"})
    assert len(found) == 4
    assert [m.split(": ", 1)[0].rsplit(":", 2)[-2] for m in found[:3]] == ["5", "5", "6"]
    assert found[3].startswith("env AUTO_RESTART:")


def test_missing_file_is_reported(tmp_path):
    """A configuration file that does not exist is a clear error."""
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(tmp_path / "nope.yaml"), envFile=os.devnull, environ={})
    assert caught.value.problems == (f"{tmp_path}/nope.yaml: cannot read configuration: No such file or directory",)


def test_missing_env_file_is_reported():
    """An --env-file that does not exist is a clear error."""
    with pytest.raises(ConfigError) as caught:
        loadConfig(writeConfig(MINIMAL), envFile="/nonexistent/.env", environ={}, entryPoints=False)
    assert caught.value.problems == ("/nonexistent/.env: no such .env file",)


# -- the command-line surfaces ----------------------------------------------------

def test_twistd_options_reject_bad_config_before_running(tmp_path, capsys):
    """twistd orchestrator's options turn a bad config into exit code 2 with every problem on stderr."""
    path = writeConfig(MINIMAL + "    helth: {}\n", str(tmp_path))
    options = Options()
    options.leaveOutTLS = False  # this test process keeps its TLS
    with pytest.raises(SystemExit) as caught:
        options.parseOptions(["--config", path, "--env-file", os.devnull])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("twistd orchestrator: invalid configuration: ")
    assert "processes.backend.helth: unknown key 'helth'" in err
    assert err.count("\n") == 1


def test_twistd_listen_option_overrides(tmp_path):
    """--listen beats the YAML and the environment."""
    path = writeConfig(MINIMAL, str(tmp_path))
    options = Options()
    options.leaveOutTLS = False  # this test process keeps its TLS
    options.parseOptions(["--config", path, "--env-file", os.devnull, "--listen", "tcp:9999:interface=127.0.0.1"])
    assert options.loaded.config.admin.listen == "tcp:9999:interface=127.0.0.1"


def test_check_config_prints_values_with_sources(tmp_path, capsys, monkeypatch):
    """orchestrator check-config prints each effective value with where it came from, exit 0."""
    monkeypatch.setenv("HEALTH_CHECK_TIMEOUT", "4")
    path = writeConfig(MINIMAL, str(tmp_path))
    assert cliMain(["check-config", path, "--env-file", os.devnull]) == 0
    out = capsys.readouterr().out
    assert "OK (1 process(es), managing)" in out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if "=" in line}
    assert lines["processes.backend.health.timeout"].endswith("= 4.0  (env)")
    assert lines["processes.backend.url"].endswith('"http://127.0.0.1:3000"  (yaml)')
    assert lines["processes.backend.health.interval"].endswith("= 30  (default)")


def test_check_config_fails_with_every_error(tmp_path, capsys):
    """orchestrator check-config exits 1 and lists every problem on stderr."""
    path = writeConfig(MINIMAL + "    health: {interval: 0}\n    helth: {}\n", str(tmp_path))
    assert cliMain(["check-config", path, "--env-file", os.devnull]) == 1
    err = capsys.readouterr().err
    assert "invalid configuration (2 problem(s))" in err
    assert "processes.backend.health.interval: 0 is less than the minimum of 0.1" in err


def test_check_config_reports_a_malformed_webhook_secret(tmp_path, capsys, monkeypatch):
    """check-config refuses a whsec_ secret that is not base64, as a start and a reload would."""
    monkeypatch.setenv("HOOK_SECRET", "whsec_not*base64!")
    path = writeConfig(MINIMAL + 'notifiers: [{type: webhook, url: "https://hooks.example", '
                                 'secret_env: HOOK_SECRET}]\n', str(tmp_path))
    assert cliMain(["check-config", path, "--env-file", os.devnull]) == 1
    err = capsys.readouterr().err
    assert "notifiers[0].secret_env: HOOK_SECRET: the whsec_ secret is not valid base64" in err
    assert "not*base64" not in err


def test_default_config_is_valid():
    """The embedded default conf/orchestrator.yaml validates as shipped."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = loadConfig(os.path.join(root, "conf", "orchestrator.yaml"), envFile=os.devnull,
                        environ={}, entryPoints=False).config
    assert config.processes["backend"].command[0] == os.path.join(root, "examples", "backend", "demo_backend.py")


@pytest.mark.parametrize("variable", ["ORCHESTRATOR_ADMIN_TOKEN", "ORCHESTRATOR__ADMIN__TOKEN"])
def test_token_variables_never_reach_children(variable):
    """Whichever variable sets the admin token, a child's environment never contains it."""
    from orchestrator.supervision.process import childEnvironment

    environ = {variable: "s3cret", "PATH": "/usr/bin", "HOME": "/root"}
    config = load(MINIMAL, environ=environ)
    assert config.admin.token == "s3cret"
    env = childEnvironment(config.processes["backend"], environ, config.dotenv, set(config.secret_env))
    assert variable not in env and "s3cret" not in env.values()
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/root"


def test_webhook_secret_variable_never_reaches_children():
    """The variable named by a webhook's secret_env is not inherited by children."""
    from orchestrator.supervision.process import childEnvironment

    environ = {"WEBHOOK_SECRET": "whsec_c2VjcmV0LWtleS1ieXRlcw==", "PATH": "/usr/bin"}
    config = load(MINIMAL + 'notifiers: [{type: webhook, url: "https://hooks.example", secret_env: WEBHOOK_SECRET}]\n',
                  environ=environ)
    env = childEnvironment(config.processes["backend"], environ, config.dotenv, set(config.secret_env))
    assert "WEBHOOK_SECRET" not in env


# -- robustness: odd input is a located error, never a traceback -------------------

@pytest.mark.parametrize("snippet,expected", [
    ("    health: {interval: .nan}\n", "processes.backend.health.interval: nan is not a finite number"),
    ("    stop: {timeout: .inf}\n", "processes.backend.stop.timeout: inf is not a finite number"),
])
def test_non_finite_numbers_rejected(snippet, expected):
    """NaN and infinity are refused (a NaN interval would probe in a busy loop)."""
    (message,) = problems(MINIMAL + snippet)
    assert message.endswith(expected)


def test_non_finite_number_from_environment():
    """A NaN from the environment is refused with the variable's name."""
    assert problems(environ={"HEALTH_CHECK_INTERVAL": "nan"}) == [
        "env HEALTH_CHECK_INTERVAL: 'nan' is not a finite number"]


def test_empty_token_variable_is_an_error():
    """An empty ORCHESTRATOR_ADMIN_TOKEN never silently removes the configured token."""
    found = problems(MINIMAL + "admin: {token: yaml-secret}\n", environ={"ORCHESTRATOR_ADMIN_TOKEN": ""})
    assert found == ["env ORCHESTRATOR_ADMIN_TOKEN: empty token (unset the variable to keep the configured one)"]


def test_plugins_from_environment_are_loaded():
    """ORCHESTRATOR__PLUGINS loads its modules like the YAML list does."""
    found = problems(environ={"ORCHESTRATOR__PLUGINS": "no_such_module_xyz"})
    assert any("cannot import 'no_such_module_xyz'" in m for m in found)
    config = load(MINIMAL + "notifiers: [{type: broken}]\n",
                  environ={"ORCHESTRATOR__PLUGINS": "tests.plugin_samples.broken_notifier"})
    assert [n.type for n in config.notifiers] == ["broken"]


def test_default_process_from_environment_steers_seed_variables():
    """The seed's variables follow admin.default_process even when the environment sets it."""
    text = 'processes:\n  web: {command: ["{python}"]}\n'
    config = load(text, environ={"ORCHESTRATOR__ADMIN__DEFAULT_PROCESS": "web",
                                 "GO_BACKEND_URL": "http://127.0.0.1:3999"})
    assert config.processes["web"].url == "http://127.0.0.1:3999"
    assert "backend" not in config.processes


def test_error_on_a_process_made_by_a_variable_names_the_variable():
    """A process that only a seed variable created is located at that variable."""
    assert problems("processes: {}\n", environ={"GO_BACKEND_URL": "http://127.0.0.1:1"}) == [
        "env GO_BACKEND_URL: processes.backend: a managed process needs a command "
        "(or set orchestrator.enabled: false)"]


def test_http_probe_needs_a_url():
    """An http probe on a process without a url is a located error, not a probe of "/health"."""
    (message,) = problems('processes:\n  bot: {command: ["{python}"], health: {probe: http}}\n')
    assert message.endswith("processes.bot.health.probe: the http probe needs the process's url")


def test_log_file_that_cannot_be_created(tmp_path):
    """A log file whose folder cannot be created is reported at start, with its location."""
    (tmp_path / "plain").write_text("a file, not a folder")
    found = problems(MINIMAL + "    log: {file: plain/backend.log}\nlogging: {file: plain/o.log}\n",
                     tmp_path=tmp_path)
    assert any(m.endswith(f"processes.backend.log.file: cannot create {tmp_path}/plain/backend.log: "
                          f"{tmp_path}/plain is not a writable folder") for m in found), found
    assert any("logging.file: cannot create" in m for m in found), found


def test_non_utf8_file(tmp_path):
    """A configuration that is not UTF-8 is a clear error."""
    path = tmp_path / "o.yaml"
    path.write_bytes(b"processes:\n  a: {command: [\"\xff\"]}\n")
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(path), envFile=os.devnull, environ={}, entryPoints=False)
    assert caught.value.problems == (f"{path}:2:18: not UTF-8 text (byte 0xff at offset 28)",)


@pytest.mark.parametrize("text", [
    'processes:\n  a: {command: ["{python}"], depends_on: [[a]]}\n',
    'orchestrator: {enabled: false}\nprocesses:\n  a: {health: 5}\n',
    'admin: {default_process: [a]}\nprocesses: {}\n',
    'processes: [1, 2]\n',
    'processes:\n  a: {command: ["{python}"], restart: null}\n',
    'notifiers: {}\n',
    'processes:\n  a: {command: "{python}"}\n',
    'logging: 7\n',
])
def test_wrong_shapes_are_located_errors(text):
    """Values of the wrong shape anywhere give located errors, never an exception."""
    found = problems(text, environ={"GO_BACKEND_URL": "http://127.0.0.1:1"})
    assert found and all(":" in m for m in found)


# -- bounds: hostile files are refused quickly, located, never a traceback ----------



def fileProblems(path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(path), envFile=os.devnull, environ={}, entryPoints=False)
    return list(caught.value.problems)


def test_alias_bomb_refused_at_the_alias(tmp_path):
    """A "billion laughs" file stops at the node budget, located at the alias that blew it."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    assert fileProblems(path) == [f"{path}:6:8: YAML: aliases expand past 100000 nodes"]
    assert len(BILLION_LAUGHS) < 600


def test_recursive_alias_refused(tmp_path):
    """An alias inside its own anchor is refused by the depth bound, not a RecursionError."""
    path = tmp_path / "o.yaml"
    path.write_text("a: &a [*a]\n")
    (message,) = fileProblems(path)
    assert message.startswith(f"{path}:1:8: YAML: nesting deeper than 64 levels")


def test_deep_nesting_refused(tmp_path):
    """Nesting past 64 levels is a located error, before the composer recurses further."""
    path = tmp_path / "o.yaml"
    path.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    (message,) = fileProblems(path)
    # Our bound, or libyaml's own (1000 levels) when its parser reads ahead.
    assert re.match(rf"{re.escape(str(path))}:1:\d+: YAML( syntax error)?: .*nesting", message), message
    path.write_text("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 100)))
    assert fileProblems(path) == [f"{path}:64:127: YAML: nesting deeper than 64 levels"]


def test_node_budget_without_aliases(tmp_path):
    """A flat document of more nodes than the budget is refused where the budget ran out."""
    path = tmp_path / "o.yaml"
    path.write_text("- 1\n" * 100_001)
    assert fileProblems(path) == [f"{path}:100000:3: YAML: more than 100000 nodes"]


def test_oversize_file_refused_unread(tmp_path):
    """A 50 MB file is refused by its size, before anything reads or parses it."""
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: the test writes nothing
    assert fileProblems(path) == [
        f"{path}: configuration file is larger than the limit of 1048576 bytes"]


def test_fifo_refused_without_blocking(tmp_path):
    """A FIFO as configuration is refused at once instead of blocking on open or read."""
    path = tmp_path / "o.yaml"
    os.mkfifo(path)
    assert fileProblems(path) == [f"{path}: cannot read configuration: not a regular file"]


@pytest.mark.parametrize("text", ["", "\n\n", "   \t\n  \n"])
def test_empty_or_whitespace_file_is_an_error(tmp_path, text):
    """An empty or whitespace-only file (an editor truncating, then writing) is an error."""
    path = tmp_path / "o.yaml"
    path.write_text(text)
    assert fileProblems(path) == [f"{path}: configuration file is empty"]


def test_comment_only_file_is_an_error(tmp_path):
    """A file of comments only configures nothing and says how to mean "no processes"."""
    path = tmp_path / "o.yaml"
    path.write_text("# processes:\n#   backend: ...\n")
    (message,) = fileProblems(path)
    assert message.startswith(f"{path}: configuration file is empty (only comments)")
    assert "processes: {}" in message


def test_truncated_file_is_a_located_syntax_error(tmp_path):
    """A file cut in the middle of a flow mapping is a located syntax error."""
    path = tmp_path / "o.yaml"
    path.write_text('processes:\n  backend: {command: ["/bin/true"], url: "http://127.0.0.1:1",')
    (message,) = fileProblems(path)
    assert re.match(rf"{re.escape(str(path))}:[23]:\d+: YAML syntax error: ", message), message


def test_nul_byte_in_file_located(tmp_path):
    """A NUL byte in the file is located by line and column."""
    path = tmp_path / "o.yaml"
    path.write_bytes(b"processes:\n  a: {command: [x\x00]}\n")
    assert fileProblems(path) == [f"{path}:2:18: NUL byte (binary data in a text file)"]


def test_nul_character_in_an_argument():
    """A NUL written as an escape in an argument is an error at load, not a spawn failure."""
    (message,) = problems('processes:\n  backend: {command: ["{python}", "-c\\0x"]}\n')
    assert ":2:" in message
    assert message.endswith(": processes.backend.command[1]: contains a NUL character (\\0)")


def test_merge_keys_apply_with_explicit_keys_winning():
    """YAML merge keys work under the budget; keys written out beat merged ones."""
    config = load("""\
        processes:
          a: &base {command: ["{python}"], url: "http://127.0.0.1:1"}
          b: {<<: *base, url: "http://127.0.0.1:2"}
          c: {<<: [{url: "http://127.0.0.1:3"}, *base]}
        """)
    assert config.processes["b"].url == "http://127.0.0.1:2"
    assert config.processes["b"].command == config.processes["a"].command
    assert config.processes["c"].url == "http://127.0.0.1:3"


# -- durations -----------------------------------------------------------------------------

@pytest.mark.parametrize("written,seconds", [
    ("30", 30.0), ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0), ("2.5", 2.5),
])
def test_durations_in_yaml_and_environment(written, seconds):
    """Durations accept plain seconds and Go-style strings in YAML and in the environment."""
    config = load(MINIMAL + f"    health: {{interval: {written}}}\n    stop: {{timeout: '{written}'}}\n")
    assert config.processes["backend"].health.interval == seconds
    assert config.processes["backend"].stop.timeout == seconds
    config = load(environ={"HEALTH_CHECK_INTERVAL": written,
                           "ORCHESTRATOR__PROCESSES__BACKEND__RESTART__RESET_AFTER": written})
    assert config.processes["backend"].health.interval == seconds
    assert config.processes["backend"].restart.reset_after == seconds


def test_plugin_durations():
    """Plugin options that are durations (backoff, webhook timing) take the same strings."""
    config = load(MINIMAL + "    restart: {backoff: {initial: 500ms, max: 1m}}\n"
                  'notifiers: [{type: webhook, url: "https://h.example", timeout: 2s, retry_max: 1m30s}]\n')
    backoff = config.processes["backend"].restart.options["backoff"]
    assert backoff["initial"] == 0.5 and backoff["max"] == 60.0
    assert config.notifiers[0].options["timeout"] == 2.0
    assert config.notifiers[0].options["retry_max"] == 90.0


def test_bad_duration_is_one_located_error():
    """A malformed duration is one located error that says what a duration looks like."""
    (message,) = problems(MINIMAL + "    health: {interval: 30x}\n")
    assert message.endswith(":5:24: processes.backend.health.interval: '30x' is not a duration "
                            "(seconds, or like 500ms, 30s, 1m30s, 1h)")
    assert problems(environ={"HEALTH_CHECK_INTERVAL": "1m30"}) == [
        "env HEALTH_CHECK_INTERVAL: '1m30' is not a duration (seconds, or like 500ms, 30s, 1m30s, 1h)"]


def test_duration_minimum_still_applies():
    """A duration string below a key's minimum is refused like the number would be."""
    (message,) = problems(MINIMAL + "    health: {interval: 50ms}\n")
    assert message.endswith("processes.backend.health.interval: 0.05 is less than the minimum of 0.1")


# -- .env ergonomics --------------------------------------------------------------------------

def test_unparsable_dotenv_line_is_an_error(tmp_path):
    """A .env line python-dotenv cannot parse is an error naming its line, not a warning."""
    found = problems(dotenv="A=1\nthis is not a line\nB='unterminated\n", tmp_path=tmp_path)
    assert f"{tmp_path}/.env:2: cannot parse this line (expected NAME=value, a comment or a blank line)" in found


def test_dotenv_error_blamed_on_the_dotenv_line(tmp_path):
    """A bad GO_BACKEND_BINARY from .env is located at its .env line, not at the YAML command it replaced."""
    found = problems(dotenv="# x\n\nGO_BACKEND_BINARY=./missing-server --port 1\n", tmp_path=tmp_path)
    assert found == [f"{tmp_path}/.env:3: GO_BACKEND_BINARY: processes.backend.command[0]: "
                     f"command not found: {tmp_path}/missing-server"]


def test_dotenv_relative_paths_resolve_against_its_folder(tmp_path):
    """Relative paths in .env values resolve against the .env file's folder, YAML ones against the YAML's."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "srv").mkdir()
    (tmp_path / "bin").mkdir()
    server = tmp_path / "bin" / "server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    path = writeConfig('processes:\n  backend: {command: ["{python}"], url: "http://127.0.0.1:1"}\n',
                       str(tmp_path / "conf"))
    envFile = tmp_path / ".env"
    envFile.write_text("BACKEND_WORKING_DIR=srv\nGO_BACKEND_BINARY=bin/server --flag\n"
                       "ORCHESTRATOR__PROCESSES__BACKEND__LOG__FILE=logs/b.log\n")
    loaded = loadConfig(path, envFile=str(envFile), environ={}, entryPoints=False)
    backend = loaded.config.processes["backend"]
    assert backend.working_dir == str(tmp_path / "srv")
    assert backend.command == (str(server), "--flag")
    assert backend.output.file == str(tmp_path / "logs" / "b.log")
    assert loaded.envFile == str(envFile)


def test_dotenv_found_in_working_directory_then_beside_yaml(tmp_path, monkeypatch):
    """Without --env-file, ./.env is read, else the .env beside the YAML file."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "run").mkdir()
    path = writeConfig(MINIMAL, str(tmp_path / "conf"))
    (tmp_path / "conf" / ".env").write_text("MAX_RESTART_ATTEMPTS=7\n")
    monkeypatch.chdir(tmp_path / "run")
    loaded = loadConfig(path, environ={}, entryPoints=False)
    assert loaded.config.processes["backend"].restart.max_attempts == 7
    assert loaded.envFile == str(tmp_path / "conf" / ".env")
    (tmp_path / "run" / ".env").write_text("MAX_RESTART_ATTEMPTS=8\n")
    loaded = loadConfig(path, environ={}, entryPoints=False)
    assert loaded.config.processes["backend"].restart.max_attempts == 8
    assert loaded.envFile == ".env"


@pytest.mark.parametrize("content,expected", [
    (b"A=1\nB=\xff\n", ".env:2:3: not UTF-8 text (byte 0xff at offset 6)"),
    (b"A=1\nB=\x00\n", ".env:2:3: NUL byte (binary data in a text file)"),
])
def test_dotenv_binary_content_located(tmp_path, content, expected):
    """A .env that is not UTF-8 text is a located error."""
    envFile = tmp_path / ".env"
    envFile.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        loadConfig(writeConfig(MINIMAL, str(tmp_path)), envFile=str(envFile), environ={}, entryPoints=False)
    assert caught.value.problems == (f"{tmp_path}/{expected}",)


def test_oversize_dotenv_refused(tmp_path):
    """A .env over the file limit is refused before it is read."""
    envFile = tmp_path / ".env"
    with open(envFile, "wb") as f:
        f.truncate(2 * 1024 * 1024)
    with pytest.raises(ConfigError) as caught:
        loadConfig(writeConfig(MINIMAL, str(tmp_path)), envFile=str(envFile), environ={}, entryPoints=False)
    assert caught.value.problems == (f"{envFile}: .env file is larger than the limit of 1048576 bytes",)


# -- checks at load of what used to fail only at spawn ---------------------------------------

def test_missing_working_dir_is_a_warning(tmp_path):
    """A working_dir that does not exist yet is a located warning; the configuration loads."""
    path = writeConfig(MINIMAL + "    working_dir: later\n", str(tmp_path))
    loaded = loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)
    assert loaded.warnings == (f"{path}:5:18: processes.backend.working_dir: folder {tmp_path}/later "
                               "does not exist (yet): starting fails until it appears",)


def test_working_dir_that_is_a_file_is_an_error(tmp_path):
    """A working_dir that is a file can never work: an error."""
    (tmp_path / "plain").write_text("x")
    (message,) = problems(MINIMAL + "    working_dir: plain\n", tmp_path=tmp_path)
    assert message.endswith(f"processes.backend.working_dir: {tmp_path}/plain is not a folder")


def test_explicit_default_process_must_exist():
    """admin.default_process naming no configured process is an error at load."""
    (message,) = problems(MINIMAL + "admin: {default_process: frontend}\n")
    assert message.endswith("admin.default_process: names no configured process 'frontend' (known: backend)")


def test_token_file_readable_by_others_refused(tmp_path):
    """A token file others may read is refused unless admin.allow_insecure."""
    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o644)
    (message,) = problems(MINIMAL + "admin: {token_file: token}\n", tmp_path=tmp_path)
    assert message.endswith(f"admin.token_file: {token} is readable by group or others (mode 0644): "
                            "chmod 600 it, or set admin.allow_insecure: true")
    config = load(MINIMAL + "admin: {token_file: token, allow_insecure: true}\n", tmp_path=tmp_path)
    assert config.admin.token == "abc123"


@pytest.mark.parametrize("content", [b"   \n", b"\n\nabc\n", b"\t \t"])
def test_whitespace_token_file_refused(tmp_path, content):
    """A token file whose first line is blank is refused."""
    token = tmp_path / "token"
    token.write_bytes(content)
    token.chmod(0o600)
    (message,) = problems(MINIMAL + "admin: {token_file: token}\n", tmp_path=tmp_path)
    assert message.endswith("admin.token_file: 'token' is empty or only whitespace")


def test_binary_token_file_located(tmp_path):
    """A token file that is not text is a located error, never a traceback."""
    token = tmp_path / "token"
    token.write_bytes(b"ab\xffc\n")
    token.chmod(0o600)
    (message,) = problems(MINIMAL + "admin: {token_file: token}\n", tmp_path=tmp_path)
    assert message.endswith(f"admin.token_file: {token}:1:3: not UTF-8 text (byte 0xff at offset 2)")


def test_whitespace_token_refused():
    """A whitespace-only admin.token is refused."""
    (message,) = problems(MINIMAL + 'admin: {token: "   "}\n')
    assert message.endswith("admin.token: the token is only whitespace")


# -- check-config reports what a run would hit -------------------------------------------------

def test_check_config_names_the_env_file_and_warnings(tmp_path, capsys):
    """check-config prints the .env file it read and every warning."""
    path = writeConfig(MINIMAL + "    working_dir: later\n", str(tmp_path))
    envFile = tmp_path / "x.env"
    envFile.write_text("MAX_RESTART_ATTEMPTS=4\n")
    assert cliMain(["check-config", path, "--env-file", str(envFile)]) == 0
    out = capsys.readouterr().out
    assert f"  .env file: {envFile}\n" in out
    assert f"  warning: {path}:5:18: processes.backend.working_dir: folder {tmp_path}/later" in out


def test_check_config_warns_about_a_taken_port(tmp_path, capsys):
    """A port of a process's url already bound by another program is a warning at check time."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        path = writeConfig(MINIMAL.replace("3000", str(port)), str(tmp_path))
        assert cliMain(["check-config", path, "--env-file", os.devnull]) == 0
    out = capsys.readouterr().out
    assert (f"  warning: processes.backend.url: port {port} on 127.0.0.1 is already in use by "
            "another program") in out


def test_check_config_warns_about_a_taken_admin_port(tmp_path, capsys):
    """The admin API's port already bound by another program (another orchestrator?) is a warning at check time: the run would exit 1."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        path = writeConfig(MINIMAL + f'admin: {{listen: "tcp:{port}:interface=127.0.0.1"}}\n',
                           str(tmp_path))
        assert cliMain(["check-config", path, "--env-file", os.devnull]) == 0
    out = capsys.readouterr().out
    assert (f"  warning: admin.listen: port {port} on 127.0.0.1 is already in use by another "
            "program (another orchestrator?); a run would exit 1") in out
    assert cliMain(["check-config", path, "--env-file", os.devnull]) == 0
    assert "admin.listen: port" not in capsys.readouterr().out


# -- the reload's parse step ------------------------------------------------------------------

from twisted.internet.interfaces import IReactorThreads  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402
from zope.interface import implementer  # noqa: E402

from tests.fakes import FakeProcessReactor  # noqa: E402

TWO = """\
processes:
  a: {command: ["{python}"], start: {ready_after: 0}}
  b: {command: ["{python}"], start: {ready_after: 0}}
"""


@implementer(IReactorThreads)
class ThreadedFakeReactor(FakeProcessReactor):
    """
    The fake process reactor with a thread pool whose jobs run only when
    the test says, so a test can see what happens before a parse ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list = []

    def getThreadPool(self):
        return self

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        self.jobs.append((onResult, f, args, kwargs))

    def callInThread(self, f, *args, **kwargs):  # pragma: no cover - IReactorThreads
        self.jobs.append((lambda ok, r: None, f, args, kwargs))

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def suggestThreadPoolSize(self, size):  # pragma: no cover - IReactorThreads
        pass

    def runJobs(self) -> None:
        jobs, self.jobs = self.jobs, []
        for onResult, f, args, kwargs in jobs:
            try:
                result = f(*args, **kwargs)
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)


@pytest.fixture
def running(tmp_path):
    """An Orchestrator on a fake threaded reactor, running TWO, with a reload that counts its calls."""
    path = writeConfig(TWO, str(tmp_path))
    calls = []

    def reload():
        import gc

        calls.append(gc.isenabled())
        return loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)

    reactor = ThreadedFakeReactor()
    orchestrator = makeOrchestrator(reload(), reactor, reload=reload, environ={"PATH": "/bin"})
    orchestrator.startService()
    reactor.advance(1)
    calls.clear()
    yield orchestrator, reactor, path, calls
    for transport in reactor.spawned:
        if transport.alive:
            transport.exited(0)


def _pids(orchestrator):
    return {name: process.pid for name, process in orchestrator.processes.items()}


def test_reload_parses_in_the_thread_pool(running):
    """A reload reads the file in the reactor's thread pool; nothing changes until the parse ends."""
    orchestrator, reactor, path, calls = running
    writeConfig(TWO.replace("  b:", "  c:"), os.path.dirname(path))
    d = orchestrator.reload()
    assert calls == [] and len(reactor.jobs) == 1  # queued for a thread, not run here
    assert sorted(orchestrator.processes) == ["a", "b"]
    reactor.runJobs()
    _finishStops(reactor, orchestrator)
    assert calls == [False]  # read with the garbage collector paused, in the thread
    import gc

    assert gc.isenabled()
    assert sorted(orchestrator.processes) == ["a", "c"]
    assert d.called


def _finishStops(reactor, orchestrator):
    """Let every child that was sent a stop signal exit."""
    for transport in reactor.spawned:
        if transport.alive and transport.signals:
            transport.exited(0)


def test_reloads_are_read_one_at_a_time(running):
    """A second reload is read only once the first is applied, so an older read never wins."""
    orchestrator, reactor, path, calls = running
    first, second = orchestrator.reload(), orchestrator.reload()
    assert len(reactor.jobs) == 1
    reactor.runJobs()
    assert first.called and len(reactor.jobs) == 1
    reactor.runJobs()
    assert second.called and len(calls) == 2


def test_a_storm_of_reloads_costs_two_reads(running):
    """Reload requests arriving while one is read share one queued read of the file as it is then; each gets its result."""
    orchestrator, reactor, path, calls = running
    first = orchestrator.reload()
    storm = [orchestrator.reload() for _ in range(50)]
    assert len(reactor.jobs) == 1  # the first is being read; the others wait as one
    reactor.runJobs()
    assert first.called and len(reactor.jobs) == 1
    writeConfig(TWO.replace("  b:", "  c:"), os.path.dirname(path))
    reactor.runJobs()
    _finishStops(reactor, orchestrator)
    assert len(calls) == 2 and reactor.jobs == []
    assert all(d.called and not isinstance(d.result, Failure) for d in storm)
    assert sorted(orchestrator.processes) == ["a", "c"]  # the queued read saw the new file
    later = orchestrator.reload()  # after the storm, a request reads again
    assert len(reactor.jobs) == 1
    reactor.runJobs()
    assert later.called and len(calls) == 3


def test_a_storm_of_rejected_reloads_fails_each_caller(running):
    """Every caller that joined a queued reload of a bad file gets the rejection."""
    orchestrator, reactor, path, calls = running
    orchestrator.reload()
    storm = [orchestrator.reload() for _ in range(5)]
    with open(path, "w") as f:
        f.write("")
    reactor.runJobs()
    reactor.runJobs()
    assert len(calls) == 2
    for d in storm:
        failure = d.result
        d.addErrback(lambda f: None)
        assert failure.check(ConfigError)
        assert "configuration file is empty" in failure.value.problems[0]


@pytest.mark.parametrize("text,expected", [
    ("", "configuration file is empty"),
    ("  \n\t\n", "configuration file is empty"),
    ("processes:\n  a: {command: [", "YAML syntax error"),
    (BILLION_LAUGHS, "aliases expand past 100000 nodes"),
])
def test_bad_reload_keeps_everything_running(running, text, expected):
    """An empty, truncated or hostile file on reload is rejected, located, and every child keeps its pid."""
    orchestrator, reactor, path, calls = running
    pids, config = _pids(orchestrator), orchestrator.config
    with open(path, "w") as f:
        f.write(text)
    d = orchestrator.reload()
    reactor.runJobs()
    failure = d.result if isinstance(getattr(d, "result", None), Failure) else None
    d.addErrback(lambda f: None)
    assert failure is not None and failure.check(ConfigError)
    (problem,) = failure.value.problems
    assert problem.startswith(path) and expected in problem
    assert orchestrator.config is config and _pids(orchestrator) == pids
    assert not any(t.signals for t in reactor.spawned)
    assert orchestrator.events.recent[-1].type == "config_rejected"


def test_reload_removing_every_process_needs_explicit_empty_processes(running):
    """A file without processes is refused on reload; `processes: {}` stops them all."""
    orchestrator, reactor, path, calls = running
    pids = _pids(orchestrator)
    with open(path, "w") as f:
        f.write("logging: {level: info}\n")
    d = orchestrator.reload()
    reactor.runJobs()
    failure = d.result
    d.addErrback(lambda f: None)
    assert failure.check(ConfigError)
    assert "write `processes: {}` to mean that" in failure.value.problems[0]
    assert _pids(orchestrator) == pids
    with open(path, "w") as f:
        f.write("processes: {}\n")
    d = orchestrator.reload()
    reactor.runJobs()
    _finishStops(reactor, orchestrator)
    assert d.called and not isinstance(d.result, Failure)
    assert dict(orchestrator.processes) == {}


def test_warnings_are_logged_at_start(tmp_path):
    """The warnings of a loaded configuration are logged when the orchestrator starts."""
    from twisted.logger import globalLogPublisher

    path = writeConfig(TWO.replace("  b: {command", "  b: {working_dir: later, command"), str(tmp_path))
    loaded = loadConfig(path, envFile=os.devnull, environ={}, entryPoints=False)
    reactor = FakeProcessReactor()
    orchestrator = makeOrchestrator(loaded, reactor, environ={"PATH": "/bin"})
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        orchestrator.startService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [e["warning"] for e in events if "warning" in e]
    assert logged == list(loaded.warnings) and "processes.b.working_dir" in logged[0]
    d = orchestrator.stopService()
    for transport in reactor.spawned:
        if transport.alive:
            transport.exited(0)
    reactor.advance(60)
    assert d.called


def test_check_config_json_names_env_file_and_warnings(tmp_path, capsys):
    """check-config --json carries the .env file read and the warnings."""
    import json

    # A port nobody listens on, so the only warning is the working folder's.
    text = MINIMAL.replace("127.0.0.1:3000", f"127.0.0.1:{harness.freePort()}")
    path = writeConfig(text + "    working_dir: later\n", str(tmp_path))
    assert cliMain(["check-config", path, "--env-file", os.devnull, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["env_file"] == os.devnull
    assert [w.split(": ")[1] for w in answer["warnings"]] == ["processes.backend.working_dir"]


def test_admin_timeouts_are_durations():
    """The admin API's timeouts take durations like every other key in seconds."""
    config = load(MINIMAL + "admin: {idle_timeout: 2m, header_timeout: 1500ms}\n",
                  environ={"ORCHESTRATOR__ADMIN__BODY_TIMEOUT": "5s"})
    assert config.admin.idle_timeout == 120.0
    assert config.admin.header_timeout == 1.5
    assert config.admin.body_timeout == 5.0


def test_check_config_shows_warnings_beside_errors(tmp_path, capsys):
    """When the configuration fails, check-config still lists the warnings a run would hit."""
    path = writeConfig(MINIMAL + "    working_dir: later\n    helth: {}\n", str(tmp_path))
    assert cliMain(["check-config", path, "--env-file", os.devnull]) == 1
    err = capsys.readouterr().err
    assert "processes.backend.helth: unknown key 'helth'" in err
    assert f"  warning: {path}:5:18: processes.backend.working_dir: folder {tmp_path}/later" in err


def test_shipped_config_backoff_gives_a_dependency_time():
    """The shipped backend crash-loops 1 s, 2 s, 4 s apart before giving up (time for a database to come up), restarts at once after a healthy run, and fixes no PORT that could contradict its url."""
    from orchestrator.supervision.policy import ExitRecord, RestartHistory

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    loaded = loadConfig(os.path.join(root, "conf", "orchestrator.yaml"), envFile=os.devnull,
                        environ={}, entryPoints=False)
    backend = loaded.config.processes["backend"]
    policy = loaded.kinds.policies[backend.restart.policy](backend.restart)
    crash = ExitRecord(pid=1, exit_code=1, signal=None, at=0.0, uptime=0.1, cause="exit", clean=False)

    def delay(attempt, wasReady):
        return policy.next_delay(RestartHistory(attempt=attempt, exits=(crash,), was_ready=wasReady,
                                                sample=0.5))

    assert backend.restart.max_attempts == 3
    assert [delay(n, False) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert delay(1, True) == 0.0
    assert "PORT" not in backend.env
