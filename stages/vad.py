"""VAD stage: audio in, speech windows, noise and speech events out.

WebRTC VAD decides per 30 ms frame; a trigger ring and a hangover smooth the decisions into
utterances. During long speech the core emits sliding windows; at the end of an utterance
it emits the tail. Non-speech audio goes downstream as :class:`Noise` for the denoiser.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from ser_stream.audio import SAMPLE_RATE
from ser_stream.errors import InputError
from ser_stream.messages import Audio, EndOfStream, Event, Noise, Window
from ser_stream.stage import StageContext, StageSpec
from ser_stream.wire import Kind

__all__ = ["SPEC", "VADConfig", "VADCore", "VADStream", "Output", "sliding_spans"]

Output = Window | Noise | Event

_VAD_RATES = (8_000, 16_000, 32_000, 48_000)


@dataclass(frozen=True, slots=True)
class VADConfig:
    """Settings of the VAD core; every duration carries its unit.

    Attributes:
        aggressiveness: WebRTC VAD mode, 0 (keeps most audio) to 3 (keeps least).
        frame_ms: analysis frame, 10, 20 or 30 ms.
        trigger_ms: span of recent frames that decides that speech started (and pre-roll kept).
        trigger_ratio: share of voiced frames within ``trigger_ms`` that starts speech.
        hangover_ms: run of unvoiced frames that ends an utterance.
        tail_pad_ms: audio kept after the last voiced frame of an utterance.
        min_speech_ms: speech must last this long to count (shorter blips are noise); the
            ``speech_start`` event comes once it has.
        window_s: length of an analysis window.
        hop_s: step between sliding windows during long speech.
        noise_chunk_s: non-speech audio is handed downstream in chunks of this length.
        silence_event_s: after speech, a ``silence`` event fires once silence lasts this long
            (``None``: never).
    """

    aggressiveness: int = 2
    frame_ms: int = 30
    trigger_ms: int = 150
    trigger_ratio: float = 0.6
    hangover_ms: int = 300
    tail_pad_ms: int = 90
    min_speech_ms: int = 250
    window_s: float = 3.0
    hop_s: float = 1.5
    noise_chunk_s: float = 0.5
    silence_event_s: float | None = 2.0

    def __post_init__(self) -> None:
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
        if self.silence_event_s is not None and self.silence_event_s <= 0:
            raise InputError(f"silence_event_s {self.silence_event_s} must be positive or None")


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
        import webrtcvad

        if sample_rate not in _VAD_RATES:
            raise InputError(
                f"VAD needs 8, 16, 32 or 48 kHz audio, got {sample_rate} Hz; resample first"
            )
        self.config = config or VADConfig()
        self.sample_rate = sample_rate
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        rate = sample_rate
        cfg = self.config
        self._frame = rate * cfg.frame_ms // 1000
        self._trigger_frames = cfg.trigger_ms // cfg.frame_ms
        self._hangover_frames = cfg.hangover_ms // cfg.frame_ms
        self._tail_pad = rate * cfg.tail_pad_ms // 1000
        self._min_speech = rate * cfg.min_speech_ms // 1000
        self._window = round(rate * cfg.window_s)
        self._hop = round(rate * cfg.hop_s)
        self._noise_chunk = max(1, round(rate * cfg.noise_chunk_s))
        self._silence_event = (
            None if cfg.silence_event_s is None else round(rate * cfg.silence_event_s)
        )
        self.reset()

    @property
    def windows_emitted(self) -> int:
        """Windows handed out since the start of the stream."""
        return self._window_index

    @property
    def seconds(self) -> float:
        """Audio consumed so far, in seconds."""
        return (self._position + self._pending.size) / self.sample_rate

    def reset(self) -> None:
        """Forget the stream: the next sample pushed is time 0."""
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

    def _step(self, frame: np.ndarray, outputs: list[Output]) -> None:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()
        voiced = self._vad.is_speech(pcm, self.sample_rate)
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
            # Frames still in the trigger ring may turn out to be speech: not yet silence.
            self._track_silence(self._ring_start, outputs)
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
        covered = self._next_window - self._hop + self._window
        if self._windows_in_utterance == 0:
            self._emit_window(speech, 0, final=True, out=outputs)
        elif covered < keep:
            start = keep - self._window
            self._emit_window(speech[start - self._dropped :], start, final=True, out=outputs)
        end = self._utterance_start + keep
        outputs.append(Event("speech_end", self._seconds(end)))
        self._utterance_index += 1
        self._silence_start = end
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
        if self._silence_event is None or self._silence_start is None or self._silence_reported:
            return
        if now - self._silence_start >= self._silence_event:
            t = self._seconds(self._silence_start + self._silence_event)
            duration = {"duration_s": self._silence_event / self.sample_rate}
            outputs.append(Event("silence", t, duration))
            self._silence_reported = True

    def _seconds(self, samples: int) -> float:
        return samples / self.sample_rate


class VADStream:
    """The VAD core as one stream's processor: 16 kHz audio in; windows, noise, events out.

    With ``stop_on_silence``, the first ``silence`` event after speech ends the stream.
    """

    def __init__(self, config: VADConfig, *, stop_on_silence: bool) -> None:
        self._core = VADCore(config, SAMPLE_RATE)
        self._stop_on_silence = stop_on_silence

    def push(self, body: Audio) -> list[Output | EndOfStream]:
        """Take one audio chunk."""
        if body.sample_rate != SAMPLE_RATE:
            raise InputError(
                f"audio at {body.sample_rate} Hz reached the VAD; capture must send "
                f"{SAMPLE_RATE} Hz (it converts any source)"
            )
        samples = np.asarray(body.samples)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        return self._stop_if_silent(self._core.push(samples))

    def flush(self) -> list[Output | EndOfStream]:
        """End of the stream: close the open utterance, then count the windows."""
        return [*self._core.flush(), self._count()]

    def _count(self) -> Event:
        # Downstream accounting: every window the VAD emitted must end up predicted or dropped.
        return Event("windows", self._core.seconds, {"count": self._core.windows_emitted})

    def _stop_if_silent(self, outputs: list[Output]) -> list[Output | EndOfStream]:
        if self._stop_on_silence:
            for i, item in enumerate(outputs):
                if isinstance(item, Event) and item.name == "silence":
                    return [*outputs[: i + 1], self._count(), EndOfStream("silence")]
        return outputs


def _build(context: StageContext) -> VADStream:
    options = dict(context.options)
    stop_after = options.pop("stop_on_silence_s", 2.0)
    config = replace(context.artifact.analysis.vad_with_windowing(), **options)
    if stop_after is not None:
        config = replace(config, silence_event_s=float(stop_after))
    return VADStream(config, stop_on_silence=stop_after is not None)


SPEC = StageSpec(
    name="vad",
    accepts=frozenset({Kind.AUDIO}),
    emits=frozenset({Kind.WINDOW, Kind.NOISE, Kind.EVENT, Kind.END_OF_STREAM}),
    build=_build,
    description="voice activity: speech windows, noise and speech events",
)
