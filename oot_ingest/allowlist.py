"""The allowlist in the upstream `.github/allowlist.yml` format.

Keys are `L1`..`L4`. L1, L2 and L4 are lists whose items are `owner/repo`,
`owner/repo: "oncall1, oncall2"` or `owner/repo: [oncall1, oncall2]`. L3 is a
mapping device -> repository -> oncall list. A repository appears once in the
whole file, compared case-insensitively. An empty file is an empty allowlist.

The format has no place for `enabled`, `notes`, `provenance` or the
not-reporting hours, so an import leaves those as they are on existing
entries and gives new entries the model defaults.
"""

from dataclasses import dataclass, field

import yaml
from django.db import transaction

from oot_ingest.models import (
    DEVICE_MAX_CHARS,
    ONCALL_PATTERN,
    ONCALLS_MAX_CHARS,
    REPOSITORY_PATTERN,
    Actor,
    AllowlistEntry,
    PolicyChange,
    record_policy_change,
    tracked_values,
)
from oot_ingest.vocabulary import LEVELS

# Fields that the YAML format carries. An import compares and sets only these.
YAML_FIELDS = ("repository", "level", "device", "oncalls")


class AllowlistError(ValueError):
    """The YAML text is not a valid allowlist. The message names the key or line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key repeated in one mapping.

    PyYAML silently keeps the last value of a repeated key, which would hide a
    repository listed twice under the same device.
    """

    def construct_mapping(self, node, deep=False):
        # Merge keys (<<) are expanded first, so a merged key is compared too.
        self.flatten_mapping(node)
        first_lines: dict = {}
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                earlier = first_lines.get(key)
            except TypeError:
                raise AllowlistError(f"line {line}: a mapping key must be a plain value, got {key!r}") from None
            if earlier is not None:
                raise AllowlistError(f"{key} is listed twice: at line {earlier} and at line {line}")
            first_lines[key] = line
        return super().construct_mapping(node, deep=deep)


class _OncallText(str):
    """An `owner/repo: "a, b"` value, written in double quotes as upstream writes it."""


class _UpstreamStyleDumper(yaml.SafeDumper):
    """A SafeDumper that indents list items under their key, as the upstream file does."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


_UpstreamStyleDumper.add_representer(
    _OncallText, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')
)


@dataclass
class ParsedEntry:
    """One repository read from the YAML text, with the place it was read from (for error messages)."""

    repository: str
    level: str
    device: str = ""
    oncalls: list[str] = field(default_factory=list)
    place: str = ""

    def values(self) -> dict[str, str]:
        return {"repository": self.repository, "level": self.level, "device": self.device, "oncalls": self.oncall_text}

    @property
    def oncall_text(self) -> str:
        return ", ".join(self.oncalls)


def _oncalls(value, place: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        handles = [handle.strip() for handle in value.split(",") if handle.strip()]
    elif isinstance(value, list) and all(isinstance(handle, str) for handle in value):
        handles = [handle.strip() for handle in value if handle.strip()]
    else:
        raise AllowlistError(f'{place}: oncalls must be a string "a, b" or a list of strings, got {value!r}')

    for handle in handles:
        if not ONCALL_PATTERN.match(handle):
            raise AllowlistError(f"{place}: oncall {handle!r} is not a valid handle, which has no spaces or commas")
    if len(", ".join(handles)) > ONCALLS_MAX_CHARS:
        raise AllowlistError(f"{place}: the oncall list is longer than {ONCALLS_MAX_CHARS} characters")
    return handles


def _repository(value, place: str) -> str:
    if not isinstance(value, str) or not REPOSITORY_PATTERN.match(value.strip()):
        raise AllowlistError(f"{place}: {value!r} is not a GitHub owner/repo name")
    return value.strip()


def parse_allowlist(text: str) -> list[ParsedEntry]:
    """Parse the YAML text into entries.

    Raises AllowlistError naming the key of a shape error, or both places of a
    repository listed twice.
    """
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise AllowlistError(f"the allowlist is not valid YAML: {error}") from None
    if document is None:
        return []
    if not isinstance(document, dict):
        raise AllowlistError(f"the allowlist must be a mapping with keys L1 to L4, got a {type(document).__name__}")

    entries: list[ParsedEntry] = []
    for level, section in document.items():
        if level not in LEVELS:
            raise AllowlistError(f"unknown key {level!r}: use L1, L2, L3 or L4")
        if section is None:
            continue
        if level == "L3":
            entries.extend(_parse_devices(section))
        else:
            entries.extend(_parse_list(level, section))

    seen: dict[str, ParsedEntry] = {}
    for entry in entries:
        first = seen.setdefault(entry.repository.lower(), entry)
        if first is entry:
            continue
        if first.repository == entry.repository:
            raise AllowlistError(f"{entry.repository} is listed twice: at {first.place} and at {entry.place}")
        raise AllowlistError(
            f"{entry.repository} is listed twice (names ignore case): at {first.place} as {first.repository} "
            f"and at {entry.place}"
        )
    return entries


def _parse_list(level: str, section) -> list[ParsedEntry]:
    if not isinstance(section, list):
        raise AllowlistError(f"{level}: must be a list of repositories, got a {type(section).__name__}")
    entries = []
    for index, item in enumerate(section):
        place = f"{level}[{index}]"
        if isinstance(item, dict):
            if len(item) != 1:
                raise AllowlistError(f"{place}: each item maps one repository to its oncalls, got {len(item)} keys")
            ((name, oncalls),) = item.items()
            entries.append(ParsedEntry(_repository(name, place), level, "", _oncalls(oncalls, place), place))
        else:
            entries.append(ParsedEntry(_repository(item, place), level, "", [], place))
    return entries


def _parse_devices(section) -> list[ParsedEntry]:
    if not isinstance(section, dict):
        raise AllowlistError(f"L3: must map device names to repositories, got a {type(section).__name__}")
    entries = []
    for device, repositories in section.items():
        if not isinstance(device, str) or not device.strip():
            raise AllowlistError(f"L3: device name {device!r} must be a non-empty string")
        if len(device.strip()) > DEVICE_MAX_CHARS:
            raise AllowlistError(f"L3.{device}: the device name is longer than {DEVICE_MAX_CHARS} characters")
        if repositories is None:
            continue
        if not isinstance(repositories, dict):
            kind = type(repositories).__name__
            raise AllowlistError(f"L3.{device}: must map repositories to oncall lists, got a {kind}")
        for name, oncalls in repositories.items():
            place = f"L3.{device}.{name}"
            entries.append(ParsedEntry(_repository(name, place), "L3", device.strip(), _oncalls(oncalls, place), place))
    return entries


@dataclass
class ImportResult:
    """Repositories an import creates, updates and removes, each list in file or name order."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    applied: bool = False

    def summary(self) -> str:
        verb = "imported" if self.applied else "would import (dry run)"
        return (
            f"allowlist {verb}: {len(self.created)} created, {len(self.updated)} updated, {len(self.removed)} removed"
        )


COMMAND_ACTOR = Actor(None, "manage.py allowlist", "command")


@transaction.atomic
def import_allowlist(
    text: str, *, prune: bool = True, dry_run: bool = False, actor: Actor = COMMAND_ACTOR
) -> ImportResult:
    """Make the allowlist match the YAML text and record each change with `actor`.

    With `prune`, entries that the file does not list are deleted. With
    `dry_run`, nothing is written and the result lists what would change.
    Raises AllowlistError, before any write, when the text is invalid.
    """
    parsed = parse_allowlist(text)
    existing = {entry.repository.lower(): entry for entry in AllowlistEntry.objects.select_for_update()}
    result = ImportResult(applied=not dry_run)

    for item in parsed:
        entry = existing.pop(item.repository.lower(), None)
        if entry is None:
            result.created.append(item.repository)
            if not dry_run:
                entry = AllowlistEntry.objects.create(**item.values())
                record_policy_change(actor, PolicyChange.Kind.ALLOWLIST, entry.repository, None, tracked_values(entry))
            continue

        if all(getattr(entry, name) == value for name, value in item.values().items()):
            continue
        result.updated.append(item.repository)
        if not dry_run:
            before = tracked_values(entry)
            for name, value in item.values().items():
                setattr(entry, name, value)
            entry.save()
            record_policy_change(actor, PolicyChange.Kind.ALLOWLIST, entry.repository, before, tracked_values(entry))

    if prune:
        for entry in sorted(existing.values(), key=lambda entry: entry.repository.lower()):
            result.removed.append(entry.repository)
            if not dry_run:
                before = tracked_values(entry)
                entry.delete()
                record_policy_change(actor, PolicyChange.Kind.ALLOWLIST, entry.repository, before, None)
    return result


def export_allowlist(entries=None) -> str:
    """Write allowlist entries (all of them by default) in the upstream YAML format.

    Disabled entries are written too, because the format cannot mark them.
    An empty allowlist is written as the empty string.
    """
    if entries is None:
        entries = AllowlistEntry.objects.all()
    ordered = sorted(entries, key=lambda entry: (entry.level, entry.device.lower(), entry.repository.lower()))

    document: dict = {}
    for entry in ordered:
        if entry.level == "L3":
            devices = document.setdefault("L3", {})
            devices.setdefault(entry.device, {})[entry.repository] = entry.oncall_list
        elif entry.oncall_list:
            document.setdefault(entry.level, []).append({entry.repository: _OncallText(", ".join(entry.oncall_list))})
        else:
            document.setdefault(entry.level, []).append(entry.repository)
    if not document:
        return ""
    return yaml.dump(
        document, Dumper=_UpstreamStyleDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


def allowlist_document(entries) -> dict[str, list[dict]]:
    """Group enabled entries by level as served to the relay: repository, oncalls, and device for L3."""
    document: dict[str, list[dict]] = {level: [] for level in LEVELS}
    for entry in sorted(entries, key=lambda entry: entry.repository.lower()):
        if not entry.enabled:
            continue
        item = {"repository": entry.repository, "oncalls": entry.oncall_list}
        if entry.level == "L3":
            item["device"] = entry.device
        document[entry.level].append(item)
    return document
