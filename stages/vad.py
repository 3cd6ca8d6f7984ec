"""VAD stage: audio in, speech windows, noise and speech events out.

A voicing engine (WebRTC VAD or Silero VAD, see :mod:`ser_stream.stages.voicing`) decides
per frame, gated by the stream's noise floor so room noise is never speech; a trigger ring
and a hangover smooth the decisions into utterances. Pipeline streams start each utterance
with short, growing windows (a first emotion after ``first_window_s``); during long speech
the core emits sliding windows; at the end of an utterance it emits the tail. Non-speech
audio goes downstream as :class:`Noise` for the denoiser. After speech, ``silence`` fires
once no voiced frame came for ``silence_event_s``; before any speech, ``no_speech`` fires
after ``no_speech_timeout_s`` if set.

The core's state lives in :mod:`ser_stream.stages.vad_state`; what stays here (some 440
lines) is what training, analysis and the bench import by this module's name: the
config, the core, the window spans and the stage spec.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from ser_stream.adapter import AudioTimeline, CoreStream
from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.heap import map_large_buffers
from ser_stream.messages import Audio, Event, Kind, Noise, Window
from ser_stream.settings import FIRST_WINDOW_S, FRAME_MS, STOP_ON_SILENCE_S
from ser_stream.stage import StageContext, StageSpec
from ser_stream.stages.vad_state import NoiseChunks, SilenceTracker, TriggerRing, Utterance
from ser_stream.stages.voicing import (
    ENGINES,
    FrameVoicing,
    NoiseFloor,
    SileroVoicing,
    WebRTCVoicing,
    frame_levels,
)

__all__ = [
    "SPEC",
    "VADConfig",
    "VADCore",
    "Output",
    "sliding_spans",
    "vad_config",
    "vad_stream",
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
    frame_ms: int = FRAME_MS
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
    silence_event_s: float | None = STOP_ON_SILENCE_S
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
    windows, noise and events are the same whatever the chunk sizes. What it keeps of the
    stream is in small parts (see :mod:`ser_stream.stages.vad_state`).
    """

    def __init__(self, config: VADConfig | None = None, sample_rate: int = SAMPLE_RATE) -> None:
        self.config = config or VADConfig()
        self.sample_rate = sample_rate
        rate = sample_rate
        cfg = self.config
        self._engine = self._make_engine()
        self._frame = self._engine.frame_samples
        frame_ms = 1000 * self._frame / rate
        self._trigger_frames = max(1, round(cfg.trigger_ms / frame_ms))
        self._hangover_frames = max(1, round(cfg.hangover_ms / frame_ms))
        self._ring = TriggerRing(self._trigger_frames)
        self._utterance = Utterance(
            window=round(rate * cfg.window_s),
            hop=round(rate * cfg.hop_s),
            first_window=None if cfg.first_window_s is None else round(rate * cfg.first_window_s),
            min_speech=rate * cfg.min_speech_ms // 1000,
            tail_pad=rate * cfg.tail_pad_ms // 1000,
            seconds=self._seconds,
        )
        self._noise = NoiseChunks(max(1, round(rate * cfg.noise_chunk_s)))
        self._silence = SilenceTracker(
            _samples(cfg.silence_event_s, rate), _samples(cfg.no_speech_timeout_s, rate)
        )
        self.reset()

    def _make_engine(self) -> FrameVoicing:
        cfg = self.config
        if cfg.engine == "silero":
            return SileroVoicing(self.sample_rate, cfg.silero_threshold)
        return WebRTCVoicing(self.sample_rate, cfg.frame_ms, cfg.aggressiveness)

    @property
    def windows_emitted(self) -> int:
        """Windows handed out since the start of the stream."""
        return self._utterance.windows

    @property
    def seconds(self) -> float:
        """Stream time of the end of the audio consumed so far, in seconds."""
        return self._seconds(self._position + self._pending.size)

    def place(self, sample: int) -> None:
        """The next sample pushed is at stream time ``sample`` (in samples).

        Before any audio it says where the stream starts; later, a jump forward is audio
        lost upstream, and the times of what follows stay the audio's own.
        """
        self._origin = sample - (self._position + self._pending.size)

    def windows_event(self) -> Event:
        """The ``windows`` event: how many windows the stream got, up to where."""
        return Event("windows", self.seconds, {"count": self.windows_emitted})

    def reset(self) -> None:
        """Forget the stream: the next sample pushed is time 0."""
        self._origin = 0  # stream time of the first sample pushed, in samples
        self._position = 0  # samples consumed into frames so far
        self._pending = np.zeros(0, dtype=np.float32)  # less than a frame, not consumed yet
        self._engine.reset()
        self._floor = NoiseFloor(self._frame / self.sample_rate, self.config.floor_memory_s)
        self._ring.reset()
        self._utterance.reset()
        self._noise.reset()
        self._silence.reset()

    def close(self) -> None:
        """The stream is over: let go of its voicing engine (a Silero network is reused).

        Call it after :meth:`flush`, or instead of it for a stream that was given up; the
        core takes no more audio. A core never closed frees everything when collected.
        """
        self._engine.close()
        self._pending = np.zeros(0, dtype=np.float32)
        self._ring.reset()
        self._utterance.frames = []
        self._noise.reset()

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
        if n_frames:
            frames = buffer[: n_frames * self._frame].reshape(n_frames, self._frame)
            # The chunk's frames are decided in one call of the engine, then stepped in order.
            for frame, voiced in zip(frames, self.voiced_frames(frames), strict=True):
                self._step(frame, voiced, outputs)
        self._pending = buffer[n_frames * self._frame :].copy()
        return outputs

    def flush(self) -> list[Output]:
        """End of stream: close an open utterance and hand over the remaining noise."""
        outputs: list[Output] = []
        rest = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        if self._utterance.active:
            if rest.size:
                self._utterance.append(rest, voiced=False)
            self._end_utterance(outputs)
        else:
            start = self._ring.start
            for frame, _ in self._ring.take():
                self._add_noise(frame, start, outputs)
                start += frame.size
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
        """Decide one frame of ``frame_samples`` (see :meth:`voiced_frames`)."""
        return self.voiced_frames(frame[np.newaxis])[0]

    def voiced_frames(self, frames: np.ndarray) -> list[bool]:
        """Decide a run of frames (frames x ``frame_samples``): engine and noise floor gate.

        Updates the noise floor: feed frames in stream order. :meth:`push` calls it. Frames
        the gate rejects never reach the engine (WebRTC adapts to what it hears).
        """
        margin = self.config.energy_margin_db
        if margin is None or self.config.engine != "webrtc":
            return self._engine.speech(frames)
        floor = self._floor
        # below the floor's margin: the room, however the engine judges it
        heard = [level >= floor.update(level) + margin for level in frame_levels(frames)]
        if all(heard):
            return self._engine.speech(frames)
        if not any(heard):
            return heard
        decided = iter(self._engine.speech(frames[heard]))
        return [next(decided) if passed else False for passed in heard]

    def _step(self, frame: np.ndarray, voiced: bool, outputs: list[Output]) -> None:
        utterance = self._utterance
        if utterance.active:
            utterance.append(frame, voiced)
            self._emit_sliding(outputs)
            if utterance.unvoiced_run >= self._hangover_frames:
                self._end_utterance(outputs)
        else:
            left = self._ring.push(frame, voiced, self._position)
            if left is not None:
                self._add_noise(*left, outputs)
            # Silence lasts until the first voiced frame still in the trigger ring (a ring
            # that never triggers never was speech), or until now.
            self._track_silence(self._ring.first_voiced(self._frame), outputs)
            if self._ring.voiced() >= self.config.trigger_ratio * self._trigger_frames:
                self._start_utterance(outputs)
        self._position += frame.size

    def _start_utterance(self, outputs: list[Output]) -> None:
        self._emit_noise(outputs)
        utterance = self._utterance
        utterance.active = True
        utterance.begin(self._ring.start)
        for frame, voiced in self._ring.take():
            utterance.append(frame, voiced)
        self._emit_sliding(outputs)

    def _emit_sliding(self, outputs: list[Output]) -> None:
        if self._utterance.emit_sliding(outputs):
            self._silence.speech_started()

    def _end_utterance(self, outputs: list[Output]) -> None:
        self._emit_sliding(outputs)
        rest, at, last_voiced = self._utterance.end(outputs)
        if last_voiced is not None:
            self._silence.speech_ended(last_voiced)
        if rest is not None:
            self._add_noise(rest, at, outputs)

    def _add_noise(self, audio: np.ndarray, start: int, outputs: list[Output]) -> None:
        if self._noise.add(audio, start):
            self._emit_noise(outputs)

    def _emit_noise(self, outputs: list[Output]) -> None:
        noise = self._noise.take(self._seconds)
        if noise is not None:
            outputs.append(noise)

    def _track_silence(self, now: int, outputs: list[Output]) -> None:
        heard_speech = self._utterance.index > 0
        event = self._silence.due(now, heard_speech, self.sample_rate, self._seconds)
        if event is not None:
            outputs.append(event)

    def _seconds(self, samples: int) -> float:
        return (self._origin + samples) / self.sample_rate


def _samples(seconds: float | None, rate: int) -> int | None:
    return None if seconds is None else round(rate * seconds)


def vad_stream(
    config: VADConfig, *, stop_on_silence: bool, sample_rate: int = SAMPLE_RATE
) -> CoreStream[VADCore]:
    """The VAD core as one stream's processor: audio in; windows, noise and events out.

    Audio is placed by its own timestamps (a VAD restarted mid-stream goes on at the right
    time; see :class:`~ser_stream.adapter.AudioTimeline`). Every stream ends with the count
    of windows the VAD emitted (downstream accounting: each must end up predicted or
    dropped). With ``stop_on_silence``, the first ``silence`` event after speech (or a
    ``no_speech`` event, when a timeout for it is set) ends the stream.
    """
    core = VADCore(config, sample_rate)
    return CoreStream(
        core,
        {Audio: core.push},
        flush=core.flush,
        close=core.close,
        timeline=AudioTimeline(core, sample_rate, "VAD"),
        summary=core.windows_event,
        ends_on=frozenset({"silence", "no_speech"}) if stop_on_silence else frozenset(),
    )


STREAM_DEFAULTS = {"first_window_s": FIRST_WINDOW_S}
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
    stop_after = options.pop("stop_on_silence_s", STOP_ON_SILENCE_S)
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


def _build(context: StageContext) -> CoreStream[VADCore]:
    config, stop_after = vad_config(context)
    return vad_stream(config, stop_on_silence=stop_after is not None)


def _warm_up(context: StageContext) -> None:
    # Only in the stage's own process, which serves many streams for a long time: an ended
    # stream's network memory goes back at once. predict keeps its buffers instead.
    if vad_config(context)[0].engine == "silero":
        map_large_buffers()


SPEC = StageSpec(
    name="vad",
    warm_up=_warm_up,
    accepts=frozenset({Kind.AUDIO}),
    emits=frozenset({Kind.WINDOW, Kind.NOISE, Kind.EVENT, Kind.END_OF_STREAM}),
    build=_build,
    description="voice activity: speech windows, noise and speech events",
    batches=True,  # 30 ms frames: one hop to the worker thread per burst, not per frame
    resumable=True,
)
