"""The settings of a pipeline, and every default of ``up``, ``serve`` and ``stage``, stated once.

A settings file (TOML, :func:`load_toml`) and the flags of ``up`` make one
:class:`PipelineConfig`; ``serve`` makes one from its own flags; the supervisor hands each
stage process its share of it (:func:`stage_options`, passed as ``--set KEY=VALUE``). The
defaults below are the ones each of those falls back on: a module that needs one imports it
from here rather than writing the number again.

Nothing here imports the stages or numpy at module level: the stage modules may import it,
and the command line reads its defaults before it limits the numeric libraries' threads
(:mod:`ser_stream.threads`), which must happen before numpy loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import tomllib

from ser_stream.errors import InputError

__all__ = [
    "ENGINES",
    "CAPTURE_HOLD_MS",
    "CAPTURE_HOP_MS",
    "FIRST_WINDOW_S",
    "FRAME_MS",
    "HEARTBEAT_S",
    "HWM",
    "MAX_REPLICAS",
    "MAX_RESTARTS",
    "START_TIMEOUT_S",
    "STOP_ON_SILENCE_S",
    "PipelineConfig",
    "check_stage_settings",
    "load_toml",
    "stage_options",
    "with_stage_options",
]

STOP_ON_SILENCE_S = 2.0
"""A stream ends after this much silence following speech (``--stop-on-silence``)."""
HWM = 64
"""High-water mark of every stage socket, in messages (a full PUSH makes its sender wait)."""
HEARTBEAT_S = 1.0
"""Every stage process tells the supervisor it lives this often."""
MAX_RESTARTS = 5
"""Failures allowed per process within a minute; one more stops the session."""
START_TIMEOUT_S = 120.0
"""How long the stages may take to come up."""
MAX_REPLICAS = 32
"""The most processes one stage may run as."""
FIRST_WINDOW_S = 0.8
"""The first emotion of an utterance comes after this much speech (``--first-window``)."""
FRAME_MS = 30
"""The capture's frames, and the VAD's: 30 ms of audio each (WebRTC takes 10, 20 or 30)."""
CAPTURE_HOP_MS = 120
"""Most audio of one stream in one message of a ``zmq:`` capture (live producers): a stream's
frames that wait together go on joined, up to this much (one round of the producers' turns),
so a capture that falls behind catches up with a few times fewer messages."""
CAPTURE_HOLD_MS = 0
"""How long a ``zmq:`` capture may hold a stream's frame for the rest of its hop. Holding
30 ms halves a real-time producer's messages (60 ms hops), but every window then comes up to
30 ms later for a little less VAD time, and the many-streams latency is spent downstream of
the VAD: so none by default."""


def _sample_rate() -> int:
    """The pipeline's sample rate, :data:`ser_stream.audio.SAMPLE_RATE` (imported late)."""
    from ser_stream.audio import SAMPLE_RATE

    return SAMPLE_RATE


def _chain() -> tuple[str, ...]:
    """The stage names in pipeline order (imported late: the stages import this module)."""
    from ser_stream.stages import STAGES

    return tuple(STAGES)


def load_toml(path: str) -> dict:
    """Read an ``up`` settings file; ``stop_on_silence_s = false`` turns stopping off.

    Raises:
        InputError: unreadable file, invalid TOML, unknown keys or settings of the wrong shape.
    """
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc}); fix the file") from exc
    unknown = set(data) - _TOML_KEYS
    if unknown:
        raise InputError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(_TOML_KEYS)}")
    if data.get("stop_on_silence_s") is False:
        data["stop_on_silence_s"] = None
    if isinstance(data.get("source"), str):
        data["source"] = [data["source"]]
    _check_types(path, data)
    return data


def _check_types(path: str, data: dict) -> None:
    """The settings whose shape matters, checked before anything starts."""
    problems = []
    source = data.get("source", [])
    if not isinstance(source, list) or not all(isinstance(s, str) for s in source):
        problems.append("source must be a string or a list of strings")
    replicas = data.get("replicas", {})
    if not isinstance(replicas, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in replicas.values()
    ):
        problems.append("replicas must be a table of stage = number (e.g. model = 2)")
    streams = data.get("streams")
    if streams is not None and (not isinstance(streams, int) or isinstance(streams, bool)):
        problems.append("streams must be a whole number")
    place = data.get("place", {})
    if not isinstance(place, dict) or not all(isinstance(v, str) for v in place.values()):
        problems.append('place must be a table of stage = "resource" or "KEY:VALUE"')
    if problems:
        raise InputError(f"{path}: {'; '.join(problems)}")


ENGINES = ("local", "ray")
"""What can run a session's processes (``up --engine``)."""


@dataclass(frozen=True)
class PipelineConfig:
    """What ``up`` runs.

    Attributes:
        sources: one or more of ``mic[:DEVICE]``, ``file:PATH``, ``stdin``, ``zmq:ENDPOINT``;
            source N is stream ``stream-N``, except that each producer on a ``zmq:`` source
            names its own streams.
        fast: do not pace the sources at real time.
        stop_on_silence_s: end a stream after this much silence following speech (None: never).
        model: model artifact folder (None: the shipped one).
        publish: endpoint for anyone's subscribers (``ser-stream tap``, your programs).
        tcp: connect the stages over tcp:// on loopback instead of ipc://.
        rate: sample rate of raw PCM on stdin, in Hz.
        stages: settings per stage name (e.g. ``{"vad": {"aggressiveness": 3}}``).
        replicas: processes per stage name (default 1 each).
        streams: end the session once this many streams have ended (None: when every
            source is done; a ``zmq:`` source serves until Ctrl-C).
        curve: key folder for CURVE on every tcp:// endpoint, ``zmq:tcp://`` sources
            included (None: with ``tcp``, keys made for the session; see
            :mod:`ser_stream.security`).
        publish_plaintext: let a ``tcp://`` publish endpoint go without CURVE (anyone who
            reaches the port reads every record); without it, such an endpoint needs ``tcp``
            or ``curve``.
        max_restarts: failures allowed per process within a minute (restart intensity);
            one more stops the session.
        start_timeout_s: how long the stages may take to come up.
        engine: what runs the processes: ``local`` (children of ``up``, on this machine) or
            ``ray`` (Ray actors on a cluster's nodes; stages talk tcp:// with CURVE).
        address: the Ray cluster to join (``ray``; None: a Ray started on this machine).
        place: where a stage's processes may run, by stage name (``ray``): a Ray resource
            the node must have (``gpu`` is Ray's ``GPU``) or a node label ``KEY:VALUE``.
    """

    sources: tuple[str, ...]
    fast: bool = False
    stop_on_silence_s: float | None = STOP_ON_SILENCE_S
    model: str | None = None
    publish: str = ""
    tcp: bool = False
    rate: int = field(default_factory=_sample_rate)
    stages: dict[str, dict] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    streams: int | None = None
    curve: str | None = None
    publish_plaintext: bool = False
    max_restarts: int = MAX_RESTARTS
    start_timeout_s: float = START_TIMEOUT_S
    engine: str = "local"
    address: str | None = None
    place: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        if not self.sources:
            raise InputError("no source; give at least one --source")
        chain = _chain()
        self._check_engine(chain)
        for name, count in self.replicas.items():
            if name not in chain:
                raise InputError(
                    f"--replicas {name}: no such stage; choose from {', '.join(chain)}"
                )
            if not isinstance(count, int) or not 1 <= count <= MAX_REPLICAS:
                raise InputError(
                    f"--replicas {name}={count}: give a whole number from 1 to {MAX_REPLICAS}"
                )
        if self.streams is not None and self.streams < 1:
            raise InputError(f"--streams {self.streams}: give a positive number of streams")
        if self.publish_in_the_clear and not self.publish_plaintext:
            raise InputError(
                f"--publish {self.publish}: a tcp:// endpoint would send every record in the "
                "clear to anyone who reaches the port; add --curve KEYDIR (subscribers then "
                "need a key), or --publish-plaintext if that is what you want"
            )
        producers = any(source.startswith("zmq:") for source in self.sources)
        if self.streams is not None and not producers and self.streams > len(self.sources):
            raise InputError(
                f"--streams {self.streams}: only {len(self.sources)} sources and no zmq: "
                "source; the session ends when they do"
            )

    def _check_engine(self, chain: tuple[str, ...]) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"--engine {self.engine}: choose {' or '.join(ENGINES)}")
        if self.engine != "ray":
            if self.address or self.place:
                raise InputError("--address and --place are for --engine ray")
            return
        object.__setattr__(self, "tcp", True)  # nodes share no folder: tcp:// with CURVE
        for name, where in self.place.items():
            if name not in ("capture", *chain):
                raise InputError(
                    f"--place {name}: no such stage; choose from capture, {', '.join(chain)}"
                )
            if not isinstance(where, str) or not where.strip(": ") or " " in where:
                raise InputError(
                    f"--place {name}={where}: give a Ray resource (gpu, node_a) or a node "
                    "label KEY:VALUE"
                )
        if "stdin" in self.sources:
            raise InputError(
                "--source stdin cannot reach a capture on another node; with --engine ray "
                "give file:PATH or zmq:ENDPOINT"
            )

    @property
    def publish_in_the_clear(self) -> bool:
        """The publish endpoint is tcp:// and no CURVE keys secure it."""
        return self.publish.startswith("tcp://") and not (self.tcp or self.curve)

    def replicas_of(self, name: str) -> int:
        """How many processes run stage ``name``."""
        return self.replicas.get(name, 1)


_TOML_KEYS = {f.name for f in fields(PipelineConfig)} - {"sources"} | {"source", "sinks", "plot"}
"""A settings file holds what ``up`` runs, with ``source`` for ``sources``, and its outputs."""


def with_stage_options(stages: dict[str, dict], name: str, options: dict) -> dict[str, dict]:
    """``stages`` with ``options`` over the settings of stage ``name`` (flags over a file's).

    An option that is None was not given and leaves the stage's setting as it was.
    """
    given = {key: value for key, value in options.items() if value is not None}
    if not given:
        return stages
    merged = {stage: dict(settings) for stage, settings in stages.items()}
    merged[name] = {**merged.get(name, {}), **given}
    return merged


def stage_options(config: PipelineConfig, name: str) -> dict:
    """The settings stage ``name`` gets: the user's, and what the session implies (VAD).

    Pacing (``--fast``) is the capture's business only: every other stage hears a file run
    as fast as it goes exactly as a paced one.
    """
    options = dict(config.stages.get(name, {}))
    if name == "vad":
        options["stop_on_silence_s"] = config.stop_on_silence_s
    return options


def check_stage_settings(config: PipelineConfig, artifact) -> None:
    """Refuse wrong stage settings before any process starts (a stage would die of them).

    Raises:
        InputError: an unknown stage, settings for a stage that takes none (its settings
            come from the model artifact), or an unknown or out-of-range VAD setting.
    """
    chain = _chain()
    for name, options in config.stages.items():
        if name not in chain:
            raise InputError(f"[stages.{name}]: no such stage; choose from {', '.join(chain)}")
        if name != "vad" and options:
            raise InputError(
                f"[stages.{name}] {sorted(options)}: the {name} stage takes no settings "
                "(they come from the model artifact)"
            )
    from ser_stream.stage import StageContext
    from ser_stream.stages.vad import vad_config

    try:
        vad_config(StageContext("vad", stage_options(config, "vad"), artifact))
    except InputError as exc:
        raise InputError(f"stage settings: {exc}") from None
