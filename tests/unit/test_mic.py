"""The microphone source's buffer and its errors on a machine without a microphone."""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.stages.capture import check_source, parse_source
from ser_stream.stages.mic import BlockBuffer
from ser_stream.testing import SER_STREAM, records, run_up


class TestBlockBuffer:
    def test_blocks_come_out_in_order(self):
        buffer = BlockBuffer(capacity=4)
        for i in range(3):
            buffer.put(np.full(480, i, dtype=np.int16))
        assert [int(buffer.get(0.1)[0]) for _ in range(3)] == [0, 1, 2]
        assert buffer.get(0.05) is None and buffer.dropped_samples == 0

    def test_a_full_buffer_drops_the_oldest_and_counts_it(self):
        buffer = BlockBuffer(capacity=2)
        for i in range(5):
            buffer.put(np.full(480, i, dtype=np.int16))
        assert buffer.dropped_samples == 3 * 480
        assert [int(buffer.get(0.1)[0]) for _ in range(2)] == [3, 4]

    def test_put_never_waits_for_the_reader(self):
        buffer = BlockBuffer(capacity=8)
        for _ in range(10_000):  # with no reader: a put that waited would hang here
            buffer.put(np.zeros(480, dtype=np.int16))
        assert buffer.dropped_samples == (10_000 - 8) * 480

    def test_device_overflows_are_counted(self):
        buffer = BlockBuffer(capacity=2)
        buffer.put(np.zeros(480, dtype=np.int16), overflowed=True)
        assert buffer.device_overflows == 1

    def test_a_waiting_reader_wakes_for_a_block_from_another_thread(self):
        buffer = BlockBuffer(capacity=4)
        threading.Timer(0.05, buffer.put, args=(np.ones(480, dtype=np.int16),)).start()
        block = buffer.get(timeout=2.0)
        assert block is not None and block.size == 480

    def test_capacity_must_hold_a_block(self):
        with pytest.raises(InputError):
            BlockBuffer(capacity=0)


class TestSources:
    @pytest.mark.parametrize("text", ["mic", "mic:", "mic:2", "mic:USB Audio"])
    def test_mic_forms_parse(self, text):
        source = parse_source(text)
        assert source.kind == "mic" and source.target == text.partition(":")[2]

    def test_unknown_scheme_names_every_accepted_form(self):
        with pytest.raises(InputError, match="mic, mic:DEVICE, file:PATH, stdin or zmq"):
            parse_source("microphone")

    def test_missing_file_is_caught_before_anything_starts(self, tmp_path):
        with pytest.raises(InputError, match="no such file"):
            check_source(parse_source(f"file:{tmp_path}/nope.wav"))


@pytest.fixture(scope="module")
def no_microphone() -> None:
    """These tests are about a machine without a microphone: skip where there is one."""
    from ser_stream.stages.mic import input_devices

    if input_devices():
        pytest.skip("this machine has an audio input device")


@pytest.mark.usefixtures("no_microphone")
class TestNoMicrophone:
    def test_up_on_the_mic_says_what_to_do_and_exits(self):
        result = run_up("--source", "mic", private_publish=False, timeout_s=60)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "no microphone" in lines[0] and "--source file:PATH" in lines[0]

    def test_up_on_a_named_device_that_is_missing(self):
        result = run_up("--source", "mic:Studio Mic", private_publish=False, timeout_s=60)
        assert result.returncode == 2 and "no microphone" in result.stderr

    def test_devices_says_there_are_none(self):
        result = subprocess.run([SER_STREAM, "devices"], capture_output=True, text=True)
        assert result.returncode == 1 and "no audio input devices" in result.stdout

    def test_up_without_a_source_falls_back_to_the_bundled_sample(self, tmp_path):
        out = tmp_path / "s.jsonl"
        result = run_up("--fast", jsonl=out)
        assert result.returncode == 0, result.stderr
        assert "playing the bundled sample instead" in result.stderr
        assert records(out, "prediction")

    def test_unknown_source_is_one_line(self):
        result = run_up("--source", "webcam:0", private_publish=False, timeout_s=60)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
