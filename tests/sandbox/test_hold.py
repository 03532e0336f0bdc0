"""The sandbox's `hold` fault: a request waits mid-flight until the test releases it.

Tests use it to make a race certain (a client holds a resource while something else
happens), so its own behaviour is pinned here: nothing is answered before `release()`,
and everything is answered after it, later requests included.
"""

from __future__ import annotations

import threading
import time

import httpx

from chartly_dagster.sandbox import Fault, Sandbox


def test_hold_answers_only_after_release(sandbox: Sandbox) -> None:
    hold = sandbox.faults.add(Fault("hold", endpoint="/v2/orders", times=None))
    url = sandbox.url("/v2/orders", **{"from": 1767225600, "to": 1767229200})
    statuses: list[int] = []
    answered = threading.Event()

    def get() -> None:
        with httpx.Client(trust_env=False, timeout=60) as client:
            statuses.append(client.get(url).status_code)
        answered.set()

    thread = threading.Thread(target=get)
    thread.start()
    deadline = time.monotonic() + 60
    while hold.fired == 0 and time.monotonic() < deadline:  # the request reached the hold
        time.sleep(0.01)
    assert hold.fired == 1
    assert not answered.is_set()  # held: it cannot be answered before the release
    hold.release()
    thread.join(timeout=60)
    assert statuses == [200]
    with httpx.Client(trust_env=False, timeout=10) as client:  # released: holds nothing
        assert client.get(url).status_code == 200
