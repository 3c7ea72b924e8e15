"""The upstream .github/allowlist.yml format: parsing, every error case, import, export and the round trip."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from oot_ingest.allowlist import AllowlistError, export_allowlist, import_allowlist, parse_allowlist
from oot_ingest.models import AllowlistEntry, PolicyChange
from tests.conftest import DEMO_ALLOWLIST


def entry_tuples(entries) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """Reduce parsed or stored entries to comparable (repository, level, device, oncalls) tuples."""
    result = set()
    for entry in entries:
        oncalls = entry.oncalls if isinstance(entry.oncalls, list) else entry.oncall_list
        result.add((entry.repository, entry.level, entry.device, tuple(oncalls)))
    return result


def stored_tuples() -> set[tuple[str, str, str, tuple[str, ...]]]:
    return entry_tuples(AllowlistEntry.objects.all())


# Parsing


def test_parse_every_item_form():
    text = """
L1:
  - example-labs/torch-riscv
L2:
  - acme-ai/torch-npu: "npu-oncall-a, npu-oncall-b"
  - fabrikam/tpu-bridge: [tpu-a, tpu-b]
  - openreg/torch-openreg:
L3:
  xpu:
    contoso/xpu-backend:
      - xpu-oncall
    contoso/xpu-nightly: "night-a, night-b"
  gaudi:
    habana/torch-gaudi: []
L4:
  - initech/rocm-ci: rocm-oncall
"""
    assert entry_tuples(parse_allowlist(text)) == {
        ("example-labs/torch-riscv", "L1", "", ()),
        ("acme-ai/torch-npu", "L2", "", ("npu-oncall-a", "npu-oncall-b")),
        ("fabrikam/tpu-bridge", "L2", "", ("tpu-a", "tpu-b")),
        ("openreg/torch-openreg", "L2", "", ()),
        ("contoso/xpu-backend", "L3", "xpu", ("xpu-oncall",)),
        ("contoso/xpu-nightly", "L3", "xpu", ("night-a", "night-b")),
        ("habana/torch-gaudi", "L3", "gaudi", ()),
        ("initech/rocm-ci", "L4", "", ("rocm-oncall",)),
    }


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "{}", "L1:\nL2:\nL3:\nL4:\n", "L3:\n  xpu:\n"])
def test_parse_empty_documents(text):
    assert parse_allowlist(text) == []


def test_parse_records_places():
    parsed = parse_allowlist("L2:\n  - a/one\n  - a/two\nL3:\n  xpu:\n    b/three: []\n")
    assert [entry.place for entry in parsed] == ["L2[0]", "L2[1]", "L3.xpu.b/three"]


PARSE_ERRORS = [
    ("top level list", "- acme/x\n", "must be a mapping with keys L1 to L4, got a list"),
    ("top level string", "acme/x\n", "must be a mapping with keys L1 to L4, got a str"),
    ("unknown key", "L5:\n  - acme/x\n", "unknown key 'L5'"),
    ("lower-case key", "l2:\n  - acme/x\n", "unknown key 'l2'"),
    ("level not a list", "L2: acme/x\n", "L2: must be a list of repositories, got a str"),
    ("level is a mapping", "L4:\n  acme/x: a\n", "L4: must be a list of repositories, got a dict"),
    ("item with two keys", "L2:\n  - {acme/x: a, acme/y: b}\n", "L2[0]: each item maps one repository"),
    ("item is a number", "L2:\n  - 5\n", "L2[0]: 5 is not a GitHub owner/repo name"),
    ("item is a list", "L1:\n  - [acme/x]\n", "L1[0]: ['acme/x'] is not a GitHub owner/repo name"),
    ("name without owner", "L2:\n  - torch-npu\n", "L2[0]: 'torch-npu' is not a GitHub owner/repo name"),
    ("name with two slashes", "L2:\n  - a/b/c\n", "L2[0]: 'a/b/c' is not a GitHub owner/repo name"),
    ("name with a space", "L2:\n  - acme /x\n", "L2[0]: 'acme /x' is not a GitHub owner/repo name"),
    ("oncalls a number", "L2:\n  - acme/x: 5\n", "L2[0]: oncalls must be a string"),
    ("oncalls list of numbers", "L2:\n  - acme/x: [1, 2]\n", "L2[0]: oncalls must be a string"),
    ("oncalls a mapping", "L2:\n  - acme/x: {a: b}\n", "L2[0]: oncalls must be a string"),
    ("oncall with a space", "L2:\n  - acme/x: [alice smith]\n", "L2[0]: oncall 'alice smith' is not a valid handle"),
    ("oncall with a comma", "L2:\n  - acme/x: ['a,b', c]\n", "L2[0]: oncall 'a,b' is not a valid handle"),
    ("L3 a list", "L3:\n  - acme/x\n", "L3: must map device names to repositories, got a list"),
    ("L3 device a list", "L3:\n  xpu:\n    - acme/x\n", "L3.xpu: must map repositories to oncall lists, got a list"),
    ("L3 device a number", "L3:\n  910:\n    acme/x: []\n", "L3: device name 910 must be a non-empty string"),
    ("L3 device empty", "L3:\n  '':\n    acme/x: []\n", "L3: device name '' must be a non-empty string"),
    ("L3 bad repository", "L3:\n  xpu:\n    acme: []\n", "L3.xpu.acme: 'acme' is not a GitHub owner/repo name"),
    ("L3 bad oncalls", "L3:\n  xpu:\n    acme/x: 7\n", "L3.xpu.acme/x: oncalls must be a string"),
    ("not YAML", "L2: [acme/x\n", "the allowlist is not valid YAML"),
    ("tab indentation", "L2:\n\t- acme/x\n", "the allowlist is not valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "message"), PARSE_ERRORS, ids=[case for case, _, _ in PARSE_ERRORS])
def test_parse_error_names_key(case, text, message):
    with pytest.raises(AllowlistError) as error:
        parse_allowlist(text)
    assert message in str(error.value)


DUPLICATES = [
    ("same list", "L2:\n  - acme/x\n  - acme/y\n  - acme/x\n", "acme/x is listed twice: at L2[0] and at L2[2]"),
    (
        "other case",
        "L2:\n  - Acme/X\nL4:\n  - acme/x\n",
        "acme/x is listed twice (names ignore case): at L2[0] as Acme/X and at L4[0]",
    ),
    ("L2 and L3", "L2:\n  - acme/x\nL3:\n  xpu:\n    ACME/x: []\n", "at L2[0] as acme/x and at L3.xpu.ACME/x"),
    ("two devices", "L3:\n  xpu:\n    acme/x: []\n  npu:\n    acme/x: []\n", "at L3.xpu.acme/x and at L3.npu.acme/x"),
    ("one device", "L3:\n  xpu:\n    acme/x: []\n    acme/x: [a]\n", "acme/x is listed twice: at line 3 and at line 4"),
    ("level key twice", "L2:\n  - acme/x\nL2:\n  - acme/y\n", "L2 is listed twice: at line 1 and at line 3"),
]


@pytest.mark.parametrize(("case", "text", "message"), DUPLICATES, ids=[case for case, _, _ in DUPLICATES])
def test_parse_duplicate_names_both_places(case, text, message):
    with pytest.raises(AllowlistError) as error:
        parse_allowlist(text)
    assert message in str(error.value)


def test_parse_oncalls_too_long():
    handles = ", ".join(f"oncall-{index:03d}" for index in range(60))
    with pytest.raises(AllowlistError) as error:
        parse_allowlist(f'L2:\n  - acme/x: "{handles}"\n')
    assert "L2[0]: the oncall list is longer than 500 characters" in str(error.value)


# Import


def test_import_creates_entries_and_history(db):
    result = import_allowlist(DEMO_ALLOWLIST.read_text(encoding="utf-8"))

    assert result.applied is True
    assert len(result.created) == 8
    assert result.updated == []
    assert result.removed == []
    assert stored_tuples() == entry_tuples(parse_allowlist(DEMO_ALLOWLIST.read_text(encoding="utf-8")))
    added = PolicyChange.objects.filter(action=PolicyChange.Action.ADDED, kind=PolicyChange.Kind.ALLOWLIST)
    assert added.count() == 8
    assert {change.actor for change in added} == {"manage.py allowlist"}


def test_import_keeps_fields_yaml_lacks(db):
    entry = AllowlistEntry.objects.create(
        repository="acme/x", level="L2", enabled=False, notes="paused by vendor", provenance="enforce"
    )

    result = import_allowlist("L3:\n  npu:\n    ACME/X: [alice]\n")

    assert result.updated == ["ACME/X"]
    entry.refresh_from_db()
    assert (entry.repository, entry.level, entry.device, entry.oncalls) == ("ACME/X", "L3", "npu", "alice")
    assert entry.enabled is False
    assert entry.notes == "paused by vendor"
    assert entry.provenance == "enforce"
    level_change = PolicyChange.objects.get(field="level")
    assert (level_change.old_value, level_change.new_value) == ("L2", "L3")
    assert level_change.target == "ACME/X"
    assert level_change.source == "command"


def test_import_clears_device_when_leaving_l3(db):
    AllowlistEntry.objects.create(repository="acme/x", level="L3", device="xpu")

    import_allowlist("L4:\n  - acme/x\n")

    entry = AllowlistEntry.objects.get()
    assert (entry.level, entry.device) == ("L4", "")


def test_import_prunes_unless_keep(db):
    AllowlistEntry.objects.create(repository="acme/old", level="L2")

    kept = import_allowlist("L2:\n  - acme/new\n", prune=False)
    assert kept.removed == []
    assert AllowlistEntry.objects.filter(repository="acme/old").exists()

    pruned = import_allowlist("L2:\n  - acme/new\n")
    assert pruned.removed == ["acme/old"]
    assert list(AllowlistEntry.objects.values_list("repository", flat=True)) == ["acme/new"]
    assert PolicyChange.objects.filter(action=PolicyChange.Action.REMOVED, target="acme/old").count() == 1


def test_import_empty_file_empties_allowlist(db):
    AllowlistEntry.objects.create(repository="acme/old", level="L2")

    result = import_allowlist("")

    assert result.removed == ["acme/old"]
    assert not AllowlistEntry.objects.exists()


def test_import_dry_run_writes_nothing(db):
    AllowlistEntry.objects.create(repository="acme/old", level="L2")
    AllowlistEntry.objects.create(repository="acme/moved", level="L2")

    result = import_allowlist("L2:\n  - acme/new\nL4:\n  - acme/moved\n", dry_run=True)

    assert (result.created, result.updated, result.removed) == (["acme/new"], ["acme/moved"], ["acme/old"])
    assert result.applied is False
    assert "dry run" in result.summary()
    assert stored_tuples() == {("acme/old", "L2", "", ()), ("acme/moved", "L2", "", ())}
    assert not PolicyChange.objects.exists()


def test_import_invalid_file_changes_nothing(db):
    AllowlistEntry.objects.create(repository="acme/old", level="L2")

    with pytest.raises(AllowlistError):
        import_allowlist("L2:\n  - acme/new\n  - acme/NEW\n")

    assert stored_tuples() == {("acme/old", "L2", "", ())}


def test_import_unchanged_file_updates_nothing(db):
    text = DEMO_ALLOWLIST.read_text(encoding="utf-8")
    import_allowlist(text)
    history = PolicyChange.objects.count()

    result = import_allowlist(text)

    assert (result.created, result.updated, result.removed) == ([], [], [])
    assert PolicyChange.objects.count() == history


# Export and the round trip


def test_round_trip_demo_allowlist(db):
    demo = DEMO_ALLOWLIST.read_text(encoding="utf-8")
    import_allowlist(demo)
    exported = export_allowlist()

    assert entry_tuples(parse_allowlist(exported)) == entry_tuples(parse_allowlist(demo))

    AllowlistEntry.objects.all().delete()
    import_allowlist(exported)
    assert stored_tuples() == entry_tuples(parse_allowlist(demo))
    assert export_allowlist() == exported


EDGE_CASE_ENTRIES = [
    ("Mixed-Case/Repo.Name", "L2", "", "Alice, bob_2"),
    ("acme/.github", "L1", "", ""),
    ("my-org/under_score-repo", "L4", "", "1234, yes, null, ~, on"),
    ("acme/x", "L3", "true", "off"),
    ("acme/y", "L3", "1.0", ""),
    ("acme/z", "L3", "xpu: v2", "müller, @team/oncall"),
    ("acme/w", "L3", "xpu: v2", "a"),
]


def test_round_trip_edge_cases(db):
    for repository, level, device, oncalls in EDGE_CASE_ENTRIES:
        AllowlistEntry.objects.create(repository=repository, level=level, device=device, oncalls=oncalls)
    AllowlistEntry.objects.filter(repository="acme/w").update(enabled=False)
    before = stored_tuples()
    exported = export_allowlist()

    assert entry_tuples(parse_allowlist(exported)) == before

    AllowlistEntry.objects.all().delete()
    import_allowlist(exported)
    assert stored_tuples() == before
    assert export_allowlist() == exported


def test_export_writes_upstream_layout(db):
    demo = DEMO_ALLOWLIST.read_text(encoding="utf-8")
    import_allowlist(demo)

    without_comments = "".join(line for line in demo.splitlines(keepends=True) if not line.startswith("#"))
    assert export_allowlist() == without_comments


def test_export_quotes_scalars_yaml_would_convert(db):
    AllowlistEntry.objects.create(repository="acme/x", level="L3", device="true", oncalls="1234, yes")

    exported = export_allowlist()

    assert "'true':" in exported
    assert "- '1234'" in exported
    assert "- 'yes'" in exported


def test_export_empty_allowlist_is_empty_text(db):
    assert export_allowlist() == ""
    assert import_allowlist(export_allowlist()).created == []


def test_export_selected_entries_only(db):
    AllowlistEntry.objects.create(repository="acme/x", level="L2")
    AllowlistEntry.objects.create(repository="acme/y", level="L4")

    exported = export_allowlist(AllowlistEntry.objects.filter(repository="acme/y"))

    assert exported == "L4:\n  - acme/y\n"


# The management command


def test_command_import_and_export(db, tmp_path):
    output = StringIO()
    call_command("allowlist", "import", str(DEMO_ALLOWLIST), stdout=output)
    assert "allowlist imported: 8 created, 0 updated, 0 removed" in output.getvalue()

    target = tmp_path / "exported.yml"
    call_command("allowlist", "export", "--output", str(target))
    assert entry_tuples(parse_allowlist(target.read_text(encoding="utf-8"))) == stored_tuples()

    printed = StringIO()
    call_command("allowlist", "export", stdout=printed)
    assert printed.getvalue() == target.read_text(encoding="utf-8")


def test_command_dry_run_lists_changes(db, tmp_path):
    AllowlistEntry.objects.create(repository="acme/old", level="L2")
    source = tmp_path / "allowlist.yml"
    source.write_text("L2:\n  - acme/new\n", encoding="utf-8")
    output = StringIO()

    call_command("allowlist", "import", str(source), "--dry-run", stdout=output)

    assert "create acme/new" in output.getvalue()
    assert "remove acme/old" in output.getvalue()
    assert "would import (dry run): 1 created, 0 updated, 1 removed" in output.getvalue()
    assert list(AllowlistEntry.objects.values_list("repository", flat=True)) == ["acme/old"]


def test_command_import_error_names_file_and_key(db, tmp_path):
    source = tmp_path / "allowlist.yml"
    source.write_text("L2:\n  - acme/x\nL5:\n  - acme/y\n", encoding="utf-8")

    with pytest.raises(CommandError) as error:
        call_command("allowlist", "import", str(source))

    assert str(source) in str(error.value)
    assert "unknown key 'L5'" in str(error.value)


def test_command_import_missing_file(db, tmp_path):
    with pytest.raises(CommandError) as error:
        call_command("allowlist", "import", str(tmp_path / "missing.yml"))
    assert "could not read" in str(error.value)
