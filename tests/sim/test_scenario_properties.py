"""Property: any file given as a scenario loads or gets a ScenarioError naming the file, never
another exception or a hang (load only: nothing is replayed)."""
from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from trimtab.sim.data import bundled_scenarios, scenario_path
from trimtab.sim.scenario import Scenario, ScenarioError, load_scenario

BUNDLED = {name: yaml.safe_load(scenario_path(name).read_text()) for name in bundled_scenarios()}

ODD_SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12), st.binary(max_size=8),
    st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -10**400, 0, -1, 2**63, 1e308, -1e-308, "", "-1", "1e400",
                     ".inf", "nan", "~nosuchuser/p.json", "/", ".", "/dev/null", "x.json",
                     "llama2-70b-a100-tp2", "poisson", "llm", "affine", "prefix_aware"]))
ODD = st.recursive(ODD_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _dotted(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested mapping, sections included."""
    out: list[tuple] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out.extend(_dotted(v, prefix + (k,)))
    return out


def _set(doc: dict, keys: tuple, value: object) -> None:
    node = doc
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def _load(path):
    """The property: a Scenario, or a ScenarioError whose message names the file."""
    try:
        sc = load_scenario(path)
    except ScenarioError as exc:
        assert str(path) in str(exc), str(exc)
        return None
    assert isinstance(sc, Scenario)
    return sc


# (which key: an index into the document's key paths, or the path itself; replace it or add a
# key of this name beside it; the new value).
# Plausible values too, so that some mutated scenarios load and go on to the later checks.
PLAUSIBLE = st.one_of(st.integers(0, 100), st.floats(0.001, 1000), st.booleans())
MUTATION = st.tuples(st.integers(0, 10**6), st.sampled_from([False, False, False, True]),
                     st.text(max_size=8),
                     st.one_of(ODD, PLAUSIBLE, PLAUSIBLE))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(BUNDLED)), mutations=st.lists(MUTATION, min_size=1,
                                                                 max_size=3))
# Found by this test: a 400-digit kv_bytes_per_token overflowed the float // in num_blocks_for
# (OverflowError).
@example(name="llm-peer", mutations=[
    (("service", "scheduler", "num_blocks"), False, "", None),
    (("service", "memory"), False, "", {"gpu_bytes": 1e300, "weights_bytes": 1,
                                        "kv_bytes_per_token": 10**400})])
# Found by this test: a profile path "~nosuchuser/p.json" raised RuntimeError in expanduser.
@example(name="llm-peer", mutations=[(("service", "profile"), False, "", "~nosuchuser/p.json")])
def test_a_mutated_bundled_scenario_loads_or_names_the_file(tmp_path, name, mutations):
    doc = copy.deepcopy(BUNDLED[name])
    for pick, new_key, key, value in mutations:
        paths = _dotted(doc)
        keys = pick if isinstance(pick, tuple) else paths[pick % len(paths)]
        _set(doc, keys[:-1] + (key,) if new_key else keys, value)
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(doc))
    _load(path)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=ODD)
def test_any_yaml_document_loads_or_names_the_file(tmp_path, doc):
    path = tmp_path / "any.yaml"
    path.write_text(yaml.safe_dump(doc))
    _load(path)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.sampled_from([b"", b"name: x\n", b"\xef\xbb\xbf", b"[" * 3000, b"{a: " * 2000,
                             b"a: 1" + b"0" * 5000, b"!!python/object/apply:os.system [x]\n",
                             LAUGHS.encode(), b"trace: {format: poisson}\n"]),
       body=st.binary(max_size=60))
# Found by this test: a binary file raised UnicodeDecodeError (read_text outside `except OSError`).
@example(head=b"", body=b"\x00\xff\xfe\x80")
# Found by this test: 3,000 nested brackets raised RecursionError in PyYAML's composer.
@example(head=b"[" * 3000, body=b"")
@example(head=b"{a: " * 2000, body=b"")
# Found by this test: an int of 5,001 digits raised ValueError in PyYAML's int constructor.
@example(head=b"a: 1" + b"0" * 5000, body=b"")
# Found by this test: nine levels of aliases (9^9 shared items) as an unknown key: its repr in
# the message took seconds and hundreds of MB (now a bounded repr).
@example(head=LAUGHS.encode(), body=b"")
def test_any_bytes_load_or_name_the_file(tmp_path, head, body):
    path = tmp_path / "raw.yaml"
    path.write_bytes(head + body)
    _load(path)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(min_size=1, max_size=200))
def test_a_binary_garbage_file_is_a_named_error(tmp_path, noise):
    """A binary file (never UTF-8: 0xff cannot start a UTF-8 sequence) is refused by name."""
    path = tmp_path / "garbage.yaml"
    path.write_bytes(b"\xff" + noise)
    assert _load(path) is None


def test_a_directory_as_the_scenario_is_a_named_error(tmp_path):
    assert _load(tmp_path) is None
