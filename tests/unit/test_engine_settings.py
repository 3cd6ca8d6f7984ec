"""What can run a session's processes (``--engine``), and where (``--place``), as settings."""

from __future__ import annotations

import pytest

from ser_stream.errors import InputError
from ser_stream.settings import PipelineConfig, load_toml


def test_the_ray_engine_links_every_stage_over_tcp_with_keys():
    config = PipelineConfig(sources=("file:a.wav",), engine="ray")
    assert config.tcp  # nodes share no folder: ipc:// cannot reach another node
    assert not PipelineConfig(sources=("file:a.wav",)).tcp


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": "k8s"}, "local or ray"),
        ({"address": "10.0.0.5:6379"}, "for --engine ray"),
        ({"place": {"model": "gpu"}}, "for --engine ray"),
        ({"engine": "ray", "place": {"sink": "gpu"}}, "no such stage"),
        ({"engine": "ray", "place": {"model": ""}}, "resource"),
        ({"engine": "ray", "place": {"model": "two words"}}, "resource"),
        ({"engine": "ray", "sources": ("stdin",)}, "another node"),
    ],
)
def test_what_no_engine_can_run_is_refused_before_anything_starts(settings, message):
    settings = {"sources": ("file:a.wav",), **settings}
    with pytest.raises(InputError, match=message):
        PipelineConfig(**settings)


def test_a_settings_file_names_the_engine_and_the_places(tmp_path):
    path = tmp_path / "up.toml"
    path.write_text(
        'source = "file:a.wav"\nengine = "ray"\naddress = "10.0.0.5:6379"\n'
        '[place]\nmodel = "gpu"\ncapture = "zone:eu"\n'
    )
    settings = load_toml(str(path))
    config = PipelineConfig(sources=tuple(settings.pop("source")), **settings)
    assert config.engine == "ray" and config.address == "10.0.0.5:6379"
    assert config.place == {"model": "gpu", "capture": "zone:eu"}


def test_a_place_that_is_not_a_table_of_words_is_refused(tmp_path):
    path = tmp_path / "up.toml"
    path.write_text('source = "file:a.wav"\nengine = "ray"\nplace = "gpu"\n')
    with pytest.raises(InputError, match="place must be a table"):
        load_toml(str(path))
