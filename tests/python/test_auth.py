"""Tokens on every query and control surface, against a real `flowdaq serve`.

With `[auth]` tokens (from the TOML, a file or FLOWDAQ_TOKENS), HTTP answers 401 without an
accepted bearer (but `/health`), the control ROUTER refuses requests without a `token`, and
`flowdaq sql --server` passes one with `--token`; a server that would listen beyond loopback
without tokens refuses to start unless the configuration opts out. Flight SQL's tokens are
tested in test_flight_sql.py.
"""

import json
import os
import subprocess
import urllib.error
import urllib.request

import zmq

from conftest import Server, flowdaq_bin, run_cli
from flowdaq import Client, ControlError

TOKEN = "lab-token-0123456789abcdef"
OTHER = "other-token-0123456789abcd"


def http(url, method="GET", body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_http_asks_every_route_but_health_for_a_token(server_factory):
    server = server_factory(extra_config=f'[auth]\ntokens = ["{TOKEN}"]\n', token=TOKEN).start()
    sql = server.http + "/sql?format=json"
    for token in (None, "wrong-token-0123456789", TOKEN[:-1], TOKEN + "x"):
        status, body = http(sql, "POST", b"SELECT 1 AS one", token)
        assert status == 401, (token, body)
        assert "Bearer" in json.loads(body)["error"]
    assert http(sql, "POST", b"SELECT 1 AS one", TOKEN) == (200, b'[{"one":1}]')
    assert http(server.http + "/metrics")[0] == 401
    assert http(server.http + "/metrics/json")[0] == 401
    assert http(server.http + "/metrics", token=TOKEN)[0] == 200
    condition = json.dumps({"run_id": "r", "condition_id": "c-1"}).encode()
    assert http(server.http + "/conditions", "POST", condition)[0] == 401
    assert http(server.http + "/conditions", "POST", condition, TOKEN)[0] == 200
    assert http(server.http + "/health")[0] == 200
    assert http(server.http + "/events")[0] == 401
    refused = server.metrics()["http"]["unauthorized"]
    assert refused == 8, refused

    # The command-line client passes the token, from --token or FLOWDAQ_TOKEN.
    answer = run_cli("sql", "SELECT 2 AS two", "--server", server.http, "--format", "json", "--token", TOKEN)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == [{"two": 2}]
    refused = run_cli("sql", "SELECT 2 AS two", "--server", server.http, "--format", "json")
    assert refused.returncode != 0 and "unauthorized" in refused.stderr, refused.stderr


def test_control_requests_need_a_token_and_registrations_without_one_change_nothing(server_factory):
    server = server_factory(extra_config=f'[auth]\ntokens = ["{TOKEN}"]\n', token=TOKEN).start()
    context = zmq.Context()
    anonymous = Client(server.control, server.publish, context=context, token="")
    for call in (
        lambda: anonymous.register_condition("run-a", "c-1", {"temperature": {"value": 140, "unit": "degC"}}),
        lambda: list(anonymous.replay("", {})),
    ):
        try:
            call()
        except ControlError as err:
            assert "unauthorized" in str(err)
        else:
            raise AssertionError("an anonymous control request was served")
    wrong = Client(server.control, server.publish, context=context, token=OTHER)
    try:
        wrong.register_condition("run-a", "c-2", {})
    except ControlError as err:
        assert "unauthorized" in str(err)
    else:
        raise AssertionError("a wrong token was accepted")
    assert server.sql_arrow("SELECT count(*) AS n FROM conditions").to_pylist() == [{"n": 0}]

    client = Client(server.control, server.publish, context=context, token=TOKEN)
    client.register_condition("run-a", "c-3", {"temperature": {"value": 140, "unit": "degC"}})
    rows = server.sql_arrow("SELECT condition_id FROM conditions").to_pylist()
    assert rows == [{"condition_id": "c-3"}]
    context.term()


def test_tokens_come_from_a_file_or_the_environment(server_factory, tmp_path):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# lab tokens\n{TOKEN}\n")
    server = server_factory(
        extra_config=f'[auth]\ntokens_file = "{tokens_file}"\n', env={"FLOWDAQ_TOKENS": OTHER}
    ).start()
    sql = server.http + "/sql?format=json"
    assert http(sql, "POST", b"SELECT 1 AS one")[0] == 401
    assert http(sql, "POST", b"SELECT 1 AS one", TOKEN)[0] == 200
    assert http(sql, "POST", b"SELECT 1 AS one", OTHER)[0] == 200


def exposed(tmp_path, name, extra_config="", env=None):
    """A server whose HTTP listens on every interface (0.0.0.0), not only loopback."""
    server = Server(tmp_path / name, extra_config, env=env)
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace('[http]\nlisten = "127.0.0.1:0"', '[http]\nlisten = "0.0.0.0:0"'))
    return server


def refused_start(server):
    """Start `server` expecting a refusal; return its stderr."""
    process = subprocess.run(
        [flowdaq_bin(), "serve", "--config", str(server.config_path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(server.env or {})},
    )
    assert process.returncode != 0, process.stdout
    return process.stderr


def test_listening_beyond_loopback_needs_tokens_or_an_explicit_opt_out(tmp_path):
    error = refused_start(exposed(tmp_path, "open"))
    assert "http.listen" in error and "beyond loopback" in error and "allow_unauthenticated" in error, error
    assert not (tmp_path / "open" / "wal").exists(), "refused before touching the data directory"

    error = refused_start(exposed(tmp_path, "weak", '[auth]\ntokens = ["short"]\n'))
    assert "at least 16 bytes" in error, error

    started = []
    try:
        for name, extra, env in (
            ("with-token", f'[auth]\ntokens = ["{TOKEN}"]\n', None),
            ("with-env-token", "", {"FLOWDAQ_TOKENS": TOKEN}),
            ("opted-out", "[auth]\nallow_unauthenticated = true\n", None),
        ):
            server = exposed(tmp_path, name, extra, env).start()
            started.append(server)
            assert server.ready["http"].startswith("0.0.0.0:"), server.ready
            port = server.ready["http"].rsplit(":", 1)[1]
            token = None if name == "opted-out" else TOKEN
            status, body = http(f"http://127.0.0.1:{port}/sql?format=json", "POST", b"SELECT 1 AS one", token)
            assert status == 200, (name, body)
    finally:
        for server in started:
            server.kill()
