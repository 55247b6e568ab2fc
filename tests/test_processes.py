"""common.processes: loopback ports for the tests' and the harness's own processes."""

from common.processes import free_port


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    """The OS may return a just-closed port on the next bind; two ports asked for in a row
    (the sites' and the SuperLink's) must differ (a clean-clone e2e fixture once got the same
    one twice and refused to start)."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == 300
    assert all(1024 <= p <= 65535 for p in ports)
