"""Any mutation of a valid config or stacks sheet is accepted or refused by name, never crashes.

Hypothesis deletes keys, sets wrong types, out-of-range numbers, NaN and
infinity, adds unknown keys at every level, edits the YAML text, and adds,
drops and rewrites the sheet's cells and lines. Validation must either accept
the result or raise :class:`ConfigError` naming the key (dotted path) or the
sheet's line; any other exception is a bug. Derandomized and bounded so that
the module runs in well under a minute.
"""

import copy
import math
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, tiny_config
from grainflow.config import ConfigError, load_config_file, validate_config
from grainflow.stacks.sheet import read_stacks

SETTINGS = settings(
    max_examples=120,
    deadline=None,  # a shared 2-core machine; the example count bounds the time
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

with open(ROOT / "config" / "config.yaml") as f:
    DEFAULT = yaml.safe_load(f)
BASES = {"default": DEFAULT, "tiny": tiny_config()}


def _paths(node, path=()):
    """Every key path of ``node``: mapping keys and list indices, at every depth."""
    if isinstance(node, dict):
        children = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return []
    out = []
    for key, value in children:
        out.append((*path, key))
        out += _paths(value, (*path, key))
    return out


PATHS = {name: _paths(config) for name, config in BASES.items()}
README_LINE = "\nSee config/README.md for every key, its type and its allowed values."


def _dotted(parts):
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _node(config, parts):
    for part in parts:
        config = config[part]
    return config


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**31, 1e-12, 1e12, "", "auto", "1", "nan", ".inf"]),
    st.text(max_size=6),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
keys = st.one_of(st.text(min_size=1, max_size=8), st.integers(-3, 3), st.booleans())


@st.composite
def mutations(draw):
    """(base name, mutated config, mutated path, kind) for one mutation of a valid config."""
    name = draw(st.sampled_from(sorted(BASES)))
    config = copy.deepcopy(BASES[name])
    path = draw(st.sampled_from(PATHS[name]))
    *parent_path, last = path
    parent = _node(config, parent_path)
    kind = draw(st.sampled_from(["delete", "set", "scale", "add"]))
    if kind == "delete":
        del parent[last]
    elif kind == "set":
        parent[last] = draw(values)
    elif kind == "scale":  # out of range, negative, non-finite, or just another number
        value = parent[last]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = 1
        factor = draw(st.sampled_from([-1, 0, 1e-9, 1000, 1e12, math.inf, math.nan]))
        scaled = value * factor
        parent[last] = int(scaled) if isinstance(value, int) and math.isfinite(scaled) else scaled
    else:  # an unknown key: inside the mapping at path, else beside it
        if isinstance(parent[last], dict):
            block, block_path = parent[last], path
        elif isinstance(parent, dict):
            block, block_path = parent, tuple(parent_path)
        else:
            block, block_path = config, ()
        key = draw(keys.filter(lambda k: k not in block))
        block[key] = draw(values)
        path = (*block_path, key)
    return name, config, tuple(path), kind


def _names(message, path):
    """Whether ``message`` names ``path``, its parent, or its architecture block."""
    candidates = {_dotted(path[:k]) for k in range(max(1, len(path) - 1), len(path) + 1)}
    if len(path) >= 3 and path[1] == "archs":
        candidates.add(_dotted(path[:3]))
    if len(path) == 1:
        candidates.add("(top level)")
    key = path[-1]
    return any(c and c in message for c in candidates) or (
        not isinstance(key, str) and repr(key) in message
    )


@SETTINGS
@given(mutations())
def test_a_mutated_config_is_accepted_or_refused_by_name(mutation):
    name, config, path, kind = mutation
    try:
        validate_config(config, source="mutated.yaml")
    except ConfigError as exc:
        head, _, problems = str(exc).partition("\n")
        assert head == "mutated.yaml is not a valid grainflow configuration:"
        problems = problems.removesuffix(README_LINE)
        assert _names(problems, path), (kind, path, problems)


# --- the YAML text itself --------------------------------------------------------------------

TEXT = (ROOT / "config" / "config.yaml").read_text()
SIGNIFICANT = list(":-[]{}\t '\"#&*!|>%@`,?\n") + ["  ", ": ", "- ", "2026-13-01", ".nan", "yes"]


@st.composite
def edited_texts(draw):
    text = TEXT
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(SIGNIFICANT)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
    return text


@SETTINGS
@given(text=edited_texts())
def test_an_edited_yaml_file_is_read_or_refused_naming_file_and_line(tmp_path, text):
    path = tmp_path / "edited.yaml"
    path.write_text(text)
    try:
        config = load_config_file(path)
        validate_config(config, source=str(path), files=[path])
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message
        if "not valid YAML" in message:
            assert re.search(r", line \d+, column \d+: not valid YAML", message), message


# --- the stacks sheet ------------------------------------------------------------------------

HEADER = ["stack", "task", "path", "pixel_size_um", "ground_truth", "group", "description"]
cells = st.one_of(
    st.sampled_from(
        ["", " ", "grains", "phases", "diffraction", "inf", "nan", "-1", "0", "1e-3", "#", "a b"]
    ),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=8),
)


@pytest.fixture(scope="module")
def sheet_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sheet")


@st.composite
def edited_sheets(draw):
    rows = [
        list(HEADER),
        ["steel", "grains", ".", "0.2252", "", "", "NIST steel"],
        ["alloy", "phases", ".", "", ".", r"^(spot\d+)_", "superalloy"],
    ]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cell", "add field", "drop field", "line", "drop line"]))
        i = draw(st.integers(0, len(rows) - 1))
        if kind == "cell":
            rows[i][draw(st.integers(0, len(rows[i]) - 1))] = draw(cells)
        elif kind == "add field":
            rows[i].insert(draw(st.integers(0, len(rows[i]))), draw(cells))
        elif kind == "drop field" and len(rows[i]) > 1:
            del rows[i][draw(st.integers(0, len(rows[i]) - 1))]
        elif kind == "line":
            extra = draw(st.sampled_from(["", "  \t ", "# note", "\t".join(rows[-1])]))
            rows.insert(draw(st.integers(0, len(rows))), [extra])
        elif kind == "drop line" and len(rows) > 1:
            del rows[i]
    lines = ["\t".join(row) for row in rows]
    return "\n".join(lines) + "\n"


@SETTINGS
@given(text=edited_sheets(), tasks=st.sampled_from([None, ["grains"], ["grains", "phases"]]))
def test_an_edited_sheet_is_read_or_refused_naming_file_and_line(sheet_dir, text, tasks):
    sheet = sheet_dir / "stacks.tsv"
    sheet.write_text(text)
    n_lines = text.count("\n")
    try:
        table = read_stacks(sheet, tasks=tasks)
    except ConfigError as exc:
        message = str(exc)
        assert str(sheet) in message
        assert "line " in message or "column" in message, message
        assert all(1 <= int(n) <= n_lines for n in re.findall(r"line (\d+)", message)), message
    else:
        rows = [line.split("\t") for line in text.split("\n")]
        assert set(table.index) <= {row[0].strip() for row in rows}
        assert table["pixel_size_um"].dropna().map(math.isfinite).all()
