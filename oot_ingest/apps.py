from django.apps import AppConfig


class OotIngestConfig(AppConfig):
    name = "oot_ingest"
    verbose_name = "OOT ingestion"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the system checks and the receivers that clear the policy cache.
        from oot_ingest import checks, policy  # noqa: F401
