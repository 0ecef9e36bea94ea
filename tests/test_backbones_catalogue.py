"""`featx backbones` keeps its rows in a catalogue (probed once per installed version, read after), and `--taps`
lists the stage-level taps unless `--all`."""
from __future__ import annotations

import json

import pytest

from featx.backbones import catalog, catalog_cache
from tests.cli_helpers import invoke

PATTERN = "squeezenet"   # two small torchvision models


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def probes(monkeypatch):
    """The names probed (built on meta) from now on."""
    seen, probe = [], catalog.backbone_row

    def counting(name):
        seen.append(name)
        return probe(name)

    monkeypatch.setattr(catalog, "backbone_row", counting)
    return seen


def _refuse_probing(monkeypatch):
    def refuse(name):
        raise AssertionError(f"probed {name} although it is in the catalogue")

    monkeypatch.setattr(catalog, "backbone_row", refuse)


def test_the_second_listing_reads_the_catalogue(cache_dir, probes, monkeypatch):
    first = catalog.list_rows(PATTERN)
    assert [r.name for r in first] == ["squeezenet1_0", "squeezenet1_1"] and probes == [r.name for r in first]
    saved = json.loads((cache_dir / "backbones.json").read_text())
    assert saved["key"] == catalog_cache.version_key() and set(saved["rows"]) == {"squeezenet1_0", "squeezenet1_1"}
    assert catalog.uncatalogued(PATTERN) == []
    _refuse_probing(monkeypatch)
    assert catalog.list_rows(PATTERN) == first
    result, out = invoke("backbones", PATTERN, "--json")   # the CLI too
    assert result.exit_code == 0, out
    assert [r["parameters"] for r in json.loads(result.output)] == [r.parameters for r in first]
    assert not list(cache_dir.glob(".backbones-*"))   # written through a temporary file, renamed


@pytest.mark.parametrize("damage", ["{not json", '{"key": 1}', '{"key": null, "rows": []}', "rows"])
def test_a_corrupt_catalogue_is_rebuilt(cache_dir, probes, damage):
    first = catalog.list_rows(PATTERN)
    path = cache_dir / "backbones.json"
    if damage == "rows":   # the right key, a row of another shape
        data = json.loads(path.read_text())
        data["rows"]["squeezenet1_0"] = {"name": "squeezenet1_0"}
        path.write_text(json.dumps(data))
    else:
        path.write_text(damage)
    probes.clear()
    assert catalog.list_rows(PATTERN) == first
    assert probes == ["squeezenet1_0", "squeezenet1_1"]
    assert json.loads(path.read_text())["key"] == catalog_cache.version_key()


def test_another_version_invalidates_the_catalogue(cache_dir, probes, monkeypatch):
    catalog.list_rows(PATTERN)
    key = catalog_cache.version_key()
    monkeypatch.setattr(catalog_cache, "version_key", lambda: {**key, "torchvision": "0.0.0"})
    probes.clear()
    catalog.list_rows(PATTERN)
    assert probes == ["squeezenet1_0", "squeezenet1_1"]
    assert json.loads((cache_dir / "backbones.json").read_text())["key"]["torchvision"] == "0.0.0"


def test_the_catalogue_lives_in_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(catalog_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert catalog_cache.cache_path() == tmp_path / "featx" / "backbones.json"


@pytest.mark.slow
def test_taps_lists_the_stages_and_all_lists_every_node():
    result, out = invoke("backbones", "resnet18", "--taps", "--json")
    assert result.exit_code == 0, out
    short = [r["tap"] for r in json.loads(result.output)]
    assert len(short) < 20 and {"layer1", "layer2", "layer3", "layer4", "pool", "fc"} <= set(short)
    assert not any(t.startswith("layer1.") for t in short)   # no block's bn or relu
    result, out = invoke("backbones", "resnet18", "--taps", "--all", "--json")
    every = [r["tap"] for r in json.loads(result.output)]
    assert set(short) < set(every) and len(every) > 60 and "layer1.0.bn1" in every
    result, out = invoke("backbones", "resnet18", "--taps")
    assert f"{len(every) - len(short)} deeper graph nodes not shown: --all lists them" in out
    result, out = invoke("backbones", "resnet18", "--all")
    assert result.exit_code == 2 and "--all goes with --taps" in out
