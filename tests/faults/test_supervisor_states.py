"""The supervisor as a state machine: whatever is killed, stopped or restarted, its view of
the processes is the live processes.

Real child processes and a real control socket; the children are small heartbeat senders
(a stage's liveness, without a stage's start-up time), beating every 0.1 s.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import zmq
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ser_stream.settings import PipelineConfig
from ser_stream.supervisor.processes import Stages
from ser_stream.supervisor.wiring import CHAIN, Wiring
from ser_stream.testing import children

BEAT = """
import sys, time, zmq
from ser_stream.messages import Heartbeat
from ser_stream.wire import Envelope, encode
push = zmq.Context().socket(zmq.PUSH)
push.connect(sys.argv[1])
while True:
    push.send_multipart(encode(Envelope("-", 0, Heartbeat(sys.argv[2]))))
    time.sleep(0.1)
"""


class HeartbeatWiring(Wiring):
    """The supervisor's wiring, with heartbeat senders for stages."""

    def command(self, name: str, replica: int, **_) -> list[str]:
        return [sys.executable, "-c", BEAT, self.endpoint("control"), f"{name}.{replica}"]


class Supervision(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(f"/tmp/ser-stream-states-{os.getpid()}")
        self.folder.mkdir(mode=0o700, exist_ok=True)
        config = PipelineConfig(("file:x.wav",), max_restarts=1000, replicas={"model": 2})
        self.stages = Stages(HeartbeatWiring(config, self.folder))
        self.stages.heartbeat_s = 0.1
        self.context = zmq.Context()
        self.control = self.context.socket(zmq.PULL)
        self.control.bind(self.stages.wiring.endpoint("control"))
        self.stages.start_chain()
        self.stopped = False
        self.settle()

    def run_until(self, done, what: str) -> None:
        """Run the supervisor's loop until ``done()`` (15 s only to give up on a hang)."""
        deadline = time.monotonic() + 15
        while True:  # the supervisor looks at least once
            self.control.poll(20)
            self.stages.listen(self.control)
            self.stages.check()
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}")

    def settle(self) -> None:
        """Run the supervisor's loop until every process beats."""
        self.run_until(
            lambda: self.stages.alive() == set(self.stages.processes),
            "every process beats",
        )

    @precondition(lambda self: not self.stopped)
    @rule(which=st.sampled_from([(name, 0) for name in CHAIN] + [("model", 1)]))
    def kill(self, which) -> None:
        before = self.stages.processes[which].pid
        os.kill(before, signal.SIGKILL)
        self.stages.processes[which].wait()  # dead before the supervisor looks
        self.run_until(lambda: self.stages.processes[which].pid != before, f"{which} replaced")
        self.settle()

    @precondition(lambda self: not self.stopped)
    @rule(which=st.sampled_from([(name, 0) for name in CHAIN]))
    def hang(self, which) -> None:
        before = self.stages.processes[which].pid
        os.kill(before, signal.SIGSTOP)
        # Stopped, it misses its beats: the supervisor replaces it, however long that takes.
        self.run_until(lambda: self.stages.processes[which].pid != before, f"{which} replaced")
        self.settle()

    @precondition(lambda self: not self.stopped)
    @rule()
    def stop(self) -> None:
        self.stages.stop_all()
        self.stopped = True

    @precondition(lambda self: self.stopped)
    @rule()
    def start(self) -> None:
        self.stages.start_chain()
        self.stopped = False
        self.settle()

    @invariant()
    def the_view_is_the_live_processes(self) -> None:
        live = set(children(os.getpid())) & {p.pid for p in self.stages.processes.values()} | {
            pid for pid, argv in children(os.getpid()).items() if BEAT in argv
        }
        running = {p.pid for p in self.stages.processes.values() if p.poll() is None}
        if self.stopped:
            assert live == set() and running == set()
        else:
            assert live == running and len(running) == len(self.stages.processes)

    def teardown(self) -> None:
        self.stages.stop_all()
        self.context.destroy(linger=0)


TestSupervision = Supervision.TestCase
TestSupervision.settings = settings(max_examples=8, stateful_step_count=6, deadline=None)
