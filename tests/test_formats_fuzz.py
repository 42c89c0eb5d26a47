"""Fuzz: mutated versions of valid files end in a valid AnnotationSet or a FormatError, never another exception."""

import copy
import json
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semlayer import formats
from semlayer.errors import FormatError
from semlayer.scene import AnnotationSet

DATA = Path(__file__).parent / "data"
FIXTURES = {
    name: json.loads((DATA / f"{name}.json").read_text())
    for name in ("cocoa_toy", "bsds_toy", "coco_toy", "kins2019_toy", "kins2020_toy", "results_toy")
}
EXAMPLES = int(os.environ.get("SEMLAYER_FUZZ_EXAMPLES", "150"))

# Values of every JSON type, plus the numbers that break naive code (0, negatives, huge, fractional).
ODD_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    7,
    1.5,
    -0.5,
    2**40,
    10**400,
    1e300,
    float("nan"),
    float("inf"),
    "",
    "x",
    "1-2,2-1",
    "0",
    [],
    [0],
    [1.0, 2.0, 3.0],
    [[]],
    {},
    {"size": [8, 10], "counts": "0"},
    {"size": [8, 10], "counts": [80]},
    {"size": "x"},
]


def _containers(obj, path=()):
    """Every (path, container) in a JSON tree."""
    if isinstance(obj, (dict, list)):
        yield path, obj
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            yield from _containers(value, path + (key,))


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(FIXTURES)))
    obj = copy.deepcopy(FIXTURES[name])
    for _ in range(draw(st.integers(1, 3))):
        targets = [c for _, c in _containers(obj) if c]
        if not targets:
            break
        container = draw(st.sampled_from(targets))
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        key = draw(st.sampled_from(keys))
        op = draw(st.sampled_from(["delete", "replace", "truncate", "nudge"]))
        value = container[key]
        if op == "delete":
            del container[key]
        elif op == "truncate" and isinstance(value, (list, str)):
            container[key] = value[: draw(st.integers(0, max(len(value) - 1, 0)))]
        elif op == "nudge" and isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e9:
            container[key] = value + draw(st.sampled_from([-1, 1, -value, value, 0.5]))
        else:
            container[key] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
    return name, obj


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_read_or_fail_cleanly(case):
    _, obj = case
    try:
        annset = formats.from_dict(obj, "fuzz.json")
    except FormatError:
        pass
    else:
        assert isinstance(annset, AnnotationSet)
        for scene in annset.scenes:
            scene.check_ranks()
        # whatever was read can be written in every format and read back
        for writer in (formats.to_cocoa, formats.to_coco, formats.to_results):
            formats.from_dict(json.loads(json.dumps(writer(annset))))
    try:
        violations = formats.validate(obj)
    except FormatError:
        return
    assert all(isinstance(v, formats.Violation) and str(v) for v in violations)


@settings(max_examples=EXAMPLES // 3, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(FIXTURES)), st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_fail_with_format_error(tmp_path_factory, name, fraction):
    text = json.dumps(FIXTURES[name])
    path = tmp_path_factory.mktemp("trunc") / "cut.json"
    path.write_text(text[: int(len(text) * fraction)])
    for reader in (formats.load, formats.validate):
        try:
            reader(path)
        except FormatError as err:
            assert err.file == str(path)
        else:
            raise AssertionError("a truncated file was accepted")
