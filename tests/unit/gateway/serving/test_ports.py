"""Scoring ports: chosen outside the kernel's ephemeral range, held until the server binds
them, a warning when the settings put them inside it, and a server that could not bind its
port started again at once on another one."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from pathlib import Path

import pytest

from gateway.serving import ports as ports_module
from gateway.serving.ports import Ports, band, ephemeral_range, warn_if_ephemeral
from gateway.serving.rollout import controller
from gateway.serving.scoring_server import OutputLog, PortTaken, ScoringServer, StartFailed
from gateway.settings import Settings
from tests.unit.gateway.serving.fakes import FakeRegistry, serving, settle
from tests.unit.gateway.serving.test_rollout import _free_range, make

IP_LOCAL_PORT_RANGE = 51  # Linux 6.3+: a socket's own range of local ports for connect()


def range_file(tmp_path: Path, low: int, high: int) -> Path:
    path = tmp_path / "ip_local_port_range"
    path.write_text(f"{low}\t{high}\n")
    return path


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def bindable(port: int, reuse: bool = False) -> bool:
    with socket.socket() as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_range_is_read_from_the_kernel_file(tmp_path):
    assert ephemeral_range(range_file(tmp_path, 32768, 60999)) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") is None
    (tmp_path / "garbage").write_text("32768\n")
    assert ephemeral_range(tmp_path / "garbage") is None


def test_free_ports_are_drawn_beside_the_range_never_from_it():
    assert band((32768, 60999)) == (16384, 32767)
    assert band((10000, 60999)) == (1024, 9999)
    assert band((2000, 60999)) == (61000, 65535)  # more room above than below
    assert band((1024, 65535)) is None  # no room: the kernel's choice
    assert band(None) is None


def test_a_port_chosen_with_port_0_is_below_the_range(tmp_path):
    async def main():
        ports = Ports(settings(scoring_port=0), ephemeral=range_file(tmp_path, 32768, 60999))
        taken = [await ports.take() for _ in range(20)]
        for port in taken:
            ports.release(port)
        return taken

    taken = asyncio.run(main())
    assert len(set(taken)) == 20
    assert all(16384 <= port < 32768 for port in taken), taken


def test_without_the_range_file_the_kernel_chooses(tmp_path):
    async def main():
        ports = Ports(settings(scoring_port=0), ephemeral=tmp_path / "missing")
        port = await ports.take()
        ports.release(port)
        return port

    assert 0 < asyncio.run(main()) < 65536


def test_a_chosen_port_is_held_until_the_server_has_bound_it(tmp_path):
    async def main():
        ports = Ports(settings(scoring_port=0), ephemeral=range_file(tmp_path, 32768, 60999))
        port = await ports.take()
        try:
            assert not bindable(port), "held: nothing binding it plainly gets it"
            assert bindable(port, reuse=True), "uvicorn binds with SO_REUSEADDR: it still can"
            ports.bound(port)
            assert bindable(port)
        finally:
            ports.release(port)

    asyncio.run(main())


def test_an_outgoing_connection_is_never_given_a_held_port(tmp_path):
    """The cause of the collisions: connect() takes a local port from the ephemeral range.
    A connection allowed only the held port (IP_LOCAL_PORT_RANGE) cannot get it."""
    ephemeral = ephemeral_range()
    if ephemeral is None:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        target = listener.getsockname()
        port = _free_in(ephemeral)

        def connect_from(port: int) -> int:
            with socket.socket() as client:
                try:
                    client.setsockopt(
                        socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", port << 16 | port)
                    )
                except OSError:
                    pytest.skip("IP_LOCAL_PORT_RANGE needs Linux 6.3")
                try:
                    client.connect(target)
                except OSError as error:
                    assert error.errno == errno.EADDRNOTAVAIL
                    return 0
                return client.getsockname()[1]

        async def main():
            ports = Ports(settings(scoring_port=port), ephemeral=tmp_path / "missing")
            assert await ports.take() == port
            try:
                return connect_from(port)
            finally:
                ports.release(port)

        assert asyncio.run(main()) == 0, "the held port was given to a connection"
        assert connect_from(port) == port, "released, it may be again"


def test_a_port_a_server_failed_to_bind_is_left_alone():
    async def main():
        first = _free_range(3)
        ports = Ports(settings(scoring_port=first))
        port = await ports.take()
        assert port == first
        ports.avoid(port)
        ports.release(port)
        again = await ports.take()
        ports.release(again)
        return first, again

    first, again = asyncio.run(main())
    assert again == first + 1


def test_a_warning_names_fixed_ports_inside_the_range(tmp_path, caplog):
    path = range_file(tmp_path, 32768, 60999)
    with caplog.at_level(logging.WARNING, "gateway.rollout"):
        assert warn_if_ephemeral(settings(scoring_port=40000), path)
    (record,) = caplog.records
    message = record.getMessage()
    assert "40000, 40001, 40002" in message
    assert "32768-60999" in message
    assert "set GATEWAY_SCORING_PORT below 32768" in message


def test_a_warning_when_port_0_has_no_room_outside_the_range(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "gateway.rollout"):
        assert warn_if_ephemeral(settings(scoring_port=0), range_file(tmp_path, 1024, 65535))
    assert "1024-65535" in caplog.text


@pytest.mark.parametrize("port", [0, 5001, 32766])
def test_no_warning_for_ports_outside_the_range(tmp_path, caplog, port):
    with caplog.at_level(logging.WARNING, "gateway.rollout"):
        assert not warn_if_ephemeral(settings(scoring_port=port), range_file(tmp_path, 32768, 1))
        assert not warn_if_ephemeral(
            settings(scoring_port=port), range_file(tmp_path, 32769, 60999)
        )
    assert caplog.records == []


def test_no_warning_without_the_range_file(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "gateway.rollout"):
        assert not warn_if_ephemeral(settings(scoring_port=40000), tmp_path / "missing")
    assert caplog.records == []


def test_the_gateway_warns_once_when_it_starts(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(ports_module, "EPHEMERAL_RANGE", range_file(tmp_path, 32768, 60999))
    config = settings(
        scoring_port=40000, model_cache_dir=tmp_path / "models", scoring_log_dir=tmp_path
    )
    with caplog.at_level(logging.WARNING, "gateway.rollout"):
        controller(config, FakeRegistry())
    assert [r.getMessage().count("40000, 40001, 40002") for r in caplog.records] == [1]


# A server that could not bind its port.


def test_a_server_that_could_not_bind_its_port_says_so(tmp_path):
    uvicorn_says = (
        "ERROR:    [Errno 98] error while attempting to bind on address "
        "('127.0.0.1', 5001): address already in use"
    )
    assert _exit_with(tmp_path, [uvicorn_says, "Exception: ... Return code = 3"]) is PortTaken
    assert _exit_with(tmp_path, ["ModuleNotFoundError: No module named 'x'"]) is StartFailed


def test_a_port_taken_before_the_server_bound_it_is_retried_at_once(tmp_path):
    async def main():
        sup, world = make(tmp_path, FakeRegistry(), restart_backoff=30.0)
        try:
            world.start_errors["1"] = [PortTaken("address already in use")] * 2
            await sup.step()
            await settle()
            # Two servers lost their ports, the third serves: no back-off, no failed rollout.
            first, second, third = world.servers("1")[:3]
            assert sup.live is third.upstream
            assert first.stopped and second.stopped and not third.stopped
            assert len({first.port, second.port, third.port}) == 3
            event = sup.last_rollout
            assert event is not None and event["outcome"] == "succeeded"
            assert sup.outcomes[event["kind"], "failed"] == 0
        finally:
            await sup.close()

    asyncio.run(main())


def test_a_port_taken_too_often_fails_like_any_start(tmp_path):
    async def main():
        sup, world = make(tmp_path, FakeRegistry(), restart_backoff=30.0)
        try:
            world.start_errors["1"] = [PortTaken("address already in use")] * 10
            await sup.step()
            await settle()
            assert sup.live is None
            assert len(world.servers("1")) == 5  # PORT_TRIES
            event = sup.last_rollout
            assert event is not None and event["outcome"] == "failed"
            assert event["reason"] == "failed to start: address already in use"
        finally:
            await sup.close()

    asyncio.run(main())


def test_a_standby_whose_port_was_taken_is_ready_without_waiting(tmp_path):
    """Before: a standby that failed to start was tried again only after
    GATEWAY_RESTART_BACKOFF_MAX (60 s), and the live server had no spare meanwhile."""

    async def main():
        sup, world = make(tmp_path, FakeRegistry())
        try:
            await serving(sup, "1", standby=False)
            world.start_errors["1"] = [PortTaken("address already in use")]
            await sup.step()
            await settle()
            assert sup.standby is not None
            assert sup.standby is world.servers("1")[-1].upstream
        finally:
            await sup.close()

    asyncio.run(main())


def _exit_with(tmp_path: Path, lines: list[str]) -> type[Exception]:
    """What wait_ready raises for a server that printed ``lines`` and exited with 1."""

    async def main():
        config = settings(scoring_log_dir=tmp_path, start_timeout=30)
        output = OutputLog(tmp_path, 100_000, 1)
        server = ScoringServer(config, "1", 5001, tmp_path, output)
        script = "".join(f"print({line!r})\n" for line in lines) + "raise SystemExit(1)\n"
        process = server.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        server._copying = asyncio.create_task(server._copy_output(process.stdout))
        await process.wait()
        try:
            await server.wait_ready(None)
        except StartFailed as error:
            return type(error)
        finally:
            output.close()
        raise AssertionError("wait_ready returned for a server that exited")

    return asyncio.run(main())


def _free_in(ephemeral: tuple[int, int]) -> int:
    """A port inside the ephemeral range nothing uses now."""
    low, high = ephemeral
    for port in range(high - 1, low, -7):
        if bindable(port):
            return port
    raise RuntimeError("no free port in the ephemeral range")
