"""Admin for maintainers: allowlist, rate limits, relay tokens and the rejection log."""

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone

from oot_ingest.allowlist import AllowlistError, export_allowlist, import_allowlist
from oot_ingest.models import AllowlistEntry, RateLimit, RejectedRequest, RelayToken


class AllowlistImportForm(forms.Form):
    yaml_file = forms.FileField(label="allowlist.yml", help_text="The upstream .github/allowlist.yml format")
    keep = forms.BooleanField(required=False, label="Keep entries the file does not list")


@admin.register(AllowlistEntry)
class AllowlistEntryAdmin(admin.ModelAdmin):
    list_display = ("repository", "level", "device", "oncalls", "enabled", "provenance", "updated_at")
    list_filter = ("level", "enabled", "provenance", "device")
    search_fields = ("repository", "oncalls", "device", "notes")
    actions = ["export_selected_as_yaml"]
    change_list_template = "admin/oot_ingest/allowlistentry/change_list.html"

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="oot_ingest_allowlist_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="oot_ingest_allowlist_export"),
            *super().get_urls(),
        ]

    def import_view(self, request):
        if not self.has_change_permission(request):
            return redirect("admin:index")
        form = AllowlistImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                text = form.cleaned_data["yaml_file"].read().decode("utf-8")
                created, updated, removed = import_allowlist(text, prune=not form.cleaned_data["keep"])
            except (AllowlistError, UnicodeDecodeError) as error:
                form.add_error("yaml_file", str(error))
            else:
                self.message_user(
                    request, f"Allowlist imported: {created} created, {updated} updated, {removed} removed."
                )
                return redirect("admin:oot_ingest_allowlistentry_changelist")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Import allowlist",
            "opts": self.model._meta,
        }
        return render(request, "admin/oot_ingest/allowlistentry/import.html", context)

    def export_view(self, request):
        response = HttpResponse(export_allowlist(), content_type="application/x-yaml")
        response["Content-Disposition"] = 'attachment; filename="allowlist.yml"'
        return response

    @admin.action(description="Export the whole allowlist as YAML")
    def export_selected_as_yaml(self, request, queryset):
        return self.export_view(request)


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    list_display = ("repository", "per_minute", "updated_at")
    search_fields = ("repository",)


class RelayTokenForm(forms.ModelForm):
    class Meta:
        model = RelayToken
        fields = ("name",)


@admin.register(RelayToken)
class RelayTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at", "last_used_at", "revoked_at", "active")
    list_filter = ("revoked_at",)
    search_fields = ("name",)
    readonly_fields = ("created_at", "last_used_at", "revoked_at")
    actions = ["revoke_tokens"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RelayTokenForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("name",) if obj is None else ("name", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, plain = RelayToken.issue(obj.name)
        obj.pk, obj.digest, obj.created_at = token.pk, token.digest, token.created_at
        messages.warning(
            request,
            f"Token for {obj.name}: {plain} — copy it now. Only its SHA-256 digest is stored, "
            "so it cannot be shown again.",
        )

    @admin.display(boolean=True)
    def active(self, obj):
        return obj.active

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        from oot_ingest.policy import clear_policy_cache

        clear_policy_cache()
        self.message_user(request, f"{count} token(s) revoked.")


@admin.register(RejectedRequest)
class RejectedRequestAdmin(admin.ModelAdmin):
    list_display = ("created_at", "repository", "delivery_id", "status_code", "reason")
    list_filter = ("status_code",)
    search_fields = ("repository", "delivery_id", "reason")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
