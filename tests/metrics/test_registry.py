"""The generic registry: lazy targets, entry points, duplicates refused, near misses suggested."""

from __future__ import annotations

import os
import sys

import pytest

from metrics.errors import MetricInputError
from metrics.registry import METRICS, Registry, checkpoint_metric, metric_class, parse_metric_list

GROUP = "bench.test_registry_things"


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A folder on sys.path holding a module and a dist-info that offers it in GROUP."""
    (tmp_path / "registry_plugin.py").write_text("VALUE = 42\nOTHER = 7\n", encoding="utf-8")

    def offer(*lines: str) -> None:
        info = tmp_path / f"registry_plugin_{len(list(tmp_path.glob('*.dist-info')))}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {info.name.split('-')[0]}\nVersion: 1.0\n",
                                       encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[{GROUP}]\n" + "".join(f"{line}\n" for line in lines),
                                               encoding="utf-8")

    monkeypatch.syspath_prepend(str(tmp_path))
    yield offer
    sys.modules.pop("registry_plugin", None)


def test_targets_load_lazily_and_plugins_join_the_builtins(plugin_site):
    plugin_site("answer = registry_plugin:VALUE")
    registry = Registry("thing", {"path_join": "os.path:join"}, GROUP)
    assert registry.targets() == {"path_join": "os.path:join", "answer": "registry_plugin:VALUE"}
    assert registry.load("answer") == 42
    assert registry.load("path_join") is os.path.join


def test_a_plugin_reusing_a_name_is_an_error(plugin_site):
    plugin_site("path_join = registry_plugin:VALUE")
    registry = Registry("thing", {"path_join": "os.path:join"}, GROUP)
    with pytest.raises(MetricInputError, match="thing plugin 'path_join' .* reuses the name of os.path:join; rename"):
        registry.targets()


def test_two_packages_offering_one_name_is_an_error(plugin_site):
    plugin_site("answer = registry_plugin:VALUE")
    plugin_site("answer = registry_plugin:OTHER")
    with pytest.raises(MetricInputError, match="two installed packages offer the thing 'answer'.*uninstall one"):
        Registry("thing", {}, GROUP).targets()


def test_registering_a_taken_name_is_an_error():
    registry = Registry("thing", {"a": "os:sep"}, GROUP)
    registry.register("b", "os:linesep")
    assert registry.load("b") == os.linesep
    with pytest.raises(MetricInputError, match="thing 'a' is registered twice"):
        registry.register("a", "os:name")


def test_an_unknown_name_is_one_line_with_close_matches_and_every_name():
    with pytest.raises(MetricInputError) as caught:
        metric_class("lpip")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("unknown metric(s) lpip (did you mean 'lpips'?); choose from: ")
    assert "inception_dist" in message and "`bench metrics` describes each" in message
    with pytest.raises(MetricInputError, match=r"unknown metric\(s\) nope; choose from"):
        parse_metric_list("mse,nope")


def test_a_registered_metric_is_found_everywhere_the_registry_is_read():
    METRICS.register("mse_again", "metrics.pixel:MSE")
    try:
        assert parse_metric_list("mse_again") == ["mse_again"] and metric_class("mse_again").name == "mse"
    finally:
        METRICS.unregister("mse_again")
    with pytest.raises(MetricInputError):
        metric_class("mse_again")


def test_each_checkpoint_option_feeds_one_metric():
    assert checkpoint_metric("checkpoint_ha1") == "perceptanon_ha1"
    assert checkpoint_metric("checkpoint_ha2") == "perceptanon_ha2"
    with pytest.raises(MetricInputError, match="no registered metrics take their checkpoint from checkpoint_ha3"):
        checkpoint_metric("checkpoint_ha3")


def test_installed_answers_are_cached_until_the_import_path_changes(plugin_site, monkeypatch):
    from importlib import metadata

    from metrics import installed

    scans = []
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: scans.append(kw) or real(**kw))
    assert not list(installed.entry_points(GROUP))
    assert not list(installed.entry_points(GROUP))
    assert len(scans) == 1, "an unchanged import path is not scanned again"
    assert installed.version("registry_plugin_0") is None
    plugin_site("thing = registry_plugin:VALUE")  # a package installed mid-process
    assert [ep.name for ep in installed.entry_points(GROUP)] == ["thing"]
    assert installed.version("registry_plugin_0") == "1.0"
    assert len(scans) == 2
    plugin_site("other = registry_plugin:OTHER")  # at once: a coarse mtime alone could miss it
    assert sorted(ep.name for ep in installed.entry_points(GROUP)) == ["other", "thing"]
