"""Hostile and unlucky input: every case ends with its exit code, a message naming the file,
field or flag at fault, and no traceback, in a process of its own.

The subprocess timeout is only a safety net so a regression fails instead of hanging the
suite; nothing here measures time. A bounded loader is what makes each case end at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartly_dagster.core.catalog import (
    MAX_FOLDER_BYTES,
    MAX_PROFILE_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    ProfileCatalog,
    check_run_scope,
    read_yaml,
)
from chartly_dagster.core.profile import profile_json_schema
from chartly_dagster.core.refs import parse_ref
from tests.support.offline import REF, WINDOW, base_doc, run_cli, write_profile
from tests.support.paths import PROFILES

SAFETY_NET_SECONDS = 120
CLI = Path(sys.executable).with_name("chartly-tool")

# The 377-byte "billion laughs" of the audit: nine levels of nine aliases each.
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi",
                                                                  strict=True)]) + "\n"


def _valid(folder: Path) -> None:
    write_profile(folder, base_doc(), name="widgets.yaml")


def _nested_mapping(folder: Path) -> None:
    depth = 3000
    (folder / "deep.yaml").write_text("a: " + "{a: " * depth + "1" + "}" * depth + "\n",
                                      encoding="utf-8")


def _nested_blocks(folder: Path) -> None:
    depth = 100  # block indentation grows with depth: deeper would hit the size cap first
    (folder / "blocks.yaml").write_text("".join("  " * i + f"k{i}:\n" for i in range(depth)),
                                        encoding="utf-8")


def _flow_nesting(folder: Path) -> None:
    (folder / "flow.yaml").write_text("x: " + "[" * 100_000 + "]" * 100_000 + "\n",
                                      encoding="utf-8")


def _huge_file(folder: Path) -> None:
    doc = base_doc()
    doc["metadata"]["description"] = "x" * (MAX_PROFILE_BYTES + 1)
    write_profile(folder, doc, name="huge.yaml")


def _huge_folder(folder: Path) -> None:
    # Each file under the per-file cap; together over the folder cap.
    body = "# " + "x" * (MAX_PROFILE_BYTES - 100) + "\n"
    for i in range(MAX_FOLDER_BYTES // len(body) + 1):
        (folder / f"p{i:03d}.yaml").write_text(body, encoding="utf-8")


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text, encoding="utf-8")


def _mutated(mutate: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        doc = base_doc()
        mutate(doc)
        write_profile(folder, doc)
    return write


def _non_utf8(folder: Path) -> None:
    (folder / "latin1.yaml").write_bytes("description: caf\xe9\n".encode("latin-1"))


def _fifo_next_to_a_profile(folder: Path) -> None:
    _valid(folder)
    os.mkfifo(folder / "pipe.yaml")  # reading it would block forever


def _plan(*extra: str, window: tuple[str, str] = WINDOW, command: str = "plan") -> list[str]:
    args = ["connector-tester", command, "--env", "staging", "--tenant", "tenant-test",
            "--project", "proj-test", "--connector-profile", REF]
    if command != "doctor":
        args += ["--window-start", window[0], "--window-end", window[1]]
    return [*args, *extra]


LIST = ["profiles", "list"]

# (label, how to fill the profiles folder, argv, exit code, words the message must hold)
CASES: list[tuple[str, Callable[[Path], None], list[str], int, tuple[str, ...]]] = [
    ("alias bomb: list", _text("bomb.yaml", ALIAS_BOMB), LIST, 4,
     ("bomb.yaml", "<yaml>", "aliases expand")),
    ("alias bomb: plan", _text("bomb.yaml", ALIAS_BOMB), _plan(), 4, ("bomb.yaml",)),
    ("alias bomb next to a valid profile", lambda f: (_valid(f), _text("bomb.yaml",
                                                                       ALIAS_BOMB)(f)),
     _plan(), 4, ("bomb.yaml", "aliases expand")),
    ("alias that contains itself", _text("loop.yaml", "a: &a [*a]\n"), LIST, 4,
     ("loop.yaml", "contains it")),
    ("3,000-level mapping", _nested_mapping, LIST, 4,
     ("deep.yaml", f"deeper than {MAX_YAML_DEPTH}")),
    ("100-level block mapping", _nested_blocks, LIST, 4, ("blocks.yaml", "deeper than")),
    ("100,000-level flow nesting", _flow_nesting, LIST, 4, ("flow.yaml", "deeper than")),
    ("many nodes", _text("wide.yaml", "".join(f"k{i}: {i}\n"
                                              for i in range(MAX_YAML_NODES))),
     LIST, 4, ("wide.yaml", f"more than {MAX_YAML_NODES}")),
    ("file over the cap", _huge_file, LIST, 4, ("huge.yaml", "<file>", "KiB")),
    ("folder over the cap", _huge_folder, LIST, 4, ("<folder>", "MiB")),
    ("5,000-digit integer", _text("digits.yaml", "x: " + "7" * 5000 + "\n"), LIST, 4,
     ("digits.yaml", "line 1", "int value")),
    ("impossible timestamp", _text("ts.yaml", "x: !!timestamp 2026-13-45\n"), LIST, 4,
     ("ts.yaml", "timestamp value")),
    ("mapping as a key", _text("key.yaml", "? {a: b}\n: c\n"), LIST, 4,
     ("key.yaml", "mapping key")),
    ("python tag", _text("tag.yaml", "x: !!python/object/apply:os.system [id]\n"), LIST, 4,
     ("tag.yaml", "<yaml>")),
    ("not UTF-8", _non_utf8, LIST, 4, ("latin1.yaml", "cannot read")),
    ("a FIFO named .yaml is not read", _fifo_next_to_a_profile, LIST, 0, ()),
    ("year 1 with a positive offset", _valid,
     _plan(window=("0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00Z")), 2,
     ("window-start", "1970")),
    ("year 9999 with a negative offset", _valid,
     _plan(window=("2026-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00")), 2,
     ("window-end", "9999")),
    ("before 1970", _valid,
     _plan(window=("1969-12-31T00:00:00Z", "1970-01-01T00:00:00Z")), 2, ("window-start",)),
    ("doctor with half a window", _valid,
     _plan("--window-start", WINDOW[0], command="doctor"), 2, ("--window-end",)),
    ("plan does not offer --apply", _valid, _plan("--apply"), 2, ("--apply",)),
    ("huge --max-pages", _valid, _plan("--max-pages", "9" * 5000), 2, ("--max-pages",)),
    ("unknown key", _mutated(lambda d: d["spec"].update(pagnation=d["spec"].pop(
        "pagination"))), LIST, 4, ("widgets.yaml", "spec.pagnation", "did you mean")),
    ("typo inside a variant", _mutated(lambda d: d["variants"]["dev"]["spec"][
        "egressPolicy"].update(alowedPorts=[1])), LIST, 4,
     ("variants.dev", "alowedPorts", "did you mean 'allowedPorts'")),
    ("float overflow", _mutated(lambda d: d["spec"]["transport"].update(timeoutMs=1e400)),
     LIST, 4, ("spec.transport.timeoutMs",)),
    ("a bool where an int belongs", _mutated(lambda d: d["spec"]["pagination"].update(
        pageSize=True)), LIST, 4, ("widgets.yaml", "spec.pagination.pageSize")),
    ("a numeric string where an int belongs", _mutated(lambda d: d["spec"]["pagination"].update(
        pageSize="500")), LIST, 4, ("widgets.yaml", "spec.pagination.pageSize")),
    ("missing profiles folder", lambda f: f.rmdir(), LIST, 3,
     ("profiles folder", "does not exist")),
]


def _cli(argv: list[str], folder: Path | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHARTLY_")}
    command = [str(CLI), *argv]
    if folder is not None:
        command += ["--profiles-dir", str(folder)]
    return subprocess.run(command, capture_output=True, text=True, env=environ,
                          timeout=SAFETY_NET_SECONDS, check=False)


def _assert_clean(proc: subprocess.CompletedProcess) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream
        assert "RecursionError" not in stream


@pytest.mark.parametrize(("label", "setup", "argv", "exit_code", "words"), CASES,
                         ids=[c[0] for c in CASES])
def test_hostile_input_table(tmp_path: Path, label: str, setup: Callable[[Path], None],
                             argv: list[str], exit_code: int, words: tuple[str, ...]) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    setup(folder)
    for fmt in ("json", "text"):
        proc = _cli([*argv, "--format", fmt], folder)
        _assert_clean(proc)
        assert proc.returncode == exit_code, (label, proc.stdout[-2000:], proc.stderr[-2000:])
        if exit_code == 0:
            continue
        if fmt == "json":
            doc = json.loads(proc.stdout)
            assert doc["exit_code"] == exit_code
            message = json.dumps(doc["error"])
        else:
            assert proc.stdout == ""
            message = proc.stderr
        for word in words:
            assert word in message, (label, word, message[-2000:])


# -- unexpected errors: the JSON error document, exit 1, details only when asked -------------

SECRET_TEXT = "s3cr3t-value-in-an-exception"


@pytest.fixture
def exploding_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SECRET_TEXT)

    monkeypatch.setattr("chartly_dagster.cli.connector_tester.load_catalog", explode)
    monkeypatch.setattr("chartly_dagster.cli.profiles.load_catalog", explode)


@pytest.mark.parametrize("argv", [
    ["profiles", "list"],
    ["connector-tester", "plan", "--env", "dev", "--tenant", "t", "--project", "p",
     "--connector-profile", REF, "--window-start", WINDOW[0], "--window-end", WINDOW[1]],
])
def test_unexpected_error_is_a_json_error_with_exit_1(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        exploding_catalog: None, argv: list[str]) -> None:
    monkeypatch.delenv("CHARTLY_DEBUG", raising=False)
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    doc = json.loads(out)
    assert doc["exit_code"] == 1 and doc["error"]["code"] == "internal_error"
    assert "RuntimeError" in doc["error"]["message"] and "--debug" in doc["error"]["message"]
    assert SECRET_TEXT not in out + err and "Traceback" not in out + err
    code, out, err = run_cli(capsys, *argv, "--format", "text")
    assert (code, out) == (1, "")
    assert err.startswith("error [internal_error]: unexpected RuntimeError")
    # Asked for, the traceback goes to stderr; stdout keeps the one JSON document.
    code, out, err = run_cli(capsys, "--debug", *argv)
    assert code == 1 and json.loads(out)["error"]["code"] == "internal_error"
    assert "Traceback" in err and "RuntimeError" in err
    monkeypatch.setenv("CHARTLY_DEBUG", "1")
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and "Traceback" in err


# -- the loader's bounds, one at a time ---------------------------------------------------------

def test_aliases_within_the_bounds_still_work() -> None:
    text = "base: &b {dnsAllowlist: [localhost], allowedPorts: [8765]}\ndev: *b\nprod: *b\n"
    doc = read_yaml(text)
    assert doc["dev"] == doc["prod"] == {"dnsAllowlist": ["localhost"], "allowedPorts": [8765]}


def test_nesting_up_to_the_bound_loads() -> None:
    depth = MAX_YAML_DEPTH - 1
    doc = read_yaml("x: " + "[" * depth + "]" * depth + "\n")
    for _ in range(depth):
        doc = doc["x"] if isinstance(doc, dict) else doc[0] if doc else doc
    assert doc == []


@pytest.mark.parametrize("text", [
    ALIAS_BOMB,
    # Shallow text, deep tree: each alias adds the depth of the node it names.
    "".join(f"l{i}: &l{i} [{'*l' + str(i - 1) if i else 0}]\n" for i in range(MAX_YAML_DEPTH)),
])
def test_alias_expansion_is_measured_not_performed(text: str) -> None:
    with pytest.raises(yaml.YAMLError, match="aliases expand"):
        read_yaml(text)


def test_every_broken_file_is_reported_with_its_path(tmp_path: Path) -> None:
    _valid(tmp_path)
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB, encoding="utf-8")
    _nested_mapping(tmp_path)
    catalog = ProfileCatalog.load(tmp_path)
    assert sorted({i.path for i in catalog.issues}) == ["bomb.yaml", "deep.yaml"]
    assert catalog.resolve(parse_ref(REF)).connector == "widgets"


# -- messages that point at the fix -------------------------------------------------------------

def test_env_mismatch_names_the_variant_enabled_for_that_env(
        capsys: pytest.CaptureFixture[str]) -> None:
    catalog = ProfileCatalog.load(PROFILES)
    ref = parse_ref("tenant-demo/proj-sales::connector/orders@2.1.0")
    resolved = catalog.resolve(ref)
    with pytest.raises(Exception, match=r"enabled for dev: #dev \(use "
                                        r"tenant-demo/proj-sales::connector/orders@2\.1\.0#dev"):
        check_run_scope(resolved, env="dev", tenant="tenant-demo", project="proj-sales",
                        catalog=catalog)
    code, out, _ = run_cli(capsys, "connector-tester", "plan", "--env", "prod", "--tenant",
                           "tenant-demo", "--project", "proj-sales", "--connector-profile",
                           "tenant-demo/proj-sales::connector/orders@2.1.0#dev",
                           "--window-start", WINDOW[0], "--window-end", WINDOW[1],
                           "--profiles-dir", str(PROFILES))
    assert code == 3
    assert "enabled for prod: #prod" in json.loads(out)["error"]["message"]


def test_schema_checks_inside_variants() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(profile_json_schema())
    for path in sorted(PROFILES.rglob("*.yaml")):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path
    bad: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("typo in a variant's spec", lambda d: d["variants"]["dev"]["spec"]["egressPolicy"]
         .update(alowedPorts=[1])),
        ("unknown section in a variant", lambda d: d["variants"]["dev"].update(specs={})),
        ("variant renames the profile", lambda d: d["variants"]["dev"].update(
            metadata={"name": "other"})),
        ("wrong type in a variant", lambda d: d["variants"]["dev"]["spec"]["transport"]
         .update(timeoutMs="fast")),
        ("bad variant name", lambda d: d["variants"].update(Dev={})),
    ]
    for label, mutate in bad:
        doc = base_doc()
        mutate(doc)
        assert list(validator.iter_errors(doc)), label
    doc = base_doc()  # a merge patch may delete (null) and needs no required key
    doc["variants"]["dev"]["spec"]["request"] = {"headers": {"Accept": None}}
    doc["variants"]["dev"]["metadata"] = {"description": None, "owners": ["team:dev"]}
    assert not list(validator.iter_errors(doc))


def test_a_hostile_file_fails_the_code_location_at_once_naming_it(tmp_path: Path) -> None:
    """Through `dagster definitions validate`: the documented "any broken profile fails the
    load" rule, reached quickly with the file named, instead of a hung code location."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    _valid(folder)
    (folder / "bomb.yaml").write_text(ALIAS_BOMB, encoding="utf-8")
    code = tmp_path / "defs.py"
    code.write_text("from chartly_dagster.integration import build_definitions\n\n"
                    f"defs = build_definitions({str(folder)!r}, env='dev', schedules=False)\n",
                    encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    environ = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions",
                           "validate", "-f", str(code)], capture_output=True, text=True,
                          env=environ, timeout=SAFETY_NET_SECONDS, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "bomb.yaml" in output and "aliases expand" in output
    assert "RecursionError" not in output


def test_a_folder_that_is_not_a_profiles_folder_is_not_walked_to_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `--profiles-dir /` would scan a disk: the walk stops at a bound (lowered here).
    monkeypatch.setattr("chartly_dagster.core.catalog.MAX_FOLDER_ENTRIES", 10)
    for i in range(4):
        (tmp_path / f"sub{i}").mkdir()
        for j in range(3):
            (tmp_path / f"sub{i}" / f"f{j}.txt").write_text("", encoding="utf-8")
    issues = ProfileCatalog.load(tmp_path).issues
    assert [(i.path, i.field) for i in issues] == [(".", "<folder>")]
    assert "more than 10 entries" in issues[0].message
