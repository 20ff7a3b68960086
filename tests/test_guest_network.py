"""The guest reaches nothing on the host or the network (the user netdev's restrict=on, harness/vm/machine.py),
while the harness still reaches the guest's SSH through its forward.

A kernel under test is untrusted: without restrict=on, slirp connects the guest's 10.0.2.2 to the host's
127.0.0.1, so any service listening on the host's loopback (a database, a cache, another user's debug
server) and the host's other addresses were the guest's to talk to. Here a listener on the host's loopback
and one on its other address each wait for the guest's busybox `nc`: under the harness's own QEMU arguments
nc gets a definite refusal and no connection arrives; the control boots the same guest with restrict=on
taken out of the command line (test-only), and there nc reads the listener's token: the probe sees a door
when there is one.
"""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from harness.kernel.prepare import prepare
from harness.vm import machine
from harness.vm.machine import VM, load_profile
from harness.vm.ssh import SSH

pytestmark = pytest.mark.e2e
SLIRP_HOST = "10.0.2.2"  # the host's loopback, as slirp shows it to the guest
REFUSED = re.compile(r"^nc: can't connect to remote host \([\d.]+\): (Connection refused|Network is unreachable)$|"
                     r"^nc: timed out$")


class Listener:
    """A TCP listener on the host that greets whoever connects with a token, and counts them."""

    def __init__(self, address: str):
        self.token = uuid.uuid4().hex
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(0.2)
        self.address, self.port = self.sock.getsockname()[:2]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                self.accepted.append(peer)
                conn.sendall(f"{self.token}\n".encode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def _other_host_address() -> str | None:
    """The host's address on its default route (no packet is sent), if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def _unrestricted(*args: object, **kwargs: object) -> list[str]:
    argv = _harness_qemu_argv(*args, **kwargs)  # type: ignore[arg-type]
    i = argv.index("-netdev") + 1
    assert "restrict=on," in argv[i], argv[i]  # what the control takes away must be there to take
    argv[i] = argv[i].replace("restrict=on,", "")
    return argv


_harness_qemu_argv = machine.qemu_argv


@pytest.fixture(scope="module", params=["harness", "control-unrestricted"])
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, VM]]:
    prepared = prepare()
    vm = VM(load_profile("default"), prepared.build.kernel_image, prepared.image, tmp_path_factory.mktemp("vm"))
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "control-unrestricted":
            mp.setattr(machine, "qemu_argv", _unrestricted)
        try:
            vm.start(boot_timeout=240)
            yield request.param, vm
        finally:
            vm.stop()


def _nc(ssh: SSH, address: str, port: int) -> tuple[int, str, str]:
    result = ssh.run(["nc", "-w", "10", address, str(port)], stdin=b"", timeout=60)
    return result.exit_status, result.stdout.strip(), result.stderr.strip()


def _targets() -> list[tuple[str, str]]:
    """(what the guest dials, where the host listens): the host's loopback, and its other address if any."""
    targets = [(SLIRP_HOST, "127.0.0.1")]
    if other := _other_host_address():
        targets.append((other, other))
    return targets


@pytest.mark.parametrize(("dialled", "listening"), _targets(), ids=lambda a: a)
def test_the_guest_cannot_reach_a_service_on_the_host(guest: tuple[str, VM], dialled: str, listening: str):
    kind, vm = guest
    assert vm.ssh
    argv_netdev = vm.argv[vm.argv.index("-netdev") + 1]
    listener = Listener(listening)
    try:
        status, out, err = _nc(vm.ssh, dialled, listener.port)
    finally:
        listener.close()
    said = f"nc {dialled}:{listener.port} (host {listening}) under {argv_netdev}: exit {status}, {out!r}, {err!r}"
    if kind == "harness":
        assert "restrict=on" in argv_netdev
        assert status != 0 and out == "" and REFUSED.match(err), said  # refused by slirp, not a broken nc
        assert listener.accepted == [], said
    else:
        assert "restrict=on" not in argv_netdev
        assert (status, out) == (0, listener.token) and len(listener.accepted) == 1, said


def test_the_harness_still_reaches_the_guest_through_its_forward(guest: tuple[str, VM]):
    """vm.start() already ran a command over the forwarded SSH; one more, and a guest-side listener nc can
    reach (the same nc, the same flags): nc itself works in this guest."""
    _, vm = guest
    assert vm.ssh and vm.ssh.run(["true"]).ok
    port = "4242"
    served = vm.ssh.run(["sh", "-c", f'echo "$1" | nc -l -p {port} & sleep 1; nc -w 10 127.0.0.1 {port}; wait',
                         "serve", "guest-side"], timeout=60)
    assert (served.exit_status, served.stdout.strip()) == (0, "guest-side"), served.describe()
