from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from ser_stream.errors import InputError
from ser_stream.stages.capture import (
    CaptureConfig,
    file_frames,
    frames_of,
    parse_source,
    pcm_frames,
)
from ser_stream.testing import voiced


class TestParseSource:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("file:/tmp/a.wav", CaptureConfig("file", "/tmp/a.wav")),
            ("stdin", CaptureConfig("stdin")),
            ("zmq:tcp://127.0.0.1:5555", CaptureConfig("zmq", "tcp://127.0.0.1:5555")),
        ],
    )
    def test_accepted_forms(self, text, expected):
        """The documented source forms parse."""
        assert parse_source(text) == expected

    @pytest.mark.parametrize("text", ["", "file:", "microphone", "stdin:x", "http://x"])
    def test_other_forms_are_a_clear_error(self, text):
        """Anything else names the accepted forms."""
        with pytest.raises(InputError, match="file:PATH, stdin or zmq:ENDPOINT"):
            parse_source(text)


class TestFrames:
    def test_frames_are_30_ms_int16_with_times(self):
        """Audio becomes 480-sample int16 frames, timed from the stream start."""
        frames = list(frames_of(voiced(1.0)))
        assert [f.samples.size for f in frames] == [480] * 33 + [160]
        assert all(f.samples.dtype == np.int16 and f.sample_rate == 16_000 for f in frames)
        assert [f.t_start for f in frames[:3]] == [0.0, 0.03, 0.06]

    def test_file_of_any_rate_and_channels_becomes_16k_mono(self, tmp_path):
        """A 44.1 kHz stereo file gives the duration's worth of 16 kHz frames."""
        path = tmp_path / "stereo.flac"
        soundfile.write(path, np.zeros((44_100, 2), dtype=np.float32) + 0.1, 44_100)
        total = sum(f.samples.size for f in file_frames(str(path)))
        assert abs(total - 16_000) <= 1

    def test_unreadable_file_fails_before_any_frame(self, tmp_path):
        """A broken file is an InputError that names it."""
        path = tmp_path / "broken.wav"
        path.write_bytes(b"nope")
        with pytest.raises(InputError, match="broken.wav"):
            file_frames(str(path))


class TestPCM:
    def test_raw_pcm_at_16k_passes_through_sample_exact(self):
        """16 kHz PCM in gives exactly the same samples out, in 30 ms frames."""
        pcm = (np.arange(16_000) % 2000 - 1000).astype("<i2")
        frames = list(pcm_frames(io.BytesIO(pcm.tobytes())))
        assert np.array_equal(np.concatenate([f.samples for f in frames]), pcm)
        assert frames[1].t_start == 0.03

    def test_raw_pcm_at_another_rate_is_resampled(self):
        """8 kHz PCM of 1 s gives about 1 s at 16 kHz; an odd byte is dropped."""
        pcm = (np.sin(np.arange(8_000) / 5) * 10_000).astype("<i2").tobytes() + b"\x01"
        total = sum(f.samples.size for f in pcm_frames(io.BytesIO(pcm), rate=8_000))
        assert abs(total - 16_000) <= 40

    def test_empty_input_gives_no_frame(self):
        """Nothing in, nothing out."""
        assert list(pcm_frames(io.BytesIO(b""))) == []


def test_a_producer_that_goes_silent_has_its_stream_ended_and_the_others_go_on(tmp_path):
    import asyncio
    import json
    from collections import Counter

    import zmq

    from ser_stream.logs import get_logger
    from ser_stream.messages import Audio, EndOfStream, ErrorMsg
    from ser_stream.producer_source import producer_frames
    from ser_stream.transport import RuntimeSettings, Transport

    endpoint = f"ipc://{tmp_path}/in"
    pcm = np.zeros(480, "<i2")

    async def capture() -> list:
        transport = Transport(RuntimeSettings(), Counter(), get_logger(stage="test"))
        transport.start(signals=False)
        frames = producer_frames(transport, endpoint, idle_timeout_s=3.0, silent_s=1.0)
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        items: list = []
        try:
            first = await anext(frames)  # the source is bound and listening
            items.append(first)
            push.connect(endpoint)
            for stream in ("gone", "here"):
                header = {"v": 1, "kind": "audio", "stream": stream, "seq": 0, "ts": {}}
                header.update(sample_rate=16_000, t_start=0.0, dtype="int16", shape=[480])
                push.send_multipart([json.dumps(header).encode(), pcm.tobytes()])
            heard: set[str] = set()
            async for item in frames:
                items.append(item)
                if isinstance(item, tuple) and isinstance(item[1], Audio):
                    heard.add(item[0])
                    if heard == {"gone", "here"}:  # both heard: only "here" says it ends
                        end = {"v": 1, "kind": "end_of_stream", "stream": "here", "seq": 1,
                               "ts": {}, "reason": "eof"}  # fmt: skip
                        push.send_multipart([json.dumps(end).encode()])
                        heard.add("ended")
        finally:
            await frames.aclose()
            push.close(linger=0)
            context.term()
            transport.finish()
        return items

    items = asyncio.run(capture())
    tagged = [item for item in items if isinstance(item, tuple)]
    ends = {stream: body.reason for stream, body in tagged if isinstance(body, EndOfStream)}
    assert ends == {"here": "eof", "gone": "error"}
    errors = [body.reason for stream, body in tagged if isinstance(body, ErrorMsg)]
    assert len(errors) == 1 and "gone" in errors[0] and "sent nothing" in errors[0]


class TestFrameHops:
    """A live producer's 30 ms frames go on in hops: fewer, larger messages, in order."""

    @staticmethod
    def frames(stream: str, first: int, count: int, stamp: int = 0) -> list[tuple]:
        from ser_stream.messages import Audio

        return [
            (stream, Audio(np.full(480, first + i, np.int16), 16_000, (first + i) * 0.03),
             {"produced": stamp + i})
            for i in range(count)
        ]  # fmt: skip

    @staticmethod
    def shape(items: list) -> list[tuple]:
        return [(item[0], type(item[1]).__name__, getattr(item[1], "samples", np.zeros(0)).size)
                for item in items]  # fmt: skip

    def test_a_streams_frames_go_in_hops_with_their_first_stamps_and_samples(self):
        from ser_stream.producer_source import FrameHops

        hops = FrameHops(hop=4 * 480, hold_s=0.09)
        sent = hops.take(self.frames("a", 0, 6, stamp=100), now=0.0)
        assert [(item[1].t_start, item[1].samples.size, item[2]) for item in sent] == [
            (0.0, 1920, {"produced": 100})
        ]
        assert hops.wait_s(0.0) == pytest.approx(0.09) and len(hops) == 1
        sent += hops.take(self.frames("a", 6, 1, stamp=106), now=0.05)
        assert len(sent) == 1  # the next hop still fills: held, not sent
        sent += hops.due(0.1)  # its first frame waited 0.09 s: it goes as it is
        assert [(item[1].t_start, item[1].samples.size, item[2]) for item in sent[1:]] == [
            (pytest.approx(0.12), 1440, {"produced": 104})
        ]
        samples = np.concatenate([item[1].samples for item in sent])
        np.testing.assert_array_equal(samples, np.repeat(np.arange(7, dtype=np.int16), 480))
        assert hops.wait_s(0.1) is None and not hops

    def test_reports_ends_and_gaps_send_what_was_held_first(self):
        from ser_stream.messages import EndOfStream, ErrorMsg
        from ser_stream.producer_source import FrameHops

        hops = FrameHops(hop=4 * 480, hold_s=0.09)
        a, b = self.frames("a", 0, 4), self.frames("b", 0, 2)
        report = ("a", ErrorMsg("skipped", "capture"))
        later = self.frames("a", 10, 1)  # 0.3 s: not right after frame 3
        items = [*a[:2], *b, a[2], report, a[3], *later, ("a", EndOfStream("eof"))]
        sent = hops.take(items, now=0.0)
        assert self.shape(sent) == [
            ("a", "Audio", 1440), ("a", "ErrorMsg", 0), ("a", "Audio", 480),
            ("a", "Audio", 480), ("a", "EndOfStream", 0),
        ]  # fmt: skip
        assert self.shape(hops.due(0.09)) == [("b", "Audio", 960)]
