"""Exposure: every server binds loopback (as `make up` starts them), and no log holds review
text or an API key. Runs after the load, fuzz and hostile-input modules have filled the logs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.settings import Settings
from tests.gateways import cmdline, descendants, gateway, misbehaving_scoring_server
from tests.load import REVIEWS
from tests.reliability.conftest import KEY
from tests.reliability.test_hostile_input import SCRIPT
from tests.servers import free_port

LOOPBACK = {"127.0.0.1", "::1"}


def listening_addresses(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by these processes."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            address, port = local.split(":")
            found.add((_address(address, width), int(port, 16)))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if width == 8:
        return ".".join(str(b) for b in words)
    if words == bytes(15) + b"\x01":
        return "::1"
    if words[:12] == bytes(10) + b"\xff\xff":
        return ".".join(str(b) for b in words[12:])
    return words.hex()


def test_every_server_listens_on_loopback_only(gw, registry):
    own = descendants(os.getpid())  # tracking servers, gateways and their scoring servers
    addresses = listening_addresses(own)
    ports = {port for _, port in addresses}
    scoring = int(gw.http.get("/info").json()["scoring_server"].rsplit(":", 1)[1])
    assert {registry.port, int(gw.url.rsplit(":", 1)[1]), scoring} <= ports, addresses
    assert {address for address, _ in addresses} <= LOOPBACK, addresses


def test_make_up_starts_every_server_on_loopback(monkeypatch):
    """`make up` (stack.up) as it would run, with process starts recorded instead of made."""
    from stack import up

    started = []
    monkeypatch.setattr(
        up.Stack, "start", lambda self, args, log=None, **env: started.append((args, env))
    )
    monkeypatch.setattr(up.Stack, "wait_healthy", lambda *a, **k: None)
    stack = up.Stack(up.StackSettings())
    stack.tracking_server()
    stack.gateway()
    (mlflow_args, _), (_, gateway_env) = started
    assert mlflow_args[mlflow_args.index("--host") + 1] == "127.0.0.1"
    assert gateway_env["GATEWAY_HOST"] == "127.0.0.1"
    assert "GATEWAY_SCORING_HOST" not in gateway_env and "GATEWAY_API_KEYS" not in gateway_env
    for name in (
        "GATEWAY_HOST",
        "GATEWAY_SCORING_HOST",
        "GATEWAY_API_KEYS",
        "GATEWAY_CORS_ORIGINS",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)
    assert (defaults.host, defaults.scoring_host) == ("127.0.0.1", "127.0.0.1")
    assert defaults.keys == [] and defaults.origins == [], "make up: no keys, no CORS"


def forms(text: str) -> set[str]:
    """A text as it could appear in a log: raw, or escaped inside JSON."""
    return {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}


SECRETS = {
    "review text": [*REVIEWS, SCRIPT, "这部电影非常好看", "Loved it 😍", "A fine film."],
    "API key": [KEY, "another-key-never-used"],
}


def test_the_gateway_log_holds_no_review_text_and_no_key(gw):
    log = gw.log.read_text(errors="replace")
    assert len(log.splitlines()) > 1000, "the suite's traffic should be logged by now"
    for what, texts in SECRETS.items():
        for text in texts:
            for form in forms(text):
                assert form not in log, f"{what} in the gateway log: {text!r}"


def test_scoring_servers_never_see_a_key(gw):
    """The keys never reach the scoring servers: not in their environment, not in their logs."""
    children = [pid for pid in descendants(gw.proc.pid) if "uvicorn" in cmdline(pid)]
    assert children
    for pid in children:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"GATEWAY_API_KEYS" not in environment and KEY.encode() not in environment
    logs = list((gw.log.parent / "scoring").glob("*.log"))
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        for key in SECRETS["API key"]:
            assert key not in text, path.name


PASSWORD = "Tr0ub4dor-n0t-f0r-logs"


def test_a_password_in_the_tracking_uri_never_shows(tmp_path):
    """A tracking URI with a user and password, and a registry that cannot be reached (so
    MLflow's errors, which quote the URI, reach /info, the logs and rollout decisions): the
    password is in none of the answers, nor in any log."""
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    answers = []
    logs = []
    # Supervising its own scoring servers: every poll fails and is logged.
    with gateway(tmp_path / "supervised", uri) as gw:
        gw.wait_for(
            lambda: sum("registry unavailable" in line["msg"] for line in gw.log_lines()) >= 2
        )
        answers += [gw.http.get(path) for path in ("/health", "/info", "/ready", "/metrics")]
        answers.append(gw.predict("A fine film."))
        logs.append(gw.log)
    # With an external scoring server: it serves, so /info shows the registry's error.
    with (
        misbehaving_scoring_server(delay=0.1) as upstream,
        gateway(tmp_path / "external", uri, GATEWAY_SCORING_URL=upstream) as gw,
    ):
        info = gw.wait_for(
            lambda: (
                (r := gw.http.get("/info")).status_code == 200 and r.json()["registry_error"] and r
            )
        )
        assert info.json()["registry_error"].startswith("API request to http://127.0.0.1:")
        answers += [info, gw.http.get("/health"), gw.http.get("/metrics")]
        answers.append(gw.predict("A fine film."))  # the stand-in fails: a 500 with its reason
        answers.append(gw.http.post("/invocations", json={"inputs": ["x"]}))
        logs.append(gw.log)
    logs += list(tmp_path.rglob("*.log"))
    for answer in answers:
        assert PASSWORD not in answer.text, (answer.request.url, answer.text[:300])
        assert "alice" not in answer.text, (answer.request.url, answer.text[:300])
    for path in set(logs):
        text = path.read_text(errors="replace")
        for form in forms(PASSWORD):
            assert form not in text, path.name
    assert "registry unavailable" in logs[0].read_text()
