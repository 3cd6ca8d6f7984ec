"""`ser-stream up --source mic:pulse` through a real PulseAudio server and PortAudio.

Each test module run starts a private PulseAudio server (no sound card needed) with a null sink
whose monitor is remapped into a virtual microphone; `paplay` plays generated audio into the
sink while `up` records the microphone through PortAudio's ALSA backend and the ALSA `pulse`
plugin, exactly as on a desktop. Timing is measured on the wall clock, as a user hears it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.audio import load_audio
from ser_stream.stages.voicing import frame_db
from ser_stream.testing import room_tone
from tests.fixtures import spoken, stage_pid

SER_STREAM = str(Path(sys.executable).with_name("ser-stream"))
RATE = 16_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("pulseaudio") is None or shutil.which("paplay") is None,
        reason="needs pulseaudio and pulseaudio-utils (make test installs them)",
    ),
]

_PULSE_SCRIPT = """\
load-module module-native-protocol-unix socket={socket} auth-anonymous=1
load-module module-null-sink sink_name=virtual_speaker norewinds=1
load-module module-remap-source source_name=virtual_mic master=virtual_speaker.monitor
set-default-sink virtual_speaker
set-default-source virtual_mic
"""
# norewinds=1: without it a recorder that joins an idle null sink hears nothing for ~1.8 s.


@contextlib.contextmanager
def pulse_server():
    """A private PulseAudio server; yields the environment its clients need."""
    folder = tempfile.mkdtemp(prefix="ser-stream-pulse-")
    os.chmod(folder, 0o700)
    socket = os.path.join(folder, "native")
    script = os.path.join(folder, "virtual-mic.pa")
    Path(script).write_text(textwrap.dedent(_PULSE_SCRIPT.format(socket=socket)))
    server_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PULSE_SERVER", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY")
    }
    server_env.update(
        HOME=folder,
        XDG_RUNTIME_DIR=folder,
        PULSE_RUNTIME_PATH=folder,
        PULSE_STATE_PATH=os.path.join(folder, "state"),
        XDG_CONFIG_HOME=os.path.join(folder, "config"),
    )
    log = os.path.join(folder, "pulse.log")
    server = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--system=no", "-n", "-F", script,
         "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit=no", "--realtime=no",
         "--high-priority=no", "--no-cpu-limit", f"--log-target=file:{log}"],
        env=server_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    client_env = {**os.environ, "PULSE_SERVER": f"unix:{socket}"}
    deadline = time.monotonic() + 15
    while subprocess.run(["pactl", "info"], env=client_env, capture_output=True).returncode:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            tail = Path(log).read_text()[-400:] if Path(log).exists() else ""
            pytest.fail(f"PulseAudio did not start: {tail}")
        time.sleep(0.02)
    try:
        yield client_env
    finally:
        subprocess.run(["pactl", "exit"], env=client_env, capture_output=True)
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def audio_server():
    with pulse_server() as env:
        yield env


def last_loud(audio: np.ndarray, from_db: float = -40.0) -> float:
    """Seconds to the end of the last 10 ms of ``audio`` within ``from_db`` of its peak."""
    levels = [frame_db(audio[i : i + 160]) for i in range(0, audio.size, 160)]
    peak = max(levels)
    return (max(i for i, v in enumerate(levels) if v > peak + from_db) + 1) * 160 / RATE


def first_loud(audio: np.ndarray, from_db: float = -40.0) -> float:
    levels = [frame_db(audio[i : i + 160]) for i in range(0, audio.size, 160)]
    peak = max(levels)
    return min(i for i, v in enumerate(levels) if v > peak + from_db) * 160 / RATE


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """Three sentences 0.8 s apart, 2.5 s of -50 dBFS room, one more sentence; room throughout.

    Returns (path, seconds of the first speech onset, seconds of the last speech before the
    pause).
    """
    folder = tmp_path_factory.mktemp("talk")
    texts = [
        "I told you a hundred times, do not touch my things.",
        "Well, I suppose we could try again tomorrow.",
        "That is the best news I have heard all year!",
        "And after the pause I keep on talking.",
    ]
    sentences = []
    for i, text in enumerate(texts):
        path = spoken(folder / f"s{i}.wav", text)
        if path is None:
            pytest.skip("espeak-ng is not installed (make test installs it)")
        audio = load_audio(str(path))
        speech = audio[round(first_loud(audio) * RATE) : round(last_loud(audio) * RATE)]
        sentences.append(0.5 * speech / np.max(np.abs(speech)))
    gap = np.zeros(round(0.8 * RATE), dtype=np.float32)
    clean = np.concatenate(
        [np.zeros(RATE, dtype=np.float32), sentences[0], gap, sentences[1], gap, sentences[2]]
    )
    last_speech = clean.size / RATE
    pause = np.zeros(round(2.5 * RATE), dtype=np.float32)
    clean = np.concatenate([clean, pause, sentences[3], np.zeros(RATE, dtype=np.float32)])
    audio = clean + room_tone(clean.size / RATE, -50, seed=3)
    path = folder / "talk.wav"
    soundfile.write(path, audio, RATE, subtype="PCM_16")
    return path, 1.0, last_speech


class Tail:
    """Reads a JSON-lines file as it grows, noting when each record appeared."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[tuple[float, dict]] = []
        self._offset = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as handle:
            handle.seek(self._offset)
            while True:
                line = handle.readline()
                if not line.endswith("\n"):
                    break
                self._offset += len(line)
                self.records.append((time.time(), json.loads(line)))

    def arrivals(self, kind: str, event: str | None = None) -> list[tuple[float, dict]]:
        return [
            (at, r)
            for at, r in self.records
            if r["kind"] == kind and (event is None or r.get("event") == event)
        ]


def start_up(env: dict, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Tail, Path]:
    jsonl = tmp_path / "session.jsonl"
    plot = tmp_path / "session.png"
    up = subprocess.Popen(
        [SER_STREAM, "up", "--source", "mic:pulse", "--sink", "console",
         "--sink", f"jsonl:{jsonl}", "--plot", str(plot), "--publish",
         f"ipc://{tmp_path}/pub", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    ready = time.monotonic() + 120
    while time.monotonic() < ready:  # "ready" is printed once every stage runs
        line = up.stderr.readline()
        if "ready" in line or not line:
            break
    assert up.poll() is None, up.stderr.read()
    return up, Tail(jsonl), plot


def test_mic_session_through_a_real_audio_server(audio_server, talk, tmp_path):
    """Predictions while it plays; the first within 1 s of speech; the end 2 s after the last
    speech; nothing after the silence predicted; the summary printed and the plot written."""
    path, onset_s, last_speech_s = talk
    up, tail, plot = start_up(audio_server, tmp_path)
    try:
        time.sleep(0.5)  # the capture is recording: the room before anyone speaks
        played_at = time.time()
        player = subprocess.Popen(["paplay", str(path)], env=audio_server)
        while up.poll() is None and time.time() - played_at < 60:
            tail.poll()
            time.sleep(0.005)
        out, _ = up.communicate(timeout=30)
        tail.poll()
        finished_playing = played_at + soundfile.info(str(path)).duration
        player.wait(timeout=30)
    finally:
        for process in (up,):
            if process.poll() is None:
                process.kill()
    assert up.returncode == 0
    predictions = tail.arrivals("prediction")
    assert predictions and predictions[0][0] < finished_playing  # live, while it plays
    first_emotion_s = predictions[0][0] - (played_at + onset_s)
    assert first_emotion_s <= 1.0, first_emotion_s
    ((silence_at, silence),) = tail.arrivals("event", "silence")
    ends_after_s = silence_at - (played_at + last_speech_s)
    assert ends_after_s == pytest.approx(2.0, abs=0.25), ends_after_s
    assert all(r["t_end"] <= silence["t"] for _, r in predictions)
    assert not [r for _, r in tail.arrivals("event", "speech_start") if r["t"] > silence["t"]]
    end = tail.records[-1][1]
    assert end["kind"] == "session_end" and end["reason"] == "silence"
    assert end["summary"]["predicted"] == end["summary"]["windows"] == len(predictions)
    assert "session ended (silence)" in out and "dominant" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_the_same_talk_from_a_file_ends_the_same_way(talk, tmp_path):
    """`--source file:` on the same audio: the silence comes 2 s after the last speech too."""
    path, _, last_speech_s = talk
    jsonl = tmp_path / "file.jsonl"
    result = subprocess.run(
        [SER_STREAM, "up", "--source", f"file:{path}", "--fast", "--sink", f"jsonl:{jsonl}",
         "--publish", f"ipc://{tmp_path}/pub"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    (silence,) = [r for r in records if r.get("event") == "silence"]
    assert silence["t"] - last_speech_s == pytest.approx(2.0, abs=0.25)
    assert records[-1]["reason"] == "silence"
    predictions = [r for r in records if r["kind"] == "prediction"]
    assert predictions and all(r["t_end"] <= silence["t"] for r in predictions)


def test_a_stalled_vad_is_replaced_and_the_audio_lost_with_it_is_counted(
    audio_server, talk, tmp_path
):
    """The VAD stops (SIGSTOP) while the microphone records: its heartbeats stop, so it is
    replaced within seconds; the audio that was queued for it, or that the microphone could
    not hold meanwhile, is reported by gap events and counted in the summary."""
    path, _, _ = talk
    up, tail, _ = start_up(audio_server, tmp_path, "--no-stop-on-silence")
    player = subprocess.Popen(["paplay", str(path)], env=audio_server)
    vad = None
    try:
        # Let the VAD report where its stream is (its heartbeats, each second): a VAD that
        # dies before its first report leaves no point to count the loss from.
        time.sleep(3.0)
        vad = stage_pid(up.pid, "vad")
        os.kill(vad, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _alive(vad) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(vad), "the stopped VAD was not replaced"
        player.wait(timeout=60)
        time.sleep(3.0)
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
        tail.poll()
    finally:
        if vad is not None and _alive(vad):
            os.kill(vad, signal.SIGCONT)
        for process in (up, player):
            if process.poll() is None:
                process.kill()
    gaps = [r for _, r in tail.arrivals("event", "gap")]
    assert gaps and sum(g["dropped_s"] for g in gaps) > 0.5, gaps
    end = tail.records[-1][1]
    assert end["kind"] == "session_end"
    assert end["summary"]["restarts"] == {"vad": 1}
    assert end["summary"]["audio_dropped_s"] == pytest.approx(
        sum(g["dropped_s"] for g in gaps), abs=1e-3
    )


def test_a_killed_microphone_capture_is_restarted_and_the_outage_counted(
    audio_server, talk, tmp_path
):
    """kill -9 of the capture while it records: a new one records on, its audio placed after
    the outage, which a gap event reports; predictions go on after it."""
    path, _, _ = talk
    up, tail, _ = start_up(audio_server, tmp_path, "--no-stop-on-silence")
    player = subprocess.Popen(["paplay", str(path)], env=audio_server)
    try:
        time.sleep(1.5)
        capture = stage_pid(up.pid, "capture")
        os.kill(capture, signal.SIGKILL)
        killed_at = time.time()
        player.wait(timeout=60)
        time.sleep(3.0)
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
        tail.poll()
    finally:
        for process in (up, player):
            if process.poll() is None:
                process.kill()
    end = tail.records[-1][1]
    assert end["summary"]["restarts"] == {"capture.0": 1}
    gaps = [r for _, r in tail.arrivals("event", "gap")]
    assert gaps and 0.1 < sum(g["dropped_s"] for g in gaps) < 5.0, gaps
    later = [at for at, _ in tail.arrivals("prediction") if at > killed_at + 1.0]
    assert later, "predictions went on after the restart"
    assert end["summary"]["ledger"] == "balanced"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_unplugged_microphone_ends_the_session_with_its_message(talk, tmp_path):
    """The audio server goes away mid-session (as a USB microphone would): one line says so,
    the session ends with reason error and `up` exits 1."""
    path, _, _ = talk
    with pulse_server() as env:
        up, tail, _ = start_up(env, tmp_path, "--no-stop-on-silence")
        player = subprocess.Popen(["paplay", str(path)], env=env)
        time.sleep(3.0)
        subprocess.run(["pactl", "exit"], env=env, capture_output=True)
        gone = time.monotonic()
        try:
            out, _ = up.communicate(timeout=60)
        finally:
            for process in (up, player):
                if process.poll() is None:
                    process.kill()
    assert up.returncode == 1
    assert time.monotonic() - gone < 10.0
    tail.poll()
    (error,) = [r for _, r in tail.arrivals("error")]
    assert error["stage"] == "capture" and "stopped delivering audio" in error["reason"]
    assert tail.records[-1][1]["reason"] == "error"
    assert "error: microphone 'pulse' stopped delivering audio" in out
