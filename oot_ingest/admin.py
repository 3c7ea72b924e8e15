"""Admin for maintainers: allowlist, rate limits, relay tokens, the rejection log and the change history.

Every add, change and removal of an allowlist entry, a rate limit or a relay
token made here is written to PolicyChange with the signed-in user.
"""

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from oot_ingest import policy
from oot_ingest.allowlist import AllowlistError, export_allowlist, import_allowlist, parse_allowlist
from oot_ingest.models import (
    Actor,
    AllowlistEntry,
    PolicyChange,
    RateLimit,
    RejectedRequest,
    RelayToken,
    record_policy_change,
    record_token_event,
    tracked_values,
)

MAX_IMPORT_BYTES = 1024 * 1024


class TrackedChangesMixin:
    """Write each admin save and delete of the model to PolicyChange, field by field."""

    change_kind: str

    def save_model(self, request, obj, form, change):
        before = tracked_values(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        record_policy_change(Actor.from_request(request), self.change_kind, obj.repository, before, tracked_values(obj))

    def delete_model(self, request, obj):
        before = tracked_values(obj)
        super().delete_model(request, obj)
        record_policy_change(Actor.from_request(request), self.change_kind, obj.repository, before, None)

    def delete_queryset(self, request, queryset):
        removed = [(obj.repository, tracked_values(obj)) for obj in queryset]
        super().delete_queryset(request, queryset)
        # A bulk delete sends no post_delete signal here, so clear the cache explicitly.
        policy.clear_policy_cache()
        actor = Actor.from_request(request)
        for repository, before in removed:
            record_policy_change(actor, self.change_kind, repository, before, None)


class AllowlistImportForm(forms.Form):
    yaml_file = forms.FileField(
        required=False, label="YAML file", help_text="An allowlist in the upstream .github/allowlist.yml format"
    )
    yaml_text = forms.CharField(
        required=False,
        label="or YAML text",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "cols": 80, "spellcheck": "false"}),
    )
    keep = forms.BooleanField(required=False, label="Keep entries that the YAML does not list")

    def clean(self):
        cleaned = super().clean()
        upload, text = cleaned.get("yaml_file"), cleaned.get("yaml_text", "")
        if upload and text.strip():
            raise forms.ValidationError("Choose a file or paste text, not both.")
        if upload:
            if upload.size > MAX_IMPORT_BYTES:
                raise forms.ValidationError(f"The file is larger than {MAX_IMPORT_BYTES} bytes.")
            try:
                text = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        elif len(text.encode("utf-8")) > MAX_IMPORT_BYTES:
            raise forms.ValidationError(f"The text is larger than {MAX_IMPORT_BYTES} bytes.")
        try:
            parse_allowlist(text)
        except AllowlistError as error:
            raise forms.ValidationError(f"Invalid allowlist: {error}") from None
        cleaned["text"] = text
        return cleaned


@admin.register(AllowlistEntry)
class AllowlistEntryAdmin(TrackedChangesMixin, admin.ModelAdmin):
    change_kind = PolicyChange.Kind.ALLOWLIST
    list_display = ("repository", "level", "device", "oncalls", "enabled", "provenance", "rate_limit", "updated_at")
    list_filter = ("level", "enabled", "provenance", "device")
    search_fields = ("repository", "oncalls", "device", "notes")
    readonly_fields = ("created_at", "updated_at")
    actions = ["export_selected_as_yaml", "enable_selected", "disable_selected"]
    change_list_template = "admin/oot_ingest/allowlistentry/change_list.html"
    fieldsets = (
        (None, {"fields": ("repository", "level", "device", "oncalls", "enabled")}),
        ("Pages and provenance", {"fields": ("not_reporting_hours", "provenance", "notes")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="rate limit / min")
    def rate_limit(self, obj):
        return policy.rate_limit_for(obj.repository)

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="oot_ingest_allowlist_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="oot_ingest_allowlist_export"),
            *super().get_urls(),
        ]

    def _check_import_permission(self, request: HttpRequest) -> None:
        allowed = (
            self.has_add_permission(request)
            and self.has_change_permission(request)
            and self.has_delete_permission(request)
        )
        if not allowed:
            raise PermissionDenied("Importing needs the add, change and delete permissions on allowlist entries.")

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Preview or apply an uploaded or pasted YAML allowlist."""
        self._check_import_permission(request)
        form = AllowlistImportForm(request.POST or None, request.FILES or None)
        preview = None
        if request.method == "POST" and form.is_valid():
            text, prune = form.cleaned_data["text"], not form.cleaned_data["keep"]
            if "apply" in request.POST:
                result = import_allowlist(text, prune=prune, actor=Actor.from_request(request, "admin import"))
                self.message_user(request, result.summary().capitalize() + ".")
                return redirect("admin:oot_ingest_allowlistentry_changelist")
            preview = import_allowlist(text, prune=prune, dry_run=True)
            # The preview carries the text on, so that "Apply" imports exactly what was previewed.
            form = AllowlistImportForm(initial={"yaml_text": text, "keep": not prune})

        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "preview": preview,
            "title": "Import allowlist",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/oot_ingest/allowlistentry/import.html", context)

    def export_view(self, request: HttpRequest, queryset=None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied("Exporting needs the view permission on allowlist entries.")
        response = HttpResponse(export_allowlist(queryset), content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="allowlist.yml"'
        return response

    @admin.action(description="Export selected entries as YAML", permissions=["view"])
    def export_selected_as_yaml(self, request, queryset):
        return self.export_view(request, queryset)

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        actor = Actor.from_request(request)
        count = 0
        for entry in queryset.exclude(enabled=enabled):
            before = tracked_values(entry)
            entry.enabled = enabled
            entry.save(update_fields=["enabled", "updated_at"])
            record_policy_change(actor, self.change_kind, entry.repository, before, tracked_values(entry))
            count += 1
        self.message_user(
            request, f"{count} entr{'y' if count == 1 else 'ies'} {'enabled' if enabled else 'disabled'}."
        )

    @admin.action(description="Enable selected entries", permissions=["change"])
    def enable_selected(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected entries (their callbacks get 403)", permissions=["change"])
    def disable_selected(self, request, queryset):
        self._set_enabled(request, queryset, False)


@admin.register(RateLimit)
class RateLimitAdmin(TrackedChangesMixin, admin.ModelAdmin):
    change_kind = PolicyChange.Kind.RATE_LIMIT
    list_display = ("repository", "per_minute", "updated_at")
    search_fields = ("repository",)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "subtitle": f"Repositories not listed here get {settings.OOT_DEFAULT_RATE_LIMIT} callbacks a minute "
            "(OOT_DEFAULT_RATE_LIMIT).",
        }
        return super().changelist_view(request, extra_context)


class RelayTokenStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("revoked", "revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(RelayToken)
class RelayTokenAdmin(admin.ModelAdmin):
    """Relay tokens: the plain token is shown once, on the page after "Save", and never stored."""

    list_display = ("name", "active", "created_at", "last_used_at", "revoked_at")
    list_filter = (RelayTokenStatusFilter,)
    search_fields = ("name",)
    readonly_fields = ("created_at", "last_used_at", "revoked_at")
    actions = ["revoke_selected"]
    change_form_template = "admin/oot_ingest/relaytoken/change_form.html"

    def get_fields(self, request, obj=None):
        return ("name",) if obj is None else ("name", "created_at", "last_used_at", "revoked_at")

    def has_delete_permission(self, request, obj=None):
        # Revoked tokens stay listed, so the record of who used what remains.
        return False

    @admin.display(boolean=True)
    def active(self, obj):
        return obj.active

    def get_urls(self):
        return [
            path(
                "<path:object_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="oot_ingest_relaytoken_revoke",
            ),
            *super().get_urls(),
        ]

    def save_model(self, request, obj, form, change):
        if change:
            before = RelayToken.objects.get(pk=obj.pk).name
            super().save_model(request, obj, form, change)
            if before != obj.name:
                record_policy_change(
                    Actor.from_request(request),
                    PolicyChange.Kind.RELAY_TOKEN,
                    obj.name,
                    {"name": before},
                    {"name": obj.name},
                )
            return
        # Kept on the object only until response_add renders it.
        obj._plain_token = obj.set_new_secret()
        super().save_model(request, obj, form, change)
        record_token_event(Actor.from_request(request), obj.name, PolicyChange.Action.ADDED)

    def response_add(self, request, obj, post_url_continue=None):
        plain = getattr(obj, "_plain_token", None)
        if plain is None:
            return super().response_add(request, obj, post_url_continue)
        del obj._plain_token
        context = {
            **self.admin_site.each_context(request),
            "title": f"Relay token {obj.name} created",
            "opts": self.model._meta,
            "token": obj,
            "plain_token": plain,
        }
        response = TemplateResponse(request, "admin/oot_ingest/relaytoken/created.html", context)
        # The page contains the only copy of the token: keep it out of every cache.
        response["Cache-Control"] = "no-store"
        return response

    def _revoke(self, request, tokens) -> int:
        actor = Actor.from_request(request)
        count = 0
        for token in tokens:
            if token.active:
                token.revoke()
                record_token_event(actor, token.name, PolicyChange.Action.REVOKED)
                count += 1
        policy.clear_policy_cache()
        return count

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_selected(self, request, queryset):
        count = self._revoke(request, queryset)
        self.message_user(request, f"{count} token(s) revoked.")

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Ask for confirmation on GET and revoke the token on POST."""
        token = get_object_or_404(RelayToken, pk=object_id)
        if not self.has_change_permission(request, token):
            raise PermissionDenied("Revoking needs the change permission on relay tokens.")
        if request.method == "POST":
            self._revoke(request, [token])
            self.message_user(
                request, f"Token {token.name} revoked at {timezone.localtime(token.revoked_at):%Y-%m-%d %H:%M}."
            )
            return redirect(reverse("admin:oot_ingest_relaytoken_change", args=[token.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Revoke relay token {token.name}?",
            "opts": self.model._meta,
            "token": token,
        }
        return TemplateResponse(request, "admin/oot_ingest/relaytoken/revoke.html", context)


@admin.register(RejectedRequest)
class RejectedRequestAdmin(admin.ModelAdmin):
    list_display = ("created_at", "repository", "delivery_id", "status_code", "reason")
    list_filter = ("status_code", "created_at")
    search_fields = ("repository", "delivery_id", "reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "subtitle": f"Rejected callbacks are kept {settings.OOT_REJECTION_RETENTION_DAYS} days; "
            "manage.py prune_rejections deletes older ones.",
        }
        return super().changelist_view(request, extra_context)


@admin.register(PolicyChange)
class PolicyChangeAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor", "source", "kind", "target", "action", "field", "old_value", "new_value")
    list_filter = ("kind", "action", "field", "source")
    search_fields = ("target", "actor", "old_value", "new_value")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
