"""The README states limits and defaults in several places; the code is the truth. Each check
reads what the README says and compares it with what the code does (the running gateway's
/openapi.json, its settings, the predictors' flags and tiling constants), so a change on one
side that is not made on the other fails here."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import httpx
import pytest

from common import limits
from tests.gateway_process import start_gateway
from transformer.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README's section under the heading `title` (any level), up to the next heading of
    the same or a higher level."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert match, f"README has no section {title!r}"
    level = len(match.group(1))
    rest = README[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def table_rows(text: str) -> list[list[str]]:
    """Cells of every Markdown table row in `text`, without the header and separator rows."""
    rows = []
    for block in re.findall(r"(?:^\|.*\|\n)+", text, re.M):
        lines = block.splitlines()[2:]
        rows += [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return rows


def module_constant(path: str, name: str) -> int:
    """A module-level constant, read without importing the module (the predictors need torch)."""
    tree = ast.parse((ROOT / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} has no constant {name}")


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict:
    gateway = start_gateway({}, tmp_path_factory.mktemp("readme-facts"))
    try:
        return httpx.get(f"{gateway.url}/openapi.json", timeout=30).json()
    finally:
        gateway.stop()


def test_every_tile_floor_the_readme_states_is_the_code_floor():
    floors = re.findall(r"tile\w*`?[^\n]{0,40}?(?:>=|at least)\s*(\d+)", README)
    floors += re.findall(r"a tile under (\d+) px", README)
    assert len(floors) >= 8, floors  # the parameter tables, the predictors, the errors
    assert {int(floor) for floor in floors} == {limits.MIN_TILE_SIZE}


def test_the_tile_overlaps_the_readme_states_are_the_predictors():
    restore = module_constant("predictors/restore.py", "TILE_OVERLAP")
    upscale = module_constant("predictors/upscale.py", "TILE_OVERLAP")
    assert re.search(
        rf"restore's tiles overlap by {restore} px and upscale's by {upscale} px", README
    )
    assert re.search(rf"Real-ESRGAN overlaps tiles by {upscale} px", README)
    assert re.search(rf"NAFNet by {restore} px", README)
    stated = re.findall(r"overlaps? (?:tiles )?by (\d+) px", README)
    assert {int(px) for px in stated} <= {restore, upscale}, stated


def parameter_rows() -> list[tuple[str, str, str, str]]:
    """(route, parameter, range, default) for every parameter the README's table lists."""
    rows, route = [], None
    for cells in table_rows(section("Parameters")):
        route = cells[0].strip("`") or route
        for name in re.findall(r"`(\w+)`", cells[1]):
            rows.append((route, name, cells[2], cells[3]))
    return rows


def test_the_parameter_table_matches_the_gateways_openapi(openapi):
    checked = 0
    for route, name, stated_range, stated_default in parameter_rows():
        parameters = openapi["paths"][route]["post"]["parameters"]
        schema = next(p["schema"] for p in parameters if p["name"] == name)
        if "anyOf" in schema:
            schema = {**schema, **next(s for s in schema["anyOf"] if s.get("type") != "null")}
        where = f"{route} {name}"
        if stated_default not in ("", "-"):
            default = schema.get("default")
            if isinstance(default, bool):
                assert stated_default == str(default).lower(), where
            elif isinstance(default, (int, float)):
                assert float(stated_default) == default, where
            else:
                assert stated_default == default, where
        span = re.fullmatch(r"`?(\d+(?:\.\d+)?)`?\.\.`?([\w.]+)`?(?: \((\d+)\))?", stated_range)
        if span:
            low, high, in_force = span.groups()
            assert float(low) == schema.get("minimum", schema.get("exclusiveMinimum")), where
            if high == "MAX_RENDER_FACTOR":
                assert int(in_force) == limits.DEFAULT_MAX_RENDER_FACTOR, where
                assert schema["maximum"] == limits.DEFAULT_MAX_RENDER_FACTOR, where
            else:
                assert float(high) == schema["maximum"], where
        elif stated_range.startswith("0 or >="):
            assert schema.get("minimum", 0) == 0, where
        checked += 1
    assert checked >= 15, checked


def test_the_gateway_settings_table_states_the_defaults():
    defaults: dict[str, str] = {}
    Settings().export(defaults)
    stated = {}
    for cells in table_rows(section("The gateway")):
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        for name in names:
            stated[name] = cells[1]
    for name, value in defaults.items():
        if name.startswith(("PREDICTOR_", "MODEL_")):
            continue
        assert name in stated, f"{name} is a gateway setting the README does not list"
        assert float(stated[name]) == float(value), (
            f"README says {name}={stated[name]}, code {value}"
        )


def test_the_predictor_defaults_the_readme_states(monkeypatch):
    for name in ("MAX_FACES", "SHUTDOWN_GRACE_SECONDS", "TILE_BATCH", "MAX_RENDER_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["predictors", "face-restore", "--model_dir", "/nonexistent"])
    from predictors.__main__ import parse_args

    args = parse_args()
    stated = {
        cells[0].strip("`"): cells[2] for cells in table_rows(section("Predictors and `make run`"))
    }
    assert int(stated["MAX_FACES"]) == args.max_faces
    assert int(stated["SHUTDOWN_GRACE_SECONDS"]) == args.shutdown_grace_seconds
    assert int(stated["TILE_BATCH"]) == args.tile_batch
    assert f"`MAX_FACES` (`--max_faces`, {args.max_faces})" in README
    assert (
        f"`SHUTDOWN_GRACE_SECONDS` (`--shutdown_grace_seconds`, {args.shutdown_grace_seconds})"
        in README
    )


def test_the_contents_links_point_at_headings():
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", README, re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(anchor)
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert len(links) >= 10
    for link in links:
        assert link in anchors, f"README links to #{link}, which no heading makes"
    for path in re.findall(r"\]\(((?:docs|charts|bench)/[^)#]+)\)", README):
        assert (ROOT / path).exists(), path
