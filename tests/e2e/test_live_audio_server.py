"""`ser-stream up --source mic:pulse` through a real PulseAudio server and PortAudio.

Each test module run starts a private PulseAudio server (no sound card needed) with a null sink
whose monitor is remapped into a virtual microphone; `paplay` plays generated audio into the
sink while `up` records the microphone through PortAudio's ALSA backend and the ALSA `pulse`
plugin, exactly as on a desktop. The tests wait on what the session writes and logs and
judge its records in stream time: how fast a loaded machine answers is the benchmarks' part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_stream.audio import load_audio
from ser_stream.stages.voicing import frame_db
from ser_stream.testing import (
    alive,
    records,
    room_tone,
    run_up,
    stage_pid,
    start_up,
    wait_for,
    wait_for_log,
    wait_for_records,
    wait_ready,
)
from tests.fixtures import spoken

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

    def answers() -> bool:
        assert server.poll() is None, "PulseAudio ended"
        return not subprocess.run(["pactl", "info"], env=client_env, capture_output=True).returncode

    try:
        wait_for(answers, 60, step_s=0.02)
    except (AssertionError, TimeoutError):
        server.kill()
        tail = Path(log).read_text()[-400:] if Path(log).exists() else ""
        pytest.fail(f"PulseAudio did not start: {tail}")
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

    Returns (path, seconds of the last speech before the pause).
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
    return path, last_speech


def start_mic_session(env: dict, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """`up` on the virtual microphone, once every stage runs: the process, its JSONL file."""
    jsonl = tmp_path / "session.jsonl"
    up = start_up("--source", "mic:pulse", "--sink", "console", "--plot",
                  str(tmp_path / "session.png"), *extra, jsonl=jsonl, env=env,
                  stdout=subprocess.PIPE)  # fmt: skip
    wait_ready(up)
    return up, jsonl


def events(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r["kind"] == "event" and r["event"] == name]


def test_mic_session_through_a_real_audio_server(audio_server, talk, tmp_path):
    """Predictions while it plays, the first on the first 0.8 s of speech; the end 2 s of
    stream time after the last speech; nothing after the silence predicted; the summary
    printed and the plot written."""
    path, _ = talk
    up, jsonl = start_mic_session(audio_server, tmp_path)
    player = subprocess.Popen(["paplay", str(path)], env=audio_server)
    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=60)
        live = player.poll() is None  # the first emotion came while the talk still played
        out, _ = up.communicate(timeout=120)
        player.wait(timeout=60)
    finally:
        for process in (up, player):
            if process.poll() is None:
                process.kill()
    assert up.returncode == 0
    assert live, "no emotion while the talk played"
    rows = records(jsonl)
    predictions = [r for r in rows if r["kind"] == "prediction"]
    # the first emotion: an early look at the first sentence, before that sentence ends
    assert predictions[0]["t_start"] < events(rows, "speech_end")[0]["t"]
    assert predictions[0]["t_end"] - predictions[0]["t_start"] == pytest.approx(0.8, abs=0.01)
    (silence,) = events(rows, "silence")
    assert silence["duration_s"] == pytest.approx(2.0)
    last_voiced = silence["t"] - silence["duration_s"]
    assert max(r["t"] for r in events(rows, "speech_start")) < last_voiced
    assert all(r["t_end"] <= silence["t"] for r in predictions)
    assert not [r for r in events(rows, "speech_start") if r["t"] > silence["t"]]
    end = rows[-1]
    assert end["kind"] == "session_end" and end["reason"] == "silence"
    assert end["summary"]["predicted"] == end["summary"]["windows"] == len(predictions)
    assert "session ended (silence)" in out and "dominant" in out
    assert (tmp_path / "session.png").read_bytes()[:4] == b"\x89PNG"


def test_the_same_talk_from_a_file_ends_the_same_way(talk, tmp_path):
    """`--source file:` on the same audio: the silence comes 2 s after the last speech too."""
    path, last_speech_s = talk
    jsonl = tmp_path / "file.jsonl"
    result = run_up("--source", f"file:{path}", "--fast", jsonl=jsonl)
    assert result.returncode == 0, result.stderr
    rows = records(jsonl)
    (silence,) = events(rows, "silence")
    assert silence["t"] - last_speech_s == pytest.approx(2.0, abs=0.25)
    assert rows[-1]["reason"] == "silence"
    predictions = [r for r in rows if r["kind"] == "prediction"]
    assert predictions and all(r["t_end"] <= silence["t"] for r in predictions)


def test_a_stalled_vad_is_replaced_and_the_audio_lost_with_it_is_counted(
    audio_server, talk, tmp_path
):
    """The VAD stops (SIGSTOP) while the microphone records: its heartbeats stop, so it is
    replaced; the audio that was queued for it, or that the microphone could not hold
    meanwhile, is reported by gap events and counted in the summary."""
    path, _ = talk
    up, jsonl = start_mic_session(audio_server, tmp_path, "--no-stop-on-silence")
    player = subprocess.Popen(["paplay", str(path)], env=audio_server)
    vad = None
    try:
        # An emotion: the VAD has been through the stream (and reported where it is, in its
        # heartbeats): a VAD that dies before its first report leaves no point to count from.
        wait_for_records(jsonl, kind="prediction", timeout_s=60)
        vad = stage_pid(up.pid, "vad")
        os.kill(vad, signal.SIGSTOP)
        wait_for_log(up, "stage hung, replacing it", stage="vad")
        wait_for(lambda: not alive(vad), 60)
        wait_for_records(jsonl, kind="event", where=lambda r: r["event"] == "gap")
        player.wait(timeout=60)
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
    finally:
        if vad is not None and alive(vad):
            os.kill(vad, signal.SIGCONT)
        for process in (up, player):
            if process.poll() is None:
                process.kill()
    rows = records(jsonl)
    gaps = events(rows, "gap")
    assert gaps and sum(g["dropped_s"] for g in gaps) > 0.5, gaps
    end = rows[-1]
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
    path, _ = talk
    up, jsonl = start_mic_session(audio_server, tmp_path, "--no-stop-on-silence")
    player = subprocess.Popen(["paplay", str(path)], env=audio_server)

    def predicted_after_the_gap() -> bool:
        kinds = [r.get("event", r["kind"]) for r in records(jsonl)]
        return "gap" in kinds and "prediction" in kinds[kinds.index("gap") :]

    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=60)  # it records and predicts
        os.kill(stage_pid(up.pid, "capture"), signal.SIGKILL)
        wait_for(predicted_after_the_gap, 60)
        player.wait(timeout=60)
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
    finally:
        for process in (up, player):
            if process.poll() is None:
                process.kill()
    rows = records(jsonl)
    end = rows[-1]
    assert end["summary"]["restarts"] == {"capture.0": 1}
    gaps = events(rows, "gap")
    assert gaps and sum(g["dropped_s"] for g in gaps) > 0.1, gaps  # the outage, reported
    assert end["summary"]["ledger"] == "balanced"


def test_an_unplugged_microphone_ends_the_session_with_its_message(talk, tmp_path):
    """The audio server goes away mid-session (as a USB microphone would): one line says so,
    the session ends with reason error and `up` exits 1."""
    path, _ = talk
    with pulse_server() as env:
        up, jsonl = start_mic_session(env, tmp_path, "--no-stop-on-silence")
        player = subprocess.Popen(["paplay", str(path)], env=env)
        try:
            wait_for_records(jsonl, kind="prediction", timeout_s=60)  # it records and predicts
            subprocess.run(["pactl", "exit"], env=env, capture_output=True)
            out, _ = up.communicate(timeout=60)
        finally:
            for process in (up, player):
                if process.poll() is None:
                    process.kill()
    assert up.returncode == 1
    rows = records(jsonl)
    (error,) = [r for r in rows if r["kind"] == "error"]
    assert error["stage"] == "capture" and "stopped delivering audio" in error["reason"]
    assert rows[-1]["reason"] == "error"
    assert "error: microphone 'pulse' stopped delivering audio" in out
