"""The allowlist in the upstream `.github/allowlist.yml` format.

Keys are `L1`..`L4`. L1, L2 and L4 are lists whose items are `owner/repo`,
`owner/repo: "oncall1, oncall2"` or `owner/repo: [oncall1, oncall2]`. L3 is a
mapping device -> repository -> oncall list. A repository appears once in the
whole file, compared case-insensitively.
"""

from dataclasses import dataclass, field

import yaml
from django.db import transaction

from oot_ingest.models import AllowlistEntry
from oot_ingest.vocabulary import LEVELS


class AllowlistError(ValueError):
    pass


@dataclass
class ParsedEntry:
    repository: str
    level: str
    device: str = ""
    oncalls: list[str] = field(default_factory=list)
    place: str = ""


def _oncalls(value, place: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [handle.strip() for handle in value.split(",") if handle.strip()]
    if isinstance(value, list) and all(isinstance(handle, str) for handle in value):
        return [handle.strip() for handle in value if handle.strip()]
    raise AllowlistError(f"{place}: oncalls must be a string or a list of strings")


def _repository(value, place: str) -> str:
    if not isinstance(value, str) or value.count("/") != 1 or not all(value.split("/")):
        raise AllowlistError(f"{place}: {value!r} is not an owner/repo name")
    return value.strip()


def parse_allowlist(text: str) -> list[ParsedEntry]:
    """Parse the YAML text; raise AllowlistError naming the key or both places of a duplicate."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise AllowlistError(f"the allowlist is not valid YAML: {error}") from None
    if document is None:
        return []
    if not isinstance(document, dict):
        raise AllowlistError("the allowlist must be a mapping with keys L1 to L4")

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

    seen: dict[str, str] = {}
    for entry in entries:
        lowered = entry.repository.lower()
        if lowered in seen:
            raise AllowlistError(f"{entry.repository} is listed twice: at {seen[lowered]} and at {entry.place}")
        seen[lowered] = entry.place
    return entries


def _parse_list(level: str, section) -> list[ParsedEntry]:
    if not isinstance(section, list):
        raise AllowlistError(f"{level}: must be a list of repositories")
    entries = []
    for index, item in enumerate(section):
        place = f"{level}[{index}]"
        if isinstance(item, dict):
            if len(item) != 1:
                raise AllowlistError(f"{place}: each item maps one repository to its oncalls")
            ((name, oncalls),) = item.items()
            entries.append(ParsedEntry(_repository(name, place), level, "", _oncalls(oncalls, place), place))
        else:
            entries.append(ParsedEntry(_repository(item, place), level, "", [], place))
    return entries


def _parse_devices(section) -> list[ParsedEntry]:
    if not isinstance(section, dict):
        raise AllowlistError("L3: must map device names to repositories")
    entries = []
    for device, repositories in section.items():
        if not isinstance(device, str) or not device:
            raise AllowlistError(f"L3: device name {device!r} must be a non-empty string")
        if not isinstance(repositories, dict):
            raise AllowlistError(f"L3.{device}: must map repositories to oncall lists")
        for name, oncalls in repositories.items():
            place = f"L3.{device}.{name}"
            entries.append(ParsedEntry(_repository(name, place), "L3", device, _oncalls(oncalls, place), place))
    return entries


@transaction.atomic
def import_allowlist(text: str, *, prune: bool = True) -> tuple[int, int, int]:
    """Make the allowlist match the YAML text; return (created, updated, removed) counts.

    Existing entries keep their settings that the YAML format has no place
    for (enabled, notes, provenance, not-reporting hours).
    """
    parsed = parse_allowlist(text)
    existing = {entry.repository.lower(): entry for entry in AllowlistEntry.objects.select_for_update()}
    created = updated = 0
    for item in parsed:
        oncalls = ", ".join(item.oncalls)
        entry = existing.pop(item.repository.lower(), None)
        if entry is None:
            AllowlistEntry.objects.create(
                repository=item.repository, level=item.level, device=item.device, oncalls=oncalls
            )
            created += 1
            continue
        if (entry.repository, entry.level, entry.device, entry.oncalls) != (
            item.repository,
            item.level,
            item.device,
            oncalls,
        ):
            entry.repository, entry.level, entry.device, entry.oncalls = (
                item.repository,
                item.level,
                item.device,
                oncalls,
            )
            entry.save()
            updated += 1
    removed = 0
    if prune:
        for entry in existing.values():
            entry.delete()
            removed += 1
    return created, updated, removed


def export_allowlist() -> str:
    """Write the allowlist in the upstream YAML format."""
    document: dict = {}
    for level in LEVELS:
        entries = AllowlistEntry.objects.filter(level=level).order_by("device", "repository")
        if not entries:
            continue
        if level == "L3":
            devices: dict[str, dict[str, list[str]]] = {}
            for entry in entries:
                devices.setdefault(entry.device, {})[entry.repository] = entry.oncall_list
            document[level] = devices
        else:
            document[level] = [
                {entry.repository: ", ".join(entry.oncall_list)} if entry.oncall_list else entry.repository
                for entry in entries
            ]
    if not document:
        return ""
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)


def allowlist_document() -> dict:
    """Return the enabled allowlist grouped by level, as served to the relay."""
    document: dict[str, list[dict]] = {level: [] for level in LEVELS}
    for entry in AllowlistEntry.objects.filter(enabled=True).order_by("repository"):
        item = {"repository": entry.repository, "oncalls": entry.oncall_list}
        if entry.level == "L3":
            item["device"] = entry.device
        document[entry.level].append(item)
    return document
