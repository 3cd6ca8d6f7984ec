"""What tests of ser-stream need, shipped so users testing their own cores or sinks can use it.

Three parts:

- synthetic audio (:func:`tone`, :func:`voiced`, :func:`room_tone`, :func:`talk`, ...) and a
  driver for streaming cores (:func:`run_core`, :func:`mutated_messages`);
- a harness for ``ser-stream up`` as a user runs it: :func:`start_up` / :func:`run_up` start it
  on a private publish endpoint with a JSONL sink, :func:`records` and :func:`wait_for_records`
  read what it wrote, :func:`wait_ready`, :func:`wait_for_log` and :func:`wait_for_line` wait
  for what it logs, :func:`finish` ends it;
- a reader of ``/proc`` for its processes: :func:`children`, :func:`stage_pids`,
  :func:`stage_pid`, :func:`process_state`, :func:`alive`, :func:`status_mb`,
  :func:`open_files`, :func:`threads`, :func:`unix_connections`.

Tests wait on events (a record, a log line, a process state) with :func:`wait_for`; the
timeouts here only make a hung test fail, they bound no speed. A test of one's own sink::

    from ser_stream.testing import finish, records, start_up, talk, wait_ready

    def test_my_sink_sees_every_prediction(tmp_path):
        source, jsonl = talk(tmp_path / "talk.wav", 3), tmp_path / "s.jsonl"
        up = start_up("--source", f"file:{source}", "--vad", "webrtc",
                      "--publish", f"ipc://{tmp_path}/pub", jsonl=jsonl)
        wait_ready(up)
        ...  # start the sink on ipc://{tmp_path}/pub
        stderr = finish(up)
        assert up.returncode == 0, stderr
        predictions = records(jsonl, "prediction")  # what the sink should have seen

(:func:`talk`'s synthetic speech is speech to the WebRTC VAD, not to Silero.)
"""

from ser_stream.testing.audio import noise, room_tone, silence, talk, tone, voiced
from ser_stream.testing.cores import mutated_messages, run_core
from ser_stream.testing.procs import (
    alive,
    children,
    open_files,
    process_state,
    stage_pid,
    stage_pids,
    status_mb,
    threads,
    unix_connections,
)
from ser_stream.testing.session import (
    READY,
    SER_STREAM,
    finish,
    records,
    run_up,
    start_up,
    wait_for,
    wait_for_line,
    wait_for_log,
    wait_for_records,
    wait_ready,
)

__all__ = [
    "READY",
    "SER_STREAM",
    "alive",
    "children",
    "finish",
    "mutated_messages",
    "noise",
    "open_files",
    "process_state",
    "records",
    "room_tone",
    "run_core",
    "run_up",
    "silence",
    "stage_pid",
    "stage_pids",
    "start_up",
    "status_mb",
    "talk",
    "threads",
    "unix_connections",
    "tone",
    "voiced",
    "wait_for",
    "wait_for_line",
    "wait_for_log",
    "wait_for_records",
    "wait_ready",
]
