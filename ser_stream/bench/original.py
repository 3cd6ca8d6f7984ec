"""The original system's approach, timed on this machine for comparison.

It recorded the microphone in blocks of 7.1 s; after each block it reduced noise
(noisereduce's default, non-stationary gate), normalized loudness with pydub, computed RMS
energy, zero-crossing rate and 13 MFCCs over the block with librosa, and called Keras
``model.predict`` on an LSTM of two 64-unit layers. The LSTM here has that shape with
untrained weights: only its time is measured, not its answers. Speech is answered at the end
of the block it started in, so the speech-to-result latency is the block's remaining length
plus the processing: from the processing alone (speech ending the block) to 7.1 s more
(speech starting it).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ser_stream.audio import SAMPLE_RATE
from ser_stream.bench.stats import percentiles

__all__ = ["BLOCK_S", "measure_original", "measure_original_alone"]

BLOCK_S = 7.1
HOP = 512


def _features(block: np.ndarray) -> np.ndarray:
    import warnings

    import librosa
    import noisereduce

    with warnings.catch_warnings():  # pydub warns about ffmpeg, which raw PCM does not need
        warnings.simplefilter("ignore", RuntimeWarning)
        from pydub import AudioSegment, effects

    reduced = noisereduce.reduce_noise(y=block, sr=SAMPLE_RATE)
    pcm = np.round(np.clip(reduced, -1, 1) * 32767).astype(np.int16)
    segment = effects.normalize(AudioSegment(pcm.tobytes(), frame_rate=SAMPLE_RATE,
                                             sample_width=2, channels=1))  # fmt: skip
    y = np.asarray(segment.get_array_of_samples(), dtype=np.float32) / 32768.0
    rms = librosa.feature.rms(y=y, frame_length=2048, hop_length=HOP)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=HOP)
    mfcc = librosa.feature.mfcc(y=y, sr=SAMPLE_RATE, n_mfcc=13, hop_length=HOP)
    return np.vstack([rms, zcr, mfcc]).T[np.newaxis].astype(np.float32)


def measure_original(audio: np.ndarray, blocks: int = 5) -> dict:
    """Process ``blocks`` blocks of ``audio`` as the original did; time each step."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError as exc:  # the runtime install has no TensorFlow; the test one does
        return {"skipped": f"needs TensorFlow/Keras ({exc}); make setup-dev installs it"}
    size = round(BLOCK_S * SAMPLE_RATE)
    shape = _features(audio[:size]).shape[1:]
    model = keras.Sequential(
        [keras.Input(shape), keras.layers.LSTM(64, return_sequences=True),
         keras.layers.LSTM(64), keras.layers.Dense(8, activation="softmax")]
    )  # fmt: skip
    model.predict(np.zeros((1, *shape), dtype=np.float32), verbose=0)  # build and trace once
    processing_ms, cpu_ms = [], []
    for k in range(blocks):
        start = (k * size) % max(1, audio.size - size)
        block = audio[start : start + size]
        wall, cpu = time.perf_counter(), time.process_time()
        model.predict(_features(block), verbose=0)
        processing_ms.append((time.perf_counter() - wall) * 1000)
        cpu_ms.append((time.process_time() - cpu) * 1000)
    processing = percentiles(processing_ms)
    return {
        "what": "7.1 s blocks; noisereduce + pydub normalize + rms/zcr/13 MFCC + Keras predict",
        "block_s": BLOCK_S,
        "processing_ms": processing,
        "speech_to_result_s": {
            "best": round(processing["p50"] / 1000, 3),
            "mean": round(BLOCK_S / 2 + processing["p50"] / 1000, 3),
            "worst": round(BLOCK_S + processing["p50"] / 1000, 3),
        },
        "cpu_ms_per_audio_s": round(float(np.mean(cpu_ms)) / BLOCK_S, 2),
    }


def measure_original_alone(seconds: float = 40.0, blocks: int = 5) -> dict:
    """:func:`measure_original` in a process of its own with the default thread pools.

    TensorFlow and BLAS size their pools when they load, and ser-stream processes run them on
    one thread: the original ran with the defaults, so it is measured with them.
    """
    import json
    import subprocess
    import sys

    from ser_stream.threads import unlimited_environment

    result = subprocess.run(
        [sys.executable, "-m", "ser_stream.bench.original", str(seconds), str(blocks)],
        capture_output=True, text=True, env=unlimited_environment(), timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        return {"skipped": f"the measurement failed: {result.stderr.strip()[-300:]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import json
    import sys

    from ser_stream.bench.session import bench_audio

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(json.dumps(measure_original(bench_audio(float(sys.argv[1]), seed=6), int(sys.argv[2]))))
