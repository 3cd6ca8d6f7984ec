"""VAD stage: audio in, speech windows, noise and speech events out.

A voicing engine (WebRTC VAD or Silero VAD, see :mod:`ser_stream.stages.voicing`) decides
per frame, gated by the stream's noise floor so room noise is never speech; a trigger ring
and a hangover smooth the decisions into utterances. Pipeline streams start each utterance
with short, growing windows (a first emotion after ``first_window_s``); during long speech
the core emits sliding windows; at the end of an utterance it emits the tail. Non-speech
audio goes downstream as :class:`Noise` for the denoiser. After speech, ``silence`` fires
once no voiced frame came for ``silence_event_s``; before any speech, ``no_speech`` fires
after ``no_speech_timeout_s`` if set.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields, replace

import numpy as np

from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream, Event, Kind, Noise, Window
from ser_stream.stage import StageContext, StageSpec
from ser_stream.stages.voicing import (
    ENGINES,
    FrameVoicing,
    NoiseFloor,
    SileroVoicing,
    WebRTCVoicing,
    frame_db,
    map_large_buffers,
)

__all__ = [
    "SPEC",
    "VADConfig",
    "VADCore",
    "VADStream",
    "Output",
    "sliding_spans",
    "vad_config",
]

Output = Window | Noise | Event


@dataclass(frozen=True, slots=True)
class VADConfig:
    """Settings of the VAD core; every duration carries its unit.

    Attributes:
        engine: the voicing engine, ``webrtc`` or ``silero``; the model artifact names the
            one its training windows were cut with, and every mode follows it.
        aggressiveness: WebRTC VAD mode, 0 (keeps most audio) to 3 (keeps least).
        frame_ms: WebRTC analysis frame, 10, 20 or 30 ms (Silero's frame is 32 ms).
        silero_threshold: Silero speech probability from which a frame is speech.
        energy_margin_db: WebRTC only: a voiced frame must stand this far above the stream's
            noise floor (``None``: no gate). Silero judges the room by itself: a gate only
            costs it speech (``benchmarks/bench_vad.py``).
        floor_memory_s: the noise floor is the quietest level of this many recent seconds.
        trigger_ms: span of recent frames that decides that speech started (and pre-roll kept).
        trigger_ratio: share of voiced frames within ``trigger_ms`` that starts speech.
        hangover_ms: run of unvoiced frames that ends an utterance.
        tail_pad_ms: audio kept after the last voiced frame of an utterance.
        min_speech_ms: speech must last this long to count (shorter blips are noise); the
            ``speech_start`` event comes once it has.
        first_window_s: a pipeline stream's first window of an utterance comes once this much
            speech was heard; the next ones double in length until ``window_s`` (``None``:
            the first window is a full one).
        window_s: length of an analysis window.
        hop_s: step between sliding windows during long speech.
        noise_chunk_s: non-speech audio is handed downstream in chunks of this length.
        silence_event_s: after speech, a ``silence`` event fires once no voiced frame came
            for this long (``None``: never).
        no_speech_timeout_s: before any speech, a ``no_speech`` event fires after this long
            (``None``: wait for speech forever).
    """

    engine: str = "webrtc"
    aggressiveness: int = 2
    frame_ms: int = 30
    silero_threshold: float = 0.5
    energy_margin_db: float | None = 6.0
    floor_memory_s: float = 2.0
    trigger_ms: int = 150
    trigger_ratio: float = 0.6
    hangover_ms: int = 300
    tail_pad_ms: int = 90
    min_speech_ms: int = 250
    first_window_s: float | None = None
    window_s: float = 3.0
    hop_s: float = 1.5
    noise_chunk_s: float = 0.5
    silence_event_s: float | None = 2.0
    no_speech_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"VAD engine {self.engine!r} is unknown; pick one of {ENGINES}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise InputError(f"VAD aggressiveness {self.aggressiveness} is not 0-3; pick 0-3")
        if self.frame_ms not in (10, 20, 30):
            raise InputError(f"VAD frame of {self.frame_ms} ms is not 10, 20 or 30 ms")
        if not 0.0 < self.trigger_ratio <= 1.0:
            raise InputError(f"trigger_ratio {self.trigger_ratio} must be in (0, 1]")
        if self.window_s <= 0 or self.hop_s <= 0:
            raise InputError("window_s and hop_s must be positive")
        if min(self.trigger_ms, self.hangover_ms) < self.frame_ms:
            raise InputError("trigger_ms and hangover_ms must be at least one frame long")
        if self.hop_s > self.window_s:
            raise InputError(f"hop_s {self.hop_s} exceeds window_s {self.window_s}; lower it")
        if min(self.tail_pad_ms, self.min_speech_ms) < 0 or self.noise_chunk_s <= 0:
            raise InputError("tail_pad_ms and min_speech_ms must be >= 0, noise_chunk_s > 0")
        for name in ("silence_event_s", "no_speech_timeout_s", "first_window_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} {value} must be positive or None")
        if self.energy_margin_db is not None and self.energy_margin_db < 0:
            raise InputError(f"energy_margin_db {self.energy_margin_db} must be >= 0 or None")
        if self.floor_memory_s <= 0:
            raise InputError(f"floor_memory_s {self.floor_memory_s} must be positive")


def sliding_spans(n_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Return ``(start, end)`` sample spans covering ``n_samples`` as the VAD core would.

    Windows of ``window`` samples every ``hop`` samples while they fit; then one last window
    ending at ``n_samples`` if the end is not covered yet. Audio shorter than a window is
    one span of its own length.
    """
    if n_samples <= window:
        return [(0, n_samples)] if n_samples > 0 else []
    spans = [(start, start + window) for start in range(0, n_samples - window + 1, hop)]
    if spans[-1][1] < n_samples:
        spans.append((n_samples - window, n_samples))
    return spans


class VADCore:
    """Pure and stateful: no sockets, clock or logging; one object per stream.

    Feed any chunking of a stream to :meth:`push` and call :meth:`flush` at its end: the
    windows, noise and events are the same whatever the chunk sizes.
    """

    def __init__(self, config: VADConfig | None = None, sample_rate: int = 16_000) -> None:
        self.config = config or VADConfig()
        self.sample_rate = sample_rate
        rate = sample_rate
        cfg = self.config
        self._engine = self._make_engine()
        self._frame = self._engine.frame_samples
        frame_ms = 1000 * self._frame / rate
        self._trigger_frames = max(1, round(cfg.trigger_ms / frame_ms))
        self._hangover_frames = max(1, round(cfg.hangover_ms / frame_ms))
        self._tail_pad = rate * cfg.tail_pad_ms // 1000
        self._min_speech = rate * cfg.min_speech_ms // 1000
        self._window = round(rate * cfg.window_s)
        self._hop = round(rate * cfg.hop_s)
        self._first_window = (
            None if cfg.first_window_s is None else round(rate * cfg.first_window_s)
        )
        self._noise_chunk = max(1, round(rate * cfg.noise_chunk_s))
        self._silence_event = _samples(cfg.silence_event_s, rate)
        self._no_speech_timeout = _samples(cfg.no_speech_timeout_s, rate)
        self.origin = 0
        """Stream time of the first sample pushed, in samples (times out count from it)."""
        self.reset()

    def _make_engine(self) -> FrameVoicing:
        cfg = self.config
        if cfg.engine == "silero":
            return SileroVoicing(self.sample_rate, cfg.silero_threshold)
        return WebRTCVoicing(self.sample_rate, cfg.frame_ms, cfg.aggressiveness)

    @property
    def windows_emitted(self) -> int:
        """Windows handed out since the start of the stream."""
        return self._window_index

    @property
    def seconds(self) -> float:
        """Stream time of the end of the audio consumed so far, in seconds."""
        return self._seconds(self._position + self._pending.size)

    def reset(self) -> None:
        """Forget the stream: the next sample pushed is time 0."""
        self._engine.reset()
        self._floor = NoiseFloor(self._frame / self.sample_rate, self.config.floor_memory_s)
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0  # samples consumed into frames so far
        self._ring: deque[tuple[np.ndarray, bool]] = deque(maxlen=self._trigger_frames)
        self._ring_start = 0
        self._in_speech = False
        self._new_utterance(0)
        self._utterance_index = 0
        self._window_index = 0
        self._noise: list[np.ndarray] = []
        self._noise_len = 0
        self._noise_start = 0
        self._silence_start: int | None = None
        self._silence_reported = False
        self._no_speech_reported = False

    def close(self) -> None:
        """The stream is over: let go of its voicing engine (a Silero network is reused).

        Call it after :meth:`flush`, or instead of it for a stream that was given up; the
        core takes no more audio. A core never closed frees everything when collected.
        """
        self._engine.close()
        self._pending = np.zeros(0, dtype=np.float32)
        self._ring.clear()
        self._utterance = []
        self._noise = []

    def push(self, samples: np.ndarray) -> list[Output]:
        """Take the next chunk of mono float32 audio; return what it completes."""
        array = np.asarray(samples)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
            raise InputError(
                f"VAD takes mono float audio, got {array.dtype} of shape {array.shape}; "
                "convert with ser_stream.audio.to_canonical first"
            )
        if array.size and not np.all(np.isfinite(array)):
            raise InputError("audio chunk contains NaN or infinite samples; fix the source")
        # A copy: callers (audio callbacks) may reuse their buffer after push returns.
        chunk = array.astype(np.float32, copy=True)
        buffer = np.concatenate([self._pending, chunk]) if self._pending.size else chunk
        outputs: list[Output] = []
        n_frames = buffer.size // self._frame
        for i in range(n_frames):
            frame = buffer[i * self._frame : (i + 1) * self._frame]
            self._step(frame, outputs)
        self._pending = buffer[n_frames * self._frame :].copy()
        return outputs

    def flush(self) -> list[Output]:
        """End of stream: close an open utterance and hand over the remaining noise."""
        outputs: list[Output] = []
        rest = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        if self._in_speech:
            if rest.size:
                self._append_speech(rest, voiced=False)
            self._end_utterance(outputs)
        else:
            start = self._ring_start
            for frame, _ in self._ring:
                self._add_noise(frame, start, outputs)
                start += frame.size
            self._ring.clear()
            if rest.size:
                self._add_noise(rest, self._position, outputs)
        self._position += rest.size
        self._emit_noise(outputs)
        return outputs

    # -- frame logic ---------------------------------------------------------------------

    @property
    def frame_samples(self) -> int:
        """Samples per frame the voicing engine decides on."""
        return self._frame

    def voiced_frame(self, frame: np.ndarray) -> bool:
        """Decide one frame of ``frame_samples`` (engine and noise floor gate).

        Updates the noise floor: feed frames in stream order. :meth:`push` calls it.
        """
        margin = self.config.energy_margin_db
        if margin is not None and self.config.engine == "webrtc":
            level = frame_db(frame)
            floor = self._floor.update(level)
            if level < floor + margin:
                return False  # the room, however the engine judges it
        return self._engine.is_speech(frame)

    def _step(self, frame: np.ndarray, outputs: list[Output]) -> None:
        voiced = self.voiced_frame(frame)
        if self._in_speech:
            self._append_speech(frame, voiced)
            self._emit_sliding(outputs)
            if self._unvoiced_run >= self._hangover_frames:
                self._end_utterance(outputs)
        else:
            if len(self._ring) == self._ring.maxlen:
                old, _ = self._ring.popleft()
                self._add_noise(old, self._ring_start, outputs)
                self._ring_start += old.size
            if not self._ring:
                self._ring_start = self._position
            self._ring.append((frame, voiced))
            # Silence lasts until the first voiced frame still in the trigger ring (a ring
            # that never triggers never was speech), or until now.
            first_voiced = next((i for i, (_, v) in enumerate(self._ring) if v), len(self._ring))
            self._track_silence(self._ring_start + first_voiced * self._frame, outputs)
            voiced_count = sum(v for _, v in self._ring)
            if voiced_count >= self.config.trigger_ratio * self._trigger_frames:
                self._start_utterance(outputs)
        self._position += frame.size

    def _start_utterance(self, outputs: list[Output]) -> None:
        self._emit_noise(outputs)
        self._in_speech = True
        self._new_utterance(self._ring_start)
        ring = list(self._ring)
        self._ring.clear()
        for frame, voiced in ring:
            self._append_speech(frame, voiced)
        self._emit_sliding(outputs)

    def _new_utterance(self, start: int) -> None:
        self._utterance: list[np.ndarray] = []
        self._utterance_len = 0
        self._utterance_start = start
        self._last_voiced_end = 0
        self._voiced_len = 0
        self._covered = 0  # utterance samples up to which windows were emitted
        self._next_early = self._first_window
        self._dropped = 0  # utterance samples already released from the front of the buffer
        self._unvoiced_run = 0
        self._next_window = 0
        self._windows_in_utterance = 0
        self._announced = False

    def _append_speech(self, frame: np.ndarray, voiced: bool) -> None:
        self._utterance.append(frame)
        self._utterance_len += frame.size
        if voiced:
            self._voiced_len += frame.size
            self._last_voiced_end = self._utterance_len
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1

    def _speech_len(self) -> int:
        """Utterance audio known to be speech: up to the last voiced frame plus the tail pad."""
        return min(self._utterance_len, self._last_voiced_end + self._tail_pad)

    def _emit_sliding(self, outputs: list[Output]) -> None:
        if not self._announced and self._voiced_len >= self._min_speech:
            # Announced only once enough voiced audio was heard: blips never become speech.
            outputs.append(Event("speech_start", self._seconds(self._utterance_start)))
            self._announced = True
            self._silence_start = None
        if not self._announced:
            return
        # Windows never reach past the speech known so far, so none runs into the hangover.
        limit = self._speech_len()
        early = self._next_early
        while early is not None and early < self._window and early <= limit:
            # Early windows start at the utterance; nothing was dropped from its front yet.
            self._emit_window(self._utterance_audio()[:early], 0, final=False, out=outputs)
            early *= 2
        self._next_early = early
        emitted = False
        while limit - self._next_window >= self._window:
            audio = self._utterance_audio()
            start = self._next_window - self._dropped
            window = audio[start : start + self._window]
            self._emit_window(window, self._next_window, final=False, out=outputs)
            self._next_window += self._hop
            emitted = True
        if emitted:
            # Later windows start at or after next_window - hop: the rest can go, which keeps
            # memory bounded during endless speech.
            drop = max(0, self._next_window - self._hop) - self._dropped
            self._utterance = [self._utterance_audio()[drop:]]
            self._dropped += drop

    def _end_utterance(self, outputs: list[Output]) -> None:
        self._emit_sliding(outputs)
        audio = self._utterance_audio()
        keep = self._speech_len()
        speech, trailing = audio[: keep - self._dropped], audio[keep - self._dropped :]
        self._in_speech = False
        self._utterance = []
        self._utterance_len = 0
        if not self._announced:
            self._add_noise(audio, self._utterance_start, outputs)
            return
        if self._windows_in_utterance == 0:
            self._emit_window(speech, 0, final=True, out=outputs)
        elif self._covered < keep:
            start = max(0, keep - self._window)
            self._emit_window(speech[start - self._dropped :], start, final=True, out=outputs)
        end = self._utterance_start + keep
        outputs.append(Event("speech_end", self._seconds(end)))
        self._utterance_index += 1
        # Silence is counted from the last voiced frame, not from the padded end.
        self._silence_start = self._utterance_start + self._last_voiced_end
        self._silence_reported = False
        if trailing.size:
            self._add_noise(trailing, end, outputs)

    def _emit_window(
        self, audio: np.ndarray, start: int, *, final: bool, out: list[Output]
    ) -> None:
        t0 = self._utterance_start + start
        out.append(
            Window(
                samples=audio.copy(),
                t_start=self._seconds(t0),
                t_end=self._seconds(t0 + audio.size),
                utterance=self._utterance_index,
                index=self._window_index,
                final=final,
            )
        )
        self._window_index += 1
        self._windows_in_utterance += 1
        self._covered = max(self._covered, start + audio.size)

    def _utterance_audio(self) -> np.ndarray:
        if len(self._utterance) > 1:
            self._utterance = [np.concatenate(self._utterance)]
        return self._utterance[0] if self._utterance else np.zeros(0, dtype=np.float32)

    def _add_noise(self, audio: np.ndarray, start: int, outputs: list[Output]) -> None:
        if not self._noise:
            self._noise_start = start
        self._noise.append(audio)
        self._noise_len += audio.size
        if self._noise_len >= self._noise_chunk:
            self._emit_noise(outputs)

    def _emit_noise(self, outputs: list[Output]) -> None:
        if not self._noise:
            return
        audio = np.concatenate(self._noise)
        start = self._noise_start
        outputs.append(Noise(audio, self._seconds(start), self._seconds(start + audio.size)))
        self._noise = []
        self._noise_len = 0

    def _track_silence(self, now: int, outputs: list[Output]) -> None:
        if self._silence_start is None:
            self._track_no_speech(now, outputs)
            return
        if self._silence_event is None or self._silence_reported:
            return
        if now - self._silence_start >= self._silence_event:
            t = self._seconds(self._silence_start + self._silence_event)
            duration = {"duration_s": self._silence_event / self.sample_rate}
            outputs.append(Event("silence", t, duration))
            self._silence_reported = True

    def _track_no_speech(self, now: int, outputs: list[Output]) -> None:
        if self._no_speech_timeout is None or self._no_speech_reported:
            return
        if self._utterance_index == 0 and now >= self._no_speech_timeout:
            t = self._seconds(self._no_speech_timeout)
            duration = self._no_speech_timeout / self.sample_rate
            outputs.append(Event("no_speech", t, {"duration_s": duration}))
            self._no_speech_reported = True

    def _seconds(self, samples: int) -> float:
        return (self.origin + samples) / self.sample_rate


def _samples(seconds: float | None, rate: int) -> int | None:
    return None if seconds is None else round(rate * seconds)


class VADStream:
    """The VAD core as one stream's processor: 16 kHz audio in; windows, noise, events out.

    With ``stop_on_silence``, the first ``silence`` event after speech (or a ``no_speech``
    event, when a timeout for it is set) ends the stream.
    """

    def __init__(self, config: VADConfig, *, stop_on_silence: bool) -> None:
        self._core = VADCore(config, SAMPLE_RATE)
        self._stop_on_silence = stop_on_silence
        self._next: int | None = None  # stream time of the next sample due, in samples
        self.repeated_s = 0.0
        """Audio that came twice (a restarted capture resends a little) and was skipped."""

    @property
    def position_s(self) -> float | None:
        """Stream time of the next sample due (None before any audio)."""
        return None if self._next is None else self._next / SAMPLE_RATE

    def resume(self, position_s: float) -> None:
        """Go on from ``position_s``, where a VAD that died got to.

        Audio after it that never comes is then lost (a ``gap``), not the stream's start.
        """
        self._core.origin = self._next = round(position_s * SAMPLE_RATE)

    def push(self, body: Audio) -> list[Output | EndOfStream]:
        """Take one audio chunk, placed by its own timestamp.

        Stream time comes from the audio (a VAD restarted mid-stream goes on at the right
        time): audio that overlaps what the stream already had is skipped, and a jump
        forward is audio lost upstream, reported by a ``gap`` event with ``dropped_s``.
        """
        if body.sample_rate != SAMPLE_RATE:
            raise InputError(
                f"audio at {body.sample_rate} Hz reached the VAD; capture must send "
                f"{SAMPLE_RATE} Hz (it converts any source)"
            )
        samples = np.asarray(body.samples)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        start = round(body.t_start * SAMPLE_RATE)
        if self._next is None:
            self._core.origin = self._next = start
        outputs: list[Output] = []
        if start < self._next:
            skip = min(self._next - start, samples.size)
            self.repeated_s += skip / SAMPLE_RATE
            samples, start = samples[skip:], start + skip
            if not samples.size:
                return []
        elif start > self._next:
            lost = start - self._next
            outputs.append(
                Event("gap", self._next / SAMPLE_RATE, {"dropped_s": lost / SAMPLE_RATE})
            )
            self._core.origin += lost  # later times stay the audio's own
        self._next = start + samples.size
        return self._stop_if_silent([*outputs, *self._core.push(samples)])

    def flush(self) -> list[Output | EndOfStream]:
        """End of the stream: close the open utterance, then count the windows."""
        return [*self._core.flush(), self._count()]

    def close(self) -> None:
        """The stream ended (flushed, or stopped on silence): free what it holds."""
        self._core.close()

    def _count(self) -> Event:
        # Downstream accounting: every window the VAD emitted must end up predicted or dropped.
        return Event("windows", self._core.seconds, {"count": self._core.windows_emitted})

    def _stop_if_silent(self, outputs: list[Output]) -> list[Output | EndOfStream]:
        if self._stop_on_silence:
            for i, item in enumerate(outputs):
                if isinstance(item, Event) and item.name in ("silence", "no_speech"):
                    return [*outputs[: i + 1], self._count(), EndOfStream(item.name)]
        return outputs


STREAM_DEFAULTS = {"first_window_s": 0.8}
"""What a pipeline stream adds to the artifact's VAD settings: a first emotion within a second.

Presentation only, the same for every stream of ``up`` (paced or ``--fast``) and ``serve``:
the engine and every setting that decides what is speech are the artifact's, as in
``predict`` and training, unless the user names them (``--vad``, ``[stages.vad]``)."""


def vad_config(context: StageContext) -> tuple[VADConfig, float | None]:
    """The VAD settings of a stage: the artifact's, with the stream defaults and the options.

    Returns the config and the silence that ends a stream (None: never).

    Raises:
        InputError: an unknown setting or a value out of range, said in one line.
    """
    options = dict(context.options)
    options = {**STREAM_DEFAULTS, **options}
    if not options["first_window_s"]:
        options["first_window_s"] = None  # 0 (or false in TOML): full windows from the start
    stop_after = options.pop("stop_on_silence_s", 2.0)
    known = {f.name for f in fields(VADConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"VAD settings {unknown} are unknown; known: {sorted(known)}")
    try:
        config = replace(context.artifact.analysis.vad_with_windowing(), **options)
        if stop_after is not None:
            if isinstance(stop_after, bool) or not isinstance(stop_after, int | float):
                raise InputError(f"stop_on_silence_s {stop_after!r} is not a number of seconds")
            config = replace(config, silence_event_s=float(stop_after))
    except TypeError as exc:  # a value of the wrong type, compared in the checks
        raise InputError(f"VAD settings {options}: a value has the wrong type ({exc})") from None
    return config, stop_after


def _build(context: StageContext) -> VADStream:
    config, stop_after = vad_config(context)
    if config.engine == "silero":
        map_large_buffers()  # so that an ended stream's network memory goes back at once
    return VADStream(config, stop_on_silence=stop_after is not None)


SPEC = StageSpec(
    name="vad",
    accepts=frozenset({Kind.AUDIO}),
    emits=frozenset({Kind.WINDOW, Kind.NOISE, Kind.EVENT, Kind.END_OF_STREAM}),
    build=_build,
    description="voice activity: speech windows, noise and speech events",
    batches=True,  # 30 ms frames: one hop to the worker thread per burst, not per frame
)
