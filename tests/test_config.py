"""
Configuration: YAML + .env + environment + command line, merged, validated
once, every error located.
"""

from __future__ import annotations

import os

import pytest
from twisted.python import usage

from orchestrator.cli.main import main as cliMain
from orchestrator.config.load import loadConfig, parseBoolean
from orchestrator.errors import ConfigError
from orchestrator.tap import Options
from tests.fakes import EXECUTABLE, writeConfig

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
    assert message.startswith(f"{path}:4:1: YAML syntax error: expected ',' or ']'")


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

    environ = {"WEBHOOK_SECRET": "whsec_abc", "PATH": "/usr/bin"}
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
    assert caught.value.problems == (f"{path}: not UTF-8 text (byte 28)",)


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
